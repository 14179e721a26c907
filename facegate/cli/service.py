"""Service commands: ``serve``, ``keys create|list|revoke``, ``audit verify|list``.

All of them use the settings from the environment (``FACEGATE_DATA_DIR`` selects the data
directory and so the database, unless ``FACEGATE_DATABASE_URL`` is set).
"""
from __future__ import annotations

import json
import os
import sys

from facegate.cli import cli_actor
from facegate.vocab import ROLES


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    p.add_argument("--host", help="default: FACEGATE_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default: FACEGATE_PORT or 8000")
    p.add_argument("--workers", type=int, help="worker processes, each loads the models (default: FACEGATE_WORKERS or 1)")
    p.add_argument("--ssl-keyfile", help="serve HTTPS with this private key (or terminate TLS at a reverse proxy)")
    p.add_argument("--ssl-certfile", help="the certificate chain for --ssl-keyfile")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.add_argument("--graceful-shutdown-s", type=float,
                   help="on SIGTERM, stop accepting and let in-flight requests finish for at most this many seconds "
                        "(default: FACEGATE_GRACEFUL_SHUTDOWN_S or 20)")
    p.set_defaults(func=cmd_serve)

    keys = keys_parser(sub)
    ks = keys.add_subparsers(dest="keys_command", required=True)
    register_key_commands(ks)

    audit = sub.add_parser("audit", help="the audit trail")
    aus = audit.add_subparsers(dest="audit_command", required=True)
    p = aus.add_parser("verify", help="check the hash chain: detects edited or removed entries")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_verify)
    p = aus.add_parser("list", help="print audit entries, oldest first")
    p.add_argument("--after-seq", type=int, default=0)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--subject", help="only entries about this subject id")
    p.add_argument("--operation", help="only this operation, e.g. verify")
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.set_defaults(func=cmd_audit_list)


def keys_parser(sub):
    """The ``keys`` command group (created once; other CLI modules may add to it via
    :func:`facegate.cli.service.register_key_commands`)."""
    return sub.add_parser("keys", help="API keys of the HTTP service (and data-key rotation)")


def register_key_commands(ks) -> None:
    p = ks.add_parser("create", help="create an API key; the key is printed once and stored hashed")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", help="a label, e.g. the kiosk's location")
    p.add_argument("--client-id", help="the kiosk/device id this key belongs to (recorded in the audit trail)")
    p.add_argument("--rate-limit", type=int, help="requests per minute (default: FACEGATE_RATE_LIMIT_PER_MINUTE)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_create)
    p = ks.add_parser("list", help="list API keys (never the secrets)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_list)
    p = ks.add_parser("revoke", help="revoke an API key")
    p.add_argument("key_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_revoke)
    try:  # the data-key rotation lives with the gallery's encryption code
        from facegate.cli import gallery as gallery_cli
    except ImportError:
        return
    register_rotate = getattr(gallery_cli, "register_key_rotation", None)
    if register_rotate is not None:
        register_rotate(ks)


def _database():
    from facegate.config import Settings
    from facegate.storage.db import open_database
    return open_database(Settings.load().database)


def cmd_serve(args) -> int:
    import uvicorn

    from facegate.config import Settings
    from facegate.storage.private import private_dir

    for name, value in (("HOST", args.host), ("PORT", args.port), ("WORKERS", args.workers),
                        ("GRACEFUL_SHUTDOWN_S", args.graceful_shutdown_s)):
        if value is not None:
            os.environ[f"FACEGATE_{name}"] = str(value)  # the worker processes read their settings from env
    settings = Settings.load()
    # A data folder the service may not own is one line here rather than a traceback in uvicorn's startup.
    private_dir(settings.data_dir)
    ssl = {}
    if args.ssl_keyfile or args.ssl_certfile:
        ssl = {"ssl_keyfile": args.ssl_keyfile, "ssl_certfile": args.ssl_certfile}
    uvicorn.run("facegate.service.app:app_from_env", factory=True, host=settings.host, port=settings.port,
                workers=max(1, settings.workers), log_level=args.log_level, access_log=not args.no_access_log,
                proxy_headers=True, server_header=False, timeout_graceful_shutdown=settings.graceful_shutdown_s, **ssl)
    return 0


def cmd_keys_create(args) -> int:
    from facegate.storage.apikeys import create_key
    secret, key = create_key(_database(), args.role, actor=cli_actor(), name=args.name, client_id=args.client_id,
                             rate_limit_per_minute=args.rate_limit)
    if args.json:
        print(json.dumps({"key": secret, "key_id": key.key_id, "role": key.role, "name": key.name}))
    else:
        print(f"key_id {key.key_id} (role {key.role})")
        print(f"key    {secret}")
        print("The key is shown only now; it is stored hashed.", file=sys.stderr)
    return 0


def cmd_keys_list(args) -> int:
    from facegate.storage.apikeys import list_keys
    keys = list_keys(_database())
    if args.json:
        print(json.dumps([k.as_dict() for k in keys]))
        return 0
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        print(f"{k.key_id}  {k.role:<8}  {state:<10}  {k.name or ''}")
    return 0


def cmd_keys_revoke(args) -> int:
    from facegate.storage.apikeys import revoke_key
    key = revoke_key(_database(), args.key_id, actor=cli_actor())
    if args.json:
        print(json.dumps(key.as_dict()))
    else:
        print(f"revoked {key.key_id}")
    return 0


def cmd_audit_verify(args) -> int:
    from facegate.storage import audit
    db = _database()
    with db.connect() as conn:
        result = audit.verify(conn)
    if args.json:
        print(json.dumps(result))
    elif result["ok"]:
        print(f"audit chain intact: {result['rows']} entries")
    else:
        print(f"audit chain BROKEN at seq {result['first_bad_seq']} ({result['rows']} entries checked)")
    return 0 if result["ok"] else 1


def cmd_audit_list(args) -> int:
    from facegate.storage import audit
    page = audit.page(_database(), args.after_seq, args.limit, args.subject, args.operation)
    for e in page["entries"]:
        if args.json:
            print(json.dumps(e))
        else:
            print(f"{e['seq']:>6}  {e['ts']}  {e['actor']:<20}  {e['operation']:<16}  {e['outcome']:<14}  "
                  f"{e['subject_id'] or '-'}  {json.dumps(e['scores']) if e['scores'] else ''}")
    return 0
