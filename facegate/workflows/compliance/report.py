"""``facegate compliance report``: what a deployment stores, under which consent, for how long,
how it is protected, where face images travel, and how accurate the pack is.

Every figure is read from the database in one consistent snapshot (or from the pack's
calibration table), nothing is estimated. The HTML is the technical annex of a personal
information protection impact assessment (个人信息保护影响评估); the assessment's judgement,
the filing itself and the signage stay the deployer's (docs/compliance.md).
"""
from __future__ import annotations

import html as _html
import json
import time
from datetime import timezone
from importlib import resources

import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.storage import audit, notices, retention
from facegate.storage.aad import ENCRYPTED
from facegate.storage.erasure import FACE_DATA, stored_subjects
from facegate.storage.schema import audit_log, consent_records, subjects
from facegate.vocab import ALTERNATIVE_METHODS, PURPOSES

# Routes that receive face images over the network (tests/test_compliance.py checks this list
# against the service's OpenAPI: a new route with an image field fails it until listed here).
DATA_FLOWS: tuple[dict, ...] = (
    {"route": "POST /v1/subjects/{subject_id}/faces", "what": "enrolment photo", "kept": "template (encrypted); its face crop as the reference photo (encrypted, FACEGATE_KEEP_REFERENCE); the photo only with FACEGATE_STORE_IMAGES"},
    {"route": "POST /v1/verify", "what": "a photo to verify", "kept": "nothing (decision and audit row only)"},
    {"route": "POST /v1/identify", "what": "a photo to search", "kept": "nothing"},
    {"route": "POST /v1/compare", "what": "a photo and an ID-card chip photo", "kept": "nothing"},
    {"route": "POST /v1/kiosk/authenticate", "what": "a still and/or the chip photo", "kept": "nothing; a search sent to a person keeps the still as decision evidence (retention: decision_evidence)"},
    {"route": "POST /v1/certifications", "what": "a still of the capture", "kept": "the capture's embedding (retention: certification_captures); a decision sent to a person keeps the still and the best frames as decision evidence (retention: decision_evidence)"},
    {"route": "POST /v1/liveness/sessions/{session_id}/frames", "what": "camera frames of a capture (after consent)", "kept": "frames until judged, then the best 3 until the session is consumed; the live face's embedding until the session is purged"},
    {"route": "POST /v1/liveness/sessions/{session_id}/video", "what": "a short video of a capture (after consent)", "kept": "as frames"},
)


def _calibration(settings) -> dict:
    """The pack's calibration table (the pack folder's, else the shipped one)."""
    from facegate.matching.operating_points import OperatingPoints
    from facegate.models.pack import load_pack
    table = None
    try:
        pts = OperatingPoints.for_pack(load_pack(settings.model_dir, settings.pack), None,
                                       settings.population or None)
        if pts is not None:
            table = {"source": pts.source, "points": pts.points}
    except Exception:       # no pack installed here: the table shipped for the default pack
        pass
    if table is None:
        name = f"{settings.pack}{'-' + settings.population if settings.population else ''}.json"
        f = resources.files("facegate") / "calibration" / name
        if f.is_file():
            table = {"source": f"facegate/calibration/{name}", "points": json.loads(f.read_text())["points"]}
    if table is None:
        return {"source": None, "points": []}
    return {"source": table["source"],
            "points": [{"fmr": p["fmr"], "threshold": p["threshold"], "measured_fmr": p.get("measured_fmr"),
                        "fnmr": p.get("fnmr"), "reliable": p.get("reliable"), "decided_by": p.get("decided_by")}
                       for p in table["points"]]}


def build(store) -> dict:
    s = store.settings
    now = utcnow()
    with store.snapshot() as conn:
        held = stored_subjects().subquery()
        stored = int(conn.execute(sa.select(sa.func.count()).select_from(held)).scalar_one())
        per_kind = {e.name: int(conn.execute(sa.select(sa.func.count()).select_from(
            sa.select(e.subjects().subquery().c.subject_pk).distinct().subquery())).scalar_one()) for e in FACE_DATA}
        active = (sa.select(consent_records.c.subject_id, consent_records.c.purpose)
                  .where(consent_records.c.decision == "given", consent_records.c.withdrawn_at.is_(None),
                         consent_records.c.subject_id.is_not(None)).distinct().subquery())
        stored_ids = sa.select(subjects.c.subject_id).where(subjects.c.pk.in_(sa.select(held.c.subject_pk))).subquery()
        by_purpose = {p: 0 for p in PURPOSES}
        for p, n in conn.execute(sa.select(active.c.purpose, sa.func.count()).where(
                active.c.subject_id.in_(sa.select(stored_ids.c.subject_id))).group_by(active.c.purpose)).all():
            by_purpose[p] = int(n)
        with_any = sa.select(active.c.subject_id)
        without = int(conn.execute(sa.select(sa.func.count()).select_from(stored_ids).where(
            stored_ids.c.subject_id.not_in(with_any))).scalar_one())
        without_default = int(conn.execute(sa.select(sa.func.count()).select_from(stored_ids).where(
            stored_ids.c.subject_id.not_in(sa.select(active.c.subject_id).where(active.c.purpose == s.default_purpose)))
        ).scalar_one())
        subjects_total = int(conn.execute(sa.select(sa.func.count()).select_from(subjects)).scalar_one())
        minors = int(conn.execute(sa.select(sa.func.count()).select_from(subjects).where(subjects.c.minor)).scalar_one())
        guardian = sa.select(consent_records.c.subject_id).where(consent_records.c.guardian_name.is_not(None),
                                                                  consent_records.c.withdrawn_at.is_(None),
                                                                  consent_records.c.decision == "given")
        minors_without = int(conn.execute(sa.select(sa.func.count()).select_from(subjects).where(
            subjects.c.minor, subjects.c.subject_id.not_in(guardian))).scalar_one())
        withdrawn = int(conn.execute(sa.select(sa.func.count()).select_from(subjects).where(
            subjects.c.withdrawn_at.is_not(None))).scalar_one())
        declined = int(conn.execute(sa.select(sa.func.count(sa.distinct(consent_records.c.subject_id))).where(
            consent_records.c.decision == "declined")).scalar_one())
        backlog = retention.backlog(conn, s, now)
        usage: dict[str, int] = {}
        for entry in ENCRYPTED:
            t = entry.table
            for k, n in conn.execute(sa.select(t.c.key_id, sa.func.count()).where(t.c.key_id.is_not(None))
                                     .group_by(t.c.key_id)).all():
                usage[k] = usage.get(k, 0) + int(n)
        views = {a: int(n) for a, n in conn.execute(sa.select(audit_log.c.actor, sa.func.count()).where(
            audit_log.c.operation == audit.IMAGE_VIEW).group_by(audit_log.c.actor)).all()}
        errors = {o: int(n) for o, n in conn.execute(sa.select(audit_log.c.outcome, sa.func.count()).where(
            audit_log.c.operation.in_(("verify", "api.verify", "certify", "kiosk.authenticate")))
            .group_by(audit_log.c.outcome)).all()}
        head = retention.archive_head(conn)
        notice_version = notices.current_version(conn)
    keys = store.keys
    key_age_days = None
    if keys.path is not None and keys.path.exists():
        key_age_days = round((time.time() - keys.path.stat().st_mtime) / 86400, 1)
    return {
        "generated_at": iso(now), "backend": store.backend, "store_id": store.store_id,
        "filing": {"stored_individuals": stored, "threshold": s.filing_threshold,
                   "over_threshold": stored >= s.filing_threshold, "warn_at": s.stored_individuals_warn,
                   "by_kind": per_kind, "by_purpose": by_purpose,
                   "note": "individuals whose face information is stored now; a person counted once whatever they hold"},
        "consent": {"required": s.consent_required, "legal_basis": s.consent_legal_basis or None,
                    "notice_version": notice_version, "default_purpose": s.default_purpose,
                    "stored_without_any_consent": without,
                    "stored_without_consent_for_default_purpose": without_default,
                    "declined": declined, "withdrawn": withdrawn},
        "subjects": {"total": subjects_total, "minors": minors, "minors_without_guardian_consent": minors_without},
        "retention": {"policy": retention.policy(s), "backlog": backlog, "audit_archive_head": head},
        "encryption": {"algorithm": "AES-256-GCM, associated data binds each ciphertext to its row",
                       "current_key_id": keys.current_id, "key_source": keys.source,
                       "key_file_age_days": key_age_days, "rows_per_key": usage,
                       "encrypted_tables": [e.table.name for e in ENCRYPTED]},
        "image_views_by_operator": views,
        "data_flows": list(DATA_FLOWS),
        "decisions_by_outcome": errors,
        "alternatives": list(ALTERNATIVE_METHODS),
        "accuracy": _calibration(s),
        "controls": [
            "consent of the current notice version before any capture (FACEGATE_CONSENT_REQUIRED)",
            "enrolment only with a consent record or the named legal basis (FACEGATE_CONSENT_LEGAL_BASIS)",
            "guardian consent for subjects under 14",
            "withdrawal erases face information at once; decisions then answer consent_withdrawn",
            "ways without a face recorded as certification outcomes",
            "retention purge per data class, one replica at a time, audited",
            "templates and captures encrypted at rest; hash-chained audit trail",
        ],
    }


def text(r: dict) -> str:
    f, c, sj = r["filing"], r["consent"], r["subjects"]
    lines = [f"facegate compliance report, {r['generated_at']} ({r['backend']})",
             f"stored individuals: {f['stored_individuals']} of the filing threshold {f['threshold']}"
             + ("  ** OVER: file (备案) **" if f["over_threshold"] else ""),
             "  by purpose: " + ", ".join(f"{k} {v}" for k, v in f["by_purpose"].items()),
             f"consent: notice v{c['notice_version']}; stored without any consent record {c['stored_without_any_consent']}"
             f"; legal basis: {c['legal_basis'] or '-'}; declined {c['declined']}; withdrawn {c['withdrawn']}",
             f"subjects {sj['total']}; minors {sj['minors']} (without guardian consent {sj['minors_without_guardian_consent']})",
             "retention backlog: " + ", ".join(f"{k} {'-' if v is None else v}" for k, v in r["retention"]["backlog"].items()),
             f"data key {r['encryption']['current_key_id']} ({r['encryption']['key_source']}, file age "
             f"{r['encryption']['key_file_age_days']} days)"]
    return "\n".join(lines) + "\n"


def _table(rows: list[list], head: list[str]) -> str:
    e = _html.escape
    out = ["<table><thead><tr>", *(f"<th>{e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{e('—' if v is None else str(v))}</td>" for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def html(r: dict) -> str:
    """A self-contained page (no script, no external resource): the PIA's technical annex."""
    e = _html.escape
    f, c, sj, enc = r["filing"], r["consent"], r["subjects"], r["encryption"]
    css = ("body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#111;max-width:70em}"
           "h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}"
           "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:left}"
           "th{background:#eee}.big{font-size:2em;font-weight:700}.over{color:#b00}.ok{color:#070}")
    share = f["stored_individuals"] / max(1, f["threshold"])
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'><title>facegate compliance report</title>",
        f"<style>{css}</style></head><body>",
        "<h1>人脸识别技术应用合规报告 · facegate compliance report</h1>",
        f"<p>Generated {e(r['generated_at'])} · store {e(r['store_id'])} ({e(r['backend'])}). Technical annex of the "
        "personal information protection impact assessment (个人信息保护影响评估); the assessment's judgement is the deployer's.</p>",
        "<h2>1. Stored individuals and the filing threshold (备案, 10 万人)</h2>",
        f"<p><span class='big {'over' if f['over_threshold'] else 'ok'}' id='stored'>{f['stored_individuals']:,}</span> "
        f"individuals of the threshold {f['threshold']:,} ({share:.2%})</p>",
        _table([[k, v] for k, v in f["by_purpose"].items()], ["purpose (active consent)", "individuals"]),
        _table([[k, v] for k, v in f["by_kind"].items()], ["what is stored", "individuals"]),
        "<h2>2. Notice and consent (告知, 单独同意)</h2>",
        _table([["consent required before capture and enrolment", c["required"]],
                ["legal basis instead of consent (enrolment)", c["legal_basis"]],
                ["current notice version", c["notice_version"]],
                ["stored individuals without any consent record", c["stored_without_any_consent"]],
                [f"stored without consent for {c['default_purpose']}", c["stored_without_consent_for_default_purpose"]],
                ["declined (offered the way without a face)", c["declined"]],
                ["withdrawn (face information erased)", c["withdrawn"]],
                ["minors under 14", sj["minors"]],
                ["minors without a guardian's consent", sj["minors_without_guardian_consent"]]], ["", ""]),
        "<h2>3. Where it rests, how it is protected</h2>",
        _table([["algorithm", enc["algorithm"]], ["current data key", enc["current_key_id"]],
                ["key source", enc["key_source"]], ["key file age (days)", enc["key_file_age_days"]],
                ["encrypted tables", ", ".join(enc["encrypted_tables"])]], ["", ""]),
        _table([[k, v] for k, v in enc["rows_per_key"].items()], ["data key", "encrypted rows"]),
        "<h2>4. How long it is kept (最短必要)</h2>",
        _table([[p["data_class"], p["what"], f"{p['keep']:g} {p['unit']}", p["setting"],
                 r["retention"]["backlog"][p["data_class"]]] for p in r["retention"]["policy"]],
               ["data class", "what", "kept", "setting", "due now"]),
        "<h2>5. Where face images travel (data flows)</h2>",
        _table([[d["route"], d["what"], d["kept"]] for d in r["data_flows"]], ["route", "receives", "kept"]),
        "<h2>6. Who viewed stored images</h2>",
        _table([[k, v] for k, v in r["image_views_by_operator"].items()] or [["(none)", 0]], ["operator", "views"]),
        "<h2>7. Measured error rates of the pack in use</h2>",
        f"<p>Calibration table: {e(str(r['accuracy']['source']))}</p>",
        _table([[p["fmr"], p["threshold"], p["measured_fmr"], p["fnmr"], p["decided_by"]] for p in r["accuracy"]["points"]],
               ["target FMR", "threshold", "measured FMR", "FNMR", "decided by"]),
        "<h2>8. Controls in force</h2><ul>", *(f"<li>{e(x)}</li>" for x in r["controls"]), "</ul>",
        "</body></html>"]
    return "".join(parts)
