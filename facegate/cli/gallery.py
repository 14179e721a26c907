"""Gallery administration: ``subjects``, ``enrol``, ``import``, ``erase``, ``export``, ``restore``,
``index`` and (inside the ``keys`` group of :mod:`facegate.cli.service`) ``keys rotate-data-key``.

``FACEGATE_DATA_DIR`` selects the data directory (SQLite database, key file, index snapshot);
``FACEGATE_DATABASE_URL`` a PostgreSQL database instead.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from facegate.cli import cli_actor
from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.vocab import SUBJECT_STATUSES


def _store():
    from facegate.storage.store import Store
    return Store.open(Settings.load())


def _gallery():
    from facegate.engine import FaceEngine
    from facegate.gallery.gallery import Gallery
    settings = Settings.load()
    return Gallery(settings, FaceEngine.load(settings))


def _out(args, obj, text: str | None = None) -> None:
    if getattr(args, "json", False) or text is None:
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(text)


def _json_arg(value: str | None, what: str):
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise FacegateError("invalid_request", f"{what} is not JSON: {exc}") from None


def _with_json(p):
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


# ---------------------------------------------------------------------- registration
def register(sub) -> None:
    s = sub.add_parser("subjects", help="add, show, list, change or delete enrolled subjects")
    ss = s.add_subparsers(dest="subjects_command", required=True)
    p = _with_json(ss.add_parser("add", help="add a subject (no face yet: use `facegate enrol`)"))
    p.add_argument("subject_id", help="external id, e.g. pension or citizen number")
    p.add_argument("--name")
    p.add_argument("--status", default="active", choices=SUBJECT_STATUSES)
    p.add_argument("--metadata", help="JSON object")
    p.add_argument("--minor", action="store_true", help="under 14: a guardian's consent record is needed "
                   "before enrolment or capture (facegate consent record ... --guardian-name)")
    p.add_argument("--consent-by", help="who recorded the biometric consent (free text of old; the consent "
                   "record is `facegate consent record`)")
    p.add_argument("--consent-purpose", help="what the subject consented to, e.g. 'pension life certificate'")
    p.add_argument("--consent-at", help="when (ISO-8601; default now)")
    p.set_defaults(func=cmd_subjects_add)
    p = _with_json(ss.add_parser("show", help="a subject and its templates (not the embeddings)"))
    p.add_argument("subject_id")
    p.set_defaults(func=cmd_subjects_show)
    p = _with_json(ss.add_parser("list", help="list subjects"))
    p.add_argument("--status", choices=SUBJECT_STATUSES)
    p.add_argument("--prefix", help="only subject ids starting with this")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_subjects_list)
    p = _with_json(ss.add_parser("set-status", help="active, suspended or deceased"))
    p.add_argument("subject_id")
    p.add_argument("status", choices=SUBJECT_STATUSES)
    p.set_defaults(func=cmd_subjects_set_status)
    p = _with_json(ss.add_parser("delete", help="delete a subject with its templates and index entries"))
    p.add_argument("subject_id")
    p.add_argument("--reason")
    p.set_defaults(func=cmd_subjects_delete)

    p = _with_json(sub.add_parser("enrol", help="enrol face photos for a subject (duplicate-checked)"))
    p.add_argument("subject_id")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--create", action="store_true", help="create the subject if it does not exist")
    p.add_argument("--name", help="name for --create")
    p.add_argument("--allow-duplicate", action="store_true",
                   help="enrol even when the face matches another subject (recorded in the audit trail)")
    p.add_argument("--duplicate-fmr", type=float, help="operating point of the duplicate check (default: "
                   "FACEGATE_TARGET_FMR); it compares with every subject, so false alarms grow with the gallery")
    p.set_defaults(func=cmd_enrol)

    p = _with_json(sub.add_parser("import", help="bulk enrolment from DIR/<subject_id>/<photo> or a CSV "
                                                 "(subject_id,name,path); parallel and resumable"))
    p.add_argument("source", type=Path)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: number of cores)")
    p.add_argument("--allow-duplicate", action="store_true")
    p.add_argument("--duplicate-fmr", type=float, help="operating point of the duplicate check (default: "
                   "FACEGATE_TARGET_FMR); it compares with every subject, so false alarms grow with the gallery")
    p.add_argument("--policy", default="single", choices=["single", "central", "largest"],
                   help="which face to take: 'single' rejects photos with two people (default); 'central' "
                        "takes the face nearest the centre (e.g. cropped press photos)")
    p.add_argument("--errors", type=Path, help="error report CSV (default: DATA_DIR/import-reports/...)")
    p.add_argument("--limit", type=int, help="only the first N photos (in sorted order)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_import)

    p = _with_json(sub.add_parser("erase", help="erase a subject: templates, index entries; the audit trail "
                                                "records the erasure, not the biometrics"))
    p.add_argument("subject_id")
    p.add_argument("--reason")
    p.set_defaults(func=cmd_erase)

    p = _with_json(sub.add_parser("export", help="write subjects and ENCRYPTED templates to a backup file "
                                                 "(the data key is not included: keep the key file separately)"))
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_export)
    p = _with_json(sub.add_parser("restore", help="load an export into an empty store (needs its data key)"))
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_restore)

    i = sub.add_parser("index", help="the 1:N vector index")
    isub = i.add_subparsers(dest="index_command", required=True)
    p = _with_json(isub.add_parser("rebuild", help="rebuild the index from the database and save a snapshot"))
    p.set_defaults(func=cmd_index_rebuild)
    p = _with_json(isub.add_parser("stats", help="index and database counts, consistency, snapshot"))
    p.set_defaults(func=cmd_index_stats)
    p = _with_json(isub.add_parser("reenrol", help="after a model-pack change: re-embed the stored photos "
                                                   "(FACEGATE_STORE_IMAGES=1) of other packs' templates"))
    p.add_argument("--subject", help="only this subject")
    p.set_defaults(func=cmd_index_reenrol)


def register_key_rotation(ks) -> None:
    """Called by :mod:`facegate.cli.service`, which owns the ``keys`` group."""
    p = _with_json(ks.add_parser("rotate-data-key", help="re-encrypt all templates under a new data key "
                                                         "(resumes after a crash)"))
    p.add_argument("--keep-old", action="store_true", help="keep the old keys in the key file afterwards")
    p.set_defaults(func=cmd_rotate_data_key)


# ---------------------------------------------------------------------- commands
def cmd_subjects_add(args) -> int:
    consent = None
    if args.consent_by or args.consent_purpose:
        from datetime import datetime, timezone
        consent = {"who": args.consent_by, "purpose": args.consent_purpose,
                   "when": args.consent_at or datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store = _store()
    try:
        s = store.add_subject(args.subject_id, name=args.name, status=args.status,
                              metadata=_json_arg(args.metadata, "--metadata"), consent=consent, actor=cli_actor(),
                              minor=args.minor)
    finally:
        store.close()
    _out(args, s, f"added {s['subject_id']} ({s['status']})")
    return 0


def cmd_subjects_show(args) -> int:
    store = _store()
    try:
        s = store.get_subject(args.subject_id)
    finally:
        store.close()
    lines = [f"{s['subject_id']}  {s['name'] or ''}  status={s['status']}  created={s['created_at']}",
             f"consent: {json.dumps(s['consent'])}" if s["consent"] else "consent: none recorded",
             f"metadata: {json.dumps(s['metadata'])}" if s["metadata"] else ""]
    for t in s["templates"]:
        lines.append(f"  face {t['face_id']}  quality={t['quality'] if t['quality'] is None else round(t['quality'], 3)}"
                     f"  pack={t['pack_id']}  source={t['source']}  {t['created_at']}")
    if not s["templates"]:
        lines.append("  no face templates")
    _out(args, s, "\n".join(ln for ln in lines if ln))
    return 0


def cmd_subjects_list(args) -> int:
    store = _store()
    try:
        res = store.list_subjects(status=args.status, limit=args.limit, offset=args.offset, prefix=args.prefix)
    finally:
        store.close()
    text = "\n".join(f"{s['subject_id']:<24} {s['status']:<10} {s['n_templates']:>3} face(s)  {s['name'] or ''}"
                     for s in res["subjects"])
    _out(args, res, (text + "\n" if text else "") + f"{len(res['subjects'])} of {res['total']} subject(s)")
    return 0


def cmd_subjects_set_status(args) -> int:
    store = _store()
    try:
        s = store.set_status(args.subject_id, args.status, actor=cli_actor())
    finally:
        store.close()
    _out(args, s, f"{s['subject_id']}: {s['status']}")
    return 0


def cmd_subjects_delete(args) -> int:
    with _gallery() as g:
        res = g.delete_subject(args.subject_id, actor=cli_actor(), reason=args.reason)
    _out(args, res, f"deleted {res['subject_id']} and {res['templates_removed']} template(s)")
    return 0


def cmd_erase(args) -> int:
    with _gallery() as g:
        res = g.erase(args.subject_id, actor=cli_actor(), reason=args.reason)
    _out(args, res, f"erased {res['subject_id']}: {res['templates_removed']} template(s) and their index entries")
    return 0


def cmd_enrol(args) -> int:
    results, failed = [], 0
    with _gallery() as g:
        if args.create:
            g.store.ensure_subjects({args.subject_id: args.name}, actor=cli_actor())
        else:
            g.store.get_subject(args.subject_id)
        for path in args.images:
            try:
                r = g.enrol(args.subject_id, path.read_bytes(), source=f"cli:{path.name}",
                            allow_duplicate=args.allow_duplicate, actor=cli_actor(), duplicate_fmr=args.duplicate_fmr)
                results.append({"image": str(path), "ok": True} | r)
                if not args.json:
                    dup = f"  (DUPLICATE of {[d['subject_id'] for d in r['duplicate_of']]}, allowed)" if r["duplicate_of"] else ""
                    print(f"{path}: face {r['face_id']} quality {r['quality']['score']:.2f}{dup}")
            except OSError as exc:
                failed += 1
                results.append({"image": str(path), "ok": False, "error": {"code": "unreadable", "message": str(exc)}})
                if not args.json:
                    print(f"{path}: error: unreadable: {exc}", file=sys.stderr)
            except FacegateError as exc:
                failed += 1
                results.append({"image": str(path), "ok": False, "error": exc.to_dict()})
                if not args.json:
                    print(f"{path}: error: {exc.code}: {exc.message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"subject_id": args.subject_id, "results": results}, indent=2, default=str))
    return 1 if failed else 0


def cmd_import(args) -> int:
    from facegate.gallery.importer import load_items, run_import
    items = load_items(args.source)
    if args.limit:
        items = items[:args.limit]
    with _gallery() as g:
        summary = run_import(g, items, workers=args.workers, allow_duplicate=args.allow_duplicate,
                             policy=args.policy, report_path=args.errors, progress=not args.no_progress,
                             actor=cli_actor(), duplicate_fmr=args.duplicate_fmr)
    text = (f"{summary['enrolled']} enrolled, {summary['errors']} error(s), {summary['already_done']} already done "
            f"of {summary['photos']} photo(s) in {summary['elapsed_s']}s ({summary['photos_per_s']} photos/s, "
            f"{summary['workers']} worker(s))\nerror report: {summary['error_report']}")
    if summary["errors_by_code"]:
        text += "\nerrors: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["errors_by_code"].items()))
    _out(args, summary, text)
    return 0


def cmd_export(args) -> int:
    from facegate.storage import backup
    store = _store()
    try:
        res = backup.export(store, args.file, actor=cli_actor())
    finally:
        store.close()
    _out(args, res, f"exported {res['subjects']} subject(s), {res['templates']} template(s) to {res['path']}\n"
                    f"encrypted with data key(s) {', '.join(res['key_ids']) or '-'}: keep the key file separately; "
                    "restore needs it")
    return 0


def cmd_restore(args) -> int:
    from facegate.storage import backup
    store = _store()
    try:
        res = backup.restore(store, args.file, actor=cli_actor())
    finally:
        store.close()
    with _gallery() as g:
        g.rebuild(reason="restore")
    _out(args, res, f"restored {res['subjects']} subject(s), {res['templates']} template(s); index rebuilt")
    return 0


def cmd_index_rebuild(args) -> int:
    with _gallery() as g:
        g.rebuild()
        st = g.stats()
    _out(args, st, f"rebuilt: {st['templates_in_index']} template(s) at seq {st['applied_seq']} -> {st['snapshot']}")
    return 0


def cmd_index_stats(args) -> int:
    with _gallery() as g:
        st = g.stats()
    text = (f"pack {st['pack_id']} on {st['backend']}: {st['subjects']} subject(s), {st['templates_in_db']} template(s) "
            f"in the database, {st['templates_in_index']} in the index ({'consistent' if st['consistent'] else 'INCONSISTENT'})"
            f"\nchange log seq {st['last_seq']}, index at {st['applied_seq']}; opened from {st['opened_from']}"
            f"\nindex: {json.dumps(st['index'], default=str)}\nsnapshot: {st['snapshot']}")
    if st["other_packs"]:
        text += f"\ntemplates of other packs (not searched, re-enrol): {st['other_packs']}"
    _out(args, st, text)
    return 0


def cmd_index_reenrol(args) -> int:
    with _gallery() as g:
        res = g.reenrol_from_photos(args.subject, actor=cli_actor())
    text = f"re-enrolled {res['reenrolled']} photo(s) with pack {res['pack_id']}; {len(res['failed'])} failed"
    if res["other_pack_templates"]:
        text += (f"\ntemplates of other packs remain: {res['other_pack_templates']} (subjects without a stored photo "
                 "must be re-enrolled from a new photo; erase old templates when done)")
    _out(args, res, text)
    return 0


def cmd_rotate_data_key(args) -> int:
    from facegate.storage import keyrotation
    store = _store()
    try:
        res = keyrotation.rotate_data_key(store, retire_old=not args.keep_old, actor=cli_actor())
    finally:
        store.close()
    text = (f"{'resumed: ' if res['resumed'] else ''}{res['reencrypted']} template(s) re-encrypted under {res['key_id']}")
    if res["retired_key_ids"]:
        text += (f"\nold key(s) {', '.join(res['retired_key_ids'])} moved to {res['retired_key_file']}: keep that file "
                 "while older exports may need restoring, then destroy it")
    elif res["old_key_ids_still_listed"]:
        text += f"\nold key(s) still listed: {', '.join(res['old_key_ids_still_listed'])}"
    _out(args, res, text)
    return 0
