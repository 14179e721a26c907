"""Template families: ``facegate templates backfill`` (second opinions for existing templates)
and ``facegate templates stats``."""
from __future__ import annotations

import json

from facegate.cli import cli_actor
from facegate.config import Settings


def _gallery():
    from facegate.engine import FaceEngine
    from facegate.gallery.gallery import Gallery
    settings = Settings.load()
    return Gallery(settings, FaceEngine.load(settings))


def register(sub) -> None:
    t = sub.add_parser("templates", help="template families: the pack's second-opinion (SFace) templates")
    tsub = t.add_subparsers(dest="templates_command", required=True)
    p = tsub.add_parser("backfill", help="make the second-opinion template of every template enrolled without one, "
                                         "from its stored or imported photo; resumable (re-run after a kill)")
    p.add_argument("--batch", type=int, default=64, help="templates per transaction (1-1000, default 64)")
    p.add_argument("--limit", type=int, help="examine at most this many templates")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_backfill)
    p = tsub.add_parser("reembed", help="make templates of another model pack from the kept reference photos "
                                         "(a model upgrade); resumable")
    p.add_argument("--pack", required=True, help="the new pack: a name under FACEGATE_MODEL_DIR or a folder")
    p.add_argument("--limit", type=int, help="at most this many templates")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_reembed)
    p = tsub.add_parser("stats", help="templates with and without a second-opinion template")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_stats)


def cmd_backfill(args) -> int:
    from facegate.gallery.backfill import backfill
    with _gallery() as g:
        res = backfill(g, batch=args.batch, limit=args.limit, actor=cli_actor())
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['model']}: {res['written']} template(s) written of {res['examined']} examined "
              f"(no photo: {res['no_photo']}, no face: {res['no_face']}, face not found: {res['face_not_found']}); "
              f"{res['after']['without_second']} of {res['after']['templates']} still without one")
    return 0


def cmd_stats(args) -> int:
    with _gallery() as g:
        st = g.stats()["second_opinion"]
    if args.json:
        print(json.dumps(st, indent=2))
    elif st is None:
        print("no second opinion (the pack has no SFace model, or FACEGATE_SECOND_OPINION=0)")
    else:
        print(f"{st['model']}: {st['with_second']} of {st['templates']} template(s) have one; "
              f"{st['without_second']} are searched by the main model alone")
    return 0


def cmd_reembed(args) -> int:
    import dataclasses

    from facegate.engine import FaceEngine
    from facegate.gallery.backfill import reembed
    from facegate.storage.store import Store
    settings = Settings.load()
    engine = FaceEngine.load(dataclasses.replace(settings, pack=args.pack))
    store = Store.open(settings)
    try:
        res = reembed(store, engine, actor=cli_actor(), limit=args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['reembedded']} template(s) of pack {res['pack_id']} made from reference photos in "
              f"{res['elapsed_s']} s ({res['per_template_ms']} ms each); {len(res['failed'])} failed")
    return 0
