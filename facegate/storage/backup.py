"""Backups: subjects and their still-encrypted templates (with each template's family, its
second-opinion templates) to a gzip JSON-lines file, and back.

The data key is NOT in the file (only its id): keep the key file separately, a restore needs
it. Line 1 is a header; then one line per subject with its templates.
"""
from __future__ import annotations

import base64
import gzip
import json
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.errors import FacegateError
from facegate.storage import audit
from facegate.storage.changefeed import log_changes
from facegate.storage.aad import embedding_aad, family_aad
from facegate.storage.db import head_revision, write_transaction
from facegate.storage.private import open_private
from facegate.storage.schema import consent_records, notices, subjects, template_family, templates
from facegate.storage.store import Store, json_in, json_out, subject_dict

EXPORT_FORMAT = "facegate-export"
EXPORT_VERSION = 3          # 2: templates carry their "family"; 3: the notices (header), each subject's consent
READABLE_VERSIONS = (1, 2, 3)  # records, minor and withdrawn_at; older files still restore


def _template_key_ids(conn: sa.Connection) -> list[str]:
    return sorted(set(conn.execute(sa.select(templates.c.key_id).distinct()).scalars())
                  | set(conn.execute(sa.select(template_family.c.key_id).distinct()).scalars()))


def export(store: Store, path: str | Path, actor: str = "cli") -> dict:
    """Write subjects and their still-encrypted templates to a gzip JSON-lines file.

    The data key is NOT in the file (only its id): keep the key file separately, a restore
    needs it. Line 1 is a header; then one line per subject with its templates."""
    path = Path(path)
    n_subj = n_tmpl = n_family = 0
    with store.snapshot() as conn, open_private(path) as raw, gzip.open(raw, "wt", encoding="utf-8") as fh:
        header = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "created_at": iso(utcnow()),
                  "store_id": store.store_id, "schema": head_revision(), "key_ids": sorted(_template_key_ids(conn)),
                  "packs": store.pack_counts(),
                  "notices": [{k: (iso(v) if k == "published_at" else v) for k, v in r.items()}
                              for r in conn.execute(sa.select(notices).order_by(notices.c.version)).mappings()],
                  "note": "templates are AES-GCM encrypted; restore needs the data key file (not included)"}
        fh.write(json.dumps(header) + "\n")
        last = 0
        while True:
            subs = conn.execute(sa.select(subjects).where(subjects.c.pk > last).order_by(subjects.c.pk)
                                .limit(1000)).all()
            if not subs:
                break
            last = subs[-1].pk
            tm = conn.execute(sa.select(templates).where(templates.c.subject_pk.in_([s.pk for s in subs]))
                              .order_by(templates.c.id)).mappings().all()
            family: dict[int, list] = {}
            for f in conn.execute(sa.select(template_family).where(template_family.c.subject_pk.in_(
                    [s.pk for s in subs])).order_by(template_family.c.id)).mappings():
                family.setdefault(f["template_id"], []).append({
                    "model": f["model"], "key_id": f["key_id"],
                    "embedding_enc": base64.b64encode(f["embedding_enc"]).decode(), "created_at": iso(f["created_at"])})
            by_subject: dict[int, list] = {}
            for t in tm:
                by_subject.setdefault(t["subject_pk"], []).append({
                    "face_id": t["id"], "pack_id": t["pack_id"], "key_id": t["key_id"],
                    "embedding_enc": base64.b64encode(t["embedding_enc"]).decode(),
                    "image_enc": base64.b64encode(t["image_enc"]).decode() if t["image_enc"] else None,
                    "quality": t["quality"], "quality_detail": json_out(t["quality_detail"]),
                    "source": t["source"], "created_at": iso(t["created_at"]), "family": family.get(t["id"], [])})
            records: dict[str, list] = {}
            for r in conn.execute(sa.select(consent_records).where(consent_records.c.subject_id.in_(
                    [s.subject_id for s in subs])).order_by(consent_records.c.id)).mappings():
                records.setdefault(r["subject_id"], []).append(
                    {k: (iso(v) if k in ("recorded_at", "withdrawn_at") else v) for k, v in r.items() if k != "id"})
            for s in subs:
                item = subject_dict(s) | {"templates": by_subject.get(s.pk, []),
                                          "consent_records": records.get(s.subject_id, [])}
                fh.write(json.dumps(item) + "\n")
                n_subj += 1
                n_tmpl += len(item["templates"])
                n_family += sum(len(t["family"]) for t in item["templates"])
    store.audit(actor=actor, operation="gallery.export", outcome="ok",
               detail={"subjects": n_subj, "templates": n_tmpl, "family_templates": n_family, "file": path.name})
    return {"path": str(path), "subjects": n_subj, "templates": n_tmpl, "family_templates": n_family,
            "key_ids": header["key_ids"]}

def restore(store: Store, path: str | Path, actor: str = "cli") -> dict:
    """Load an export into an EMPTY store, keeping subject ids and face ids."""
    path = Path(path)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        try:
            header = json.loads(fh.readline())
        except (json.JSONDecodeError, OSError):
            raise FacegateError("invalid_request", f"{path} is not a facegate export") from None
        if header.get("format") != EXPORT_FORMAT or header.get("version") not in READABLE_VERSIONS:
            raise FacegateError("invalid_request", f"{path} is not a facegate export (versions "
                                f"{', '.join(map(str, READABLE_VERSIONS))})")
        missing = [k for k in header.get("key_ids", []) if not store.keys.has(k)]
        if missing:
            raise FacegateError("data_key_unavailable", f"the export is encrypted with data key(s) {missing}, which "
                                f"are not in this keyring ({store.keys.ids}); point FACEGATE_DATA_KEY_FILE at the "
                                "key file kept with the backup")
        if store.count_subjects():
            raise FacegateError("invalid_request", "restore needs an empty store (this one has subjects); "
                                "use a new FACEGATE_DATA_DIR or database")
        n_subj = n_tmpl = n_family = 0
        with write_transaction(store.db) as conn:
            have = set(conn.execute(sa.select(notices.c.version)).scalars())
            for n in header.get("notices", []):
                if n["version"] not in have:
                    conn.execute(notices.insert().values(**n | {"published_at": datetime.fromisoformat(n["published_at"])}))
            for line in fh:
                item = json.loads(line)
                ts = lambda v: datetime.fromisoformat(v) if v else utcnow()  # noqa: E731
                res = conn.execute(subjects.insert().values(
                    subject_id=item["subject_id"], name=item["name"], status=item["status"],
                    metadata=json_in(item["metadata"]), consent=json_in(item["consent"]),
                    minor=bool(item.get("minor")), status_since=ts(item["updated_at"]),
                    withdrawn_at=datetime.fromisoformat(item["withdrawn_at"]) if item.get("withdrawn_at") else None,
                    created_at=ts(item["created_at"]), updated_at=ts(item["updated_at"])))
                pk = int(res.inserted_primary_key[0])
                recs = [r | {"recorded_at": ts(r["recorded_at"]),
                             "withdrawn_at": datetime.fromisoformat(r["withdrawn_at"]) if r["withdrawn_at"] else None}
                        for r in item.get("consent_records", [])]
                if recs:
                    conn.execute(consent_records.insert(), recs)
                rows = [dict(id=t["face_id"], subject_pk=pk, pack_id=t["pack_id"], key_id=t["key_id"],
                             embedding_enc=base64.b64decode(t["embedding_enc"]),
                             image_enc=base64.b64decode(t["image_enc"]) if t["image_enc"] else None,
                             quality=t["quality"], quality_detail=json_in(t["quality_detail"]),
                             source=t["source"], created_at=ts(t["created_at"])) for t in item["templates"]]
                if rows:
                    # Authenticate every template before accepting the file.
                    for r in rows:
                        store.keys.decrypt(r["embedding_enc"], r["key_id"], embedding_aad(item["subject_id"], r["pack_id"]))
                    conn.execute(templates.insert(), rows)
                    family = [dict(template_id=t["face_id"], subject_pk=pk, pack_id=t["pack_id"], model=f["model"],
                                   key_id=f["key_id"], embedding_enc=base64.b64decode(f["embedding_enc"]),
                                   created_at=ts(f["created_at"])) for t in item["templates"] for f in t.get("family", [])]
                    for f in family:
                        store.keys.decrypt(f["embedding_enc"], f["key_id"],
                                           family_aad(item["subject_id"], f["pack_id"], f["model"], f["template_id"]))
                    if family:
                        conn.execute(template_family.insert(), family)
                    n_family += len(family)
                    log_changes(conn, "add", [(r["id"], pk, r["pack_id"]) for r in rows])
                n_subj += 1
                n_tmpl += len(rows)
            if store.backend == "postgresql":
                conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('templates', 'id'), "
                                     "GREATEST((SELECT COALESCE(MAX(id), 0) FROM templates), 1))"))
                conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('template_family', 'id'), "
                                     "GREATEST((SELECT COALESCE(MAX(id), 0) FROM template_family), 1))"))
            audit.append(conn, actor=actor, operation="gallery.restore", outcome="ok",
                         detail={"subjects": n_subj, "templates": n_tmpl, "family_templates": n_family,
                                 "file": path.name, "from_store": header.get("store_id")})
    return {"subjects": n_subj, "templates": n_tmpl, "family_templates": n_family, "key_ids": header.get("key_ids", [])}
