"""Console operators: ``operators add|list|disable|reset-mfa``.

Each change is one write transaction with its audit row (``operator.add``, ``operator.disable``,
``operator.reset_mfa``), attributed to ``cli:<user>``. A password is read from standard input
(``--password-stdin``, for scripts) or asked twice on the terminal; never from the command line.
"""
from __future__ import annotations

import getpass
import json
import sys

from facegate.cli import cli_actor
from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.vocab import OPERATOR_ROLES


def _store():
    from facegate.storage.store import Store
    settings = Settings.load()
    return settings, Store.open(settings)


def _operators():
    from facegate.workflows.review.operators import Operators
    settings, store = _store()
    return Operators(settings, store)


def register(sub) -> None:
    op = sub.add_parser("operators", help="people who sign in to the operator console (/console/)")
    osub = op.add_subparsers(dest="operators_command", required=True)
    a = osub.add_parser("add", help="add an operator (they enrol their TOTP second factor at first sign-in)")
    a.add_argument("name", help="sign-in name: 2-64 of a-z 0-9 . _ -")
    a.add_argument("--role", choices=OPERATOR_ROLES, required=True)
    a.add_argument("--display-name")
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    a.add_argument("--sso-only", action="store_true", help="no password: signs in through OpenID Connect only")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_add)
    ls = osub.add_parser("list", help="operators, their role, status, lockout and second factor")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    d = osub.add_parser("disable", help="disable an operator and end their sessions")
    d.add_argument("name")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_disable)
    r = osub.add_parser("reset-mfa", help="forget an operator's second factor (they enrol again) and unlock them")
    r.add_argument("name")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_reset_mfa)


def _password(args) -> str | None:
    if args.sso_only:
        return None
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise FacegateError("invalid_request", "the passwords differ")
    return first


def _print(args, value, text: str) -> int:
    print(json.dumps(value, indent=2) if args.json else text)
    return 0


def cmd_add(args) -> int:
    out = _operators().add(args.name, args.role, _password(args), display_name=args.display_name, actor=cli_actor())
    return _print(args, out, f"operator {out['name']} ({out['role']}) added; TOTP is enrolled at the first sign-in")


def cmd_list(args) -> int:
    rows = _operators().list()
    text = "\n".join(f"{r['name']:<24} {r['role']:<10} {r['status']:<8} mfa={'yes' if r['mfa'] else 'no '} "
                     f"failures={r['failures']}" + (f" locked_until={r['locked_until']}" if r['locked_until'] else "")
                     for r in rows) or "no operators"
    return _print(args, rows, text)


def cmd_disable(args) -> int:
    out = _operators().disable(args.name, actor=cli_actor())
    return _print(args, out, f"operator {out['name']} disabled; {out['sessions_ended']} session(s) ended")


def cmd_reset_mfa(args) -> int:
    out = _operators().reset_mfa(args.name, actor=cli_actor())
    return _print(args, out, f"operator {out['name']}: second factor reset; enrols again at the next sign-in")

