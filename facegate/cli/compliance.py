"""The 2025 face-recognition rules from the command line (docs/compliance.md):

- ``facegate notices publish FILE`` (audited; older versions kept), ``notices show [--all]``;
- ``facegate consent record SUBJECT [--purpose P] [--decision given|declined] [--channel counter|cli]
  [--guardian-name N --guardian-relation parent|legal_guardian]``, ``consent list SUBJECT``,
  ``consent withdraw SUBJECT [--reason R]`` (erases the person's face information);
- ``facegate certify-alternative SUBJECT --method counter|home_visit|video_call|document --checked-by WHO --note HOW``;
- ``facegate retention run [--dry-run]`` (also in the service, one replica at a time);
- ``facegate compliance report [--json | --html] [--output FILE]``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from facegate.cli import cli_actor
from facegate.cli.gallery import _gallery, _store
from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.vocab import ALTERNATIVE_METHODS, CONSENT_DECISIONS, GUARDIAN_RELATIONS, MANUAL_OUTCOMES, PURPOSES


def _print(args, data, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=1, default=str) if getattr(args, "json", False) else text)


def _who():
    from facegate.storage.audit import Actor
    return Actor(cli_actor())


def register(sub) -> None:
    n = sub.add_parser("notices", help="the notice shown before consent (zh-CN and English), versioned")
    nsub = n.add_subparsers(dest="notices_command", required=True)
    p = nsub.add_parser("publish", help="publish a notice file (JSON) as the next version")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_notices_publish)
    p = nsub.add_parser("show", help="the current notice (--all: every version)")
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_notices_show, json=True)

    c = sub.add_parser("consent", help="consent records: record, list, withdraw")
    csub = c.add_subparsers(dest="consent_command", required=True)
    p = csub.add_parser("record", help="record a consent given (or declined) at a counter or here")
    p.add_argument("subject_id")
    p.add_argument("--purpose", choices=PURPOSES)
    p.add_argument("--decision", choices=CONSENT_DECISIONS, default="given")
    p.add_argument("--channel", choices=("counter", "cli"), default="cli")
    p.add_argument("--notice-version", type=int, help="the version the person was shown (default: the current)")
    p.add_argument("--guardian-name", help="a minor's guardian who consented")
    p.add_argument("--guardian-relation", choices=GUARDIAN_RELATIONS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_consent_record)
    p = csub.add_parser("list", help="a subject's consent records")
    p.add_argument("subject_id")
    p.set_defaults(func=cmd_consent_list, json=True)
    p = csub.add_parser("withdraw", help="withdraw consent: the person's face information is erased")
    p.add_argument("subject_id")
    p.add_argument("--reason")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_consent_withdraw)

    a = sub.add_parser("certify-alternative", help="certify by a way without a face (who checked, how)")
    a.add_argument("subject_id")
    a.add_argument("--method", choices=ALTERNATIVE_METHODS, required=True)
    a.add_argument("--checked-by", required=True)
    a.add_argument("--note", required=True)
    a.add_argument("--outcome", choices=MANUAL_OUTCOMES, default="certified")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_certify_alternative)

    r = sub.add_parser("retention", help="the retention policy per data class and its purge")
    rsub = r.add_subparsers(dest="retention_command", required=True)
    p = rsub.add_parser("run", help="purge what is due now (idempotent; one run at a time across replicas)")
    p.add_argument("--dry-run", action="store_true", help="count what is due, delete nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retention_run)
    p = rsub.add_parser("policy", help="the data classes, their retention and the setting of each")
    p.set_defaults(func=cmd_retention_policy, json=True)

    m = sub.add_parser("compliance", help="the compliance report (filing count, consent, retention, PIA annex)")
    msub = m.add_subparsers(dest="compliance_command", required=True)
    p = msub.add_parser("report", help="the report as text, JSON or HTML")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--html", action="store_true")
    p.add_argument("--output", help="write to this file instead of standard output")
    p.set_defaults(func=cmd_compliance_report)


def cmd_notices_publish(args) -> int:
    from facegate.storage import notices
    path = Path(args.file)
    try:
        if path.stat().st_size > notices.MAX_FILE_BYTES:
            raise FacegateError("notice_invalid", f"a notice file is at most {notices.MAX_FILE_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise FacegateError("notice_invalid", f"cannot read {path}: {exc.strerror}") from None
    with _store() as store:
        out = notices.publish(store.db, raw, cli_actor())
    _print(args, out, f"published notice version {out['version']} (sha256 {out['sha256'][:12]}…)")
    return 0


def cmd_notices_show(args) -> int:
    from facegate.storage import notices
    with _store() as store:
        out = notices.history(store.db) if args.all else notices.current(store.db)
    if out is None:
        raise FacegateError("notice_missing")
    _print(args, out, "")
    return 0


def cmd_consent_record(args) -> int:
    from facegate.workflows.consent import consent as flows
    with _store() as store:
        out = flows.record_for_subject(store.db, store.settings, args.subject_id, decision=args.decision,
                                       channel=args.channel, who=_who(), purpose=args.purpose,
                                       notice_version=args.notice_version, guardian_name=args.guardian_name,
                                       guardian_relation=args.guardian_relation)
    _print(args, out, f"consent {out['consent_id']}: {out['subject_id']} {out['decision']} for {out['purpose']} "
                      f"(notice version {out['notice_version']})")
    return 0


def cmd_consent_list(args) -> int:
    from facegate.workflows.consent import consent as flows
    with _store() as store:
        out = flows.records(store.db, args.subject_id)
    _print(args, out, "")
    return 0


def cmd_consent_withdraw(args) -> int:
    from facegate.workflows.consent import consent as flows
    with _gallery() as g:
        out = flows.withdraw(g, args.subject_id, _who(), args.reason)
    _print(args, out, f"withdrawn: {out['subject_id']}; erased {out['erased']}")
    return 0


def cmd_certify_alternative(args) -> int:
    from facegate.workflows.certification.ledger import CertificationLedger
    with _store() as store:
        out = CertificationLedger(store.settings, store).alternative(args.subject_id, args.method, args.checked_by,
                                                                      args.note, who=_who(), outcome=args.outcome)
    _print(args, out, f"{out['subject_id']}: {out['outcome']} by {args.method} (period {out['period']})")
    return 0


def cmd_retention_run(args) -> int:
    from facegate.storage import retention
    with _store() as store:
        out = retention.run(store, holder=cli_actor(), dry_run=args.dry_run, actor=cli_actor())
    _print(args, out, json.dumps(out, indent=1, default=str))
    return 0 if out.get("ran") or args.dry_run else 3


def cmd_retention_policy(args) -> int:
    from facegate.storage import retention
    _print(args, retention.policy(Settings.load()), "")
    return 0


def cmd_compliance_report(args) -> int:
    from facegate.workflows.compliance import report as rep
    with _store() as store:
        data = rep.build(store)
    if args.html:
        text = rep.html(data)
    elif args.json:
        text = json.dumps(data, ensure_ascii=False, indent=1, default=str)
    else:
        text = rep.text(data)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
