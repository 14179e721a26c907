"""Workflow administration: ``report certifications``, ``certify-manual``, ``fraud-signals`` and
``kiosks add|list|disable|report``."""
from __future__ import annotations

import csv
import json
import sys

from facegate.cli import cli_actor
from facegate.clock import parse_instant
from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.vocab import CERT_STATUSES, MANUAL_OUTCOMES, SIGNAL_KINDS


def _ledger():
    from facegate.workflows.certification.ledger import CertificationLedger
    from facegate.storage.store import Store

    settings = Settings.load()
    return CertificationLedger(settings, Store.open(settings))


def _db():
    from facegate.storage.db import open_database
    return open_database(Settings.load().database)


def register(sub) -> None:
    rep = sub.add_parser("report", help="reports for administrators")
    rsub = rep.add_subparsers(dest="report_command", required=True)
    c = rsub.add_parser("certifications", help="who has certified, who is due, who is overdue")
    c.add_argument("--period", help="2026, 2026-H1, 2026-Q3 or 2026-07 (default: the current period)")
    c.add_argument("--status", choices=CERT_STATUSES)
    c.add_argument("--as-of", help="judge statuses at this date/time (ISO-8601; default now)")
    c.add_argument("--format", choices=["csv", "json"], default="csv")
    c.add_argument("--include-inactive", action="store_true", help="also suspended and deceased subjects")
    c.add_argument("--output", help="write to this file instead of standard output")
    c.set_defaults(func=cmd_report_certifications)

    m = sub.add_parser("certify-manual", help="record an operator's certification decision after an in-person check")
    m.add_argument("subject_id")
    m.add_argument("--outcome", choices=MANUAL_OUTCOMES, default="certified")
    m.add_argument("--note", required=True, help="how the person was checked (recorded and audited)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_certify_manual)

    f = sub.add_parser("fraud-signals", help="list fraud signals raised by certifications")
    f.add_argument("--kind", choices=SIGNAL_KINDS)
    f.add_argument("--subject")
    f.add_argument("--period")
    f.add_argument("--limit", type=int, default=100)
    f.set_defaults(func=cmd_fraud_signals)

    k = sub.add_parser("kiosks", help="register, list, disable kiosks; per-kiosk statistics")
    ksub = k.add_subparsers(dest="kiosks_command", required=True)
    a = ksub.add_parser("add", help="register a kiosk and print its API key (shown once)")
    a.add_argument("--location", required=True)
    a.add_argument("--id", dest="kiosk_id", help="kiosk id (default: generated)")
    a.add_argument("--rate-limit", type=int, help="requests per minute for its key")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_kiosks_add)
    ls = ksub.add_parser("list")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_kiosks_list)
    d = ksub.add_parser("disable", help="disable a kiosk (its key is revoked)")
    d.add_argument("kiosk_id")
    d.set_defaults(func=cmd_kiosks_disable)
    r = ksub.add_parser("report", help="attempts, accepts, rejects by reason, median latency per kiosk")
    r.add_argument("--since", help="only events from this date/time (ISO-8601)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_kiosks_report)


REPORT_COLUMNS = ["subject_id", "name", "status", "subject_status", "certified_at", "certified_by", "valid_until",
                  "attempts", "last_outcome", "last_attempt_at"]


def cmd_report_certifications(args) -> int:
    ledger = _ledger()
    try:
        first = ledger.statuses(args.period, args.status, parse_instant(args.as_of, "--as-of"), limit=1,
                                include_inactive=args.include_inactive)
    except ValueError as exc:
        raise FacegateError("invalid_request", str(exc))
    items, offset = [], 0
    while True:                  # page through: the gallery may hold millions
        page = ledger.statuses(first["period"], args.status, parse_instant(first["as_of"]), limit=5000, offset=offset,
                               include_inactive=args.include_inactive)
        items.extend(page["items"])
        if len(page["items"]) < 5000:
            break
        offset += 5000
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        if args.format == "json":
            json.dump({k: first[k] for k in ("period", "period_start", "period_end", "as_of", "counts")}
                      | {"items": items}, out, indent=2)
            out.write("\n")
        else:
            from facegate.workflows.review.reports import csv_safe
            w = csv.DictWriter(out, fieldnames=["period"] + REPORT_COLUMNS)
            w.writeheader()
            for item in items:
                w.writerow({"period": first["period"], **{c: csv_safe(item.get(c)) for c in REPORT_COLUMNS}})
    finally:
        if args.output:
            out.close()
    print(f"period {first['period']} as of {first['as_of']}: "
          + ", ".join(f"{n} {s}" for s, n in first["counts"].items()), file=sys.stderr)
    return 0


def cmd_certify_manual(args) -> int:
    from facegate.storage.audit import Actor
    result = _ledger().manual(args.subject_id, args.outcome, args.note, who=Actor(cli_actor()))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.subject_id}: {result['outcome']} (manual) for period {result['period']}, "
              f"valid until {result['valid_until']}")
    return 0


def cmd_fraud_signals(args) -> int:
    print(json.dumps(_ledger().signals(args.kind, args.subject, args.period, args.limit), indent=2))
    return 0


def cmd_kiosks_add(args) -> int:
    from facegate.workflows.kiosk.registry import add_kiosk

    secret, kiosk = add_kiosk(_db(), args.location, args.kiosk_id, args.rate_limit, actor=cli_actor())
    if args.json:
        print(json.dumps({"key": secret, **kiosk}))
    else:
        print(f"kiosk {kiosk['kiosk_id']} at {kiosk['location']}: API key (shown once, store it on the kiosk):")
        print(secret)
    return 0


def cmd_kiosks_list(args) -> int:
    from facegate.workflows.kiosk.registry import list_kiosks

    kiosks = list_kiosks(_db())
    if args.json:
        print(json.dumps(kiosks, indent=2))
    else:
        for k in kiosks:
            print(f"{k['kiosk_id']:<20} {k['status']:<9} {k['key_id']:<16} {k['location']}")
    return 0


def cmd_kiosks_disable(args) -> int:
    from facegate.workflows.kiosk.registry import disable_kiosk

    k = disable_kiosk(_db(), args.kiosk_id, actor=cli_actor())
    print(f"kiosk {k['kiosk_id']} disabled; key {k['key_id']} revoked")
    return 0


def cmd_kiosks_report(args) -> int:
    from facegate.workflows.kiosk.registry import report

    rows = report(_db(), parse_instant(args.since, "--since"))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'kiosk':<20} {'attempts':>8} {'accepts':>8} {'rejects':>8} {'reviews':>8} {'errors':>7} "
          f"{'median ms':>10}  reasons")
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["by_reason"].items(), key=lambda kv: -kv[1]))
        med = "-" if r["median_latency_ms"] is None else f"{r['median_latency_ms']:.0f}"
        print(f"{r['kiosk_id']:<20} {r['attempts']:>8} {r['accepts']:>8} {r['rejects']:>8} {r['manual_reviews']:>8} "
              f"{r['errors']:>7} {med:>10}  {reasons}")
    return 0
