"""Console operators: ``operators add|list|grant|unlock|link-sso|disable|reset-mfa``.

Each change is one write transaction with its audit row (``operator.add``, ``operator.grant``,
``operator.unlock``, ``operator.link_sso``, ``operator.disable``, ``operator.reset_mfa``),
attributed to ``cli:<user>``. A password is read from standard input
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
    a.add_argument("--sso-subject", metavar="SUB",
                   help="no password: this operator is the identity provider's user with this subject (sub)")
    a.add_argument("--sso-issuer", metavar="URL", help="the provider (default: FACEGATE_CONSOLE_OIDC_ISSUER)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_add)
    g = osub.add_parser("grant", help="give an operator a role (single sign-on operators created without one)")
    g.add_argument("name")
    g.add_argument("--role", choices=OPERATOR_ROLES, required=True)
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_grant)
    u = osub.add_parser("unlock", help="forget the failed sign-ins counted against an operator's name and devices")
    u.add_argument("name")
    u.add_argument("--source", metavar="ADDRESS", help="also forget those counted against this source address")
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=cmd_unlock)
    ls_ = osub.add_parser("link-sso", help="make an operator without a password an identity provider's user")
    ls_.add_argument("name")
    ls_.add_argument("--subject", required=True, metavar="SUB")
    ls_.add_argument("--issuer", metavar="URL", help="default: FACEGATE_CONSOLE_OIDC_ISSUER")
    ls_.add_argument("--json", action="store_true")
    ls_.set_defaults(func=cmd_link_sso)
    ls = osub.add_parser("list", help="operators, their role, status, failed sign-ins and second factor")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    d = osub.add_parser("disable", help="disable an operator and end their sessions")
    d.add_argument("name")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_disable)
    r = osub.add_parser("reset-mfa", help="forget an operator's second factor (they enrol again at the next sign-in)")
    r.add_argument("name")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_reset_mfa)


def _password(args) -> str | None:
    if args.sso_subject:
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
    out = _operators().add(args.name, args.role, _password(args), display_name=args.display_name, actor=cli_actor(),
                           sso_subject=args.sso_subject, sso_issuer=args.sso_issuer)
    how = "signs in through single sign-on" if out["sso"] else "TOTP is enrolled at the first sign-in"
    return _print(args, out, f"operator {out['name']} ({out['role']}) added; {how}")


def cmd_list(args) -> int:
    rows = _operators().list()
    text = "\n".join(f"{r['name']:<24} {r['role'] or '(no role)':<10} {r['status']:<8} "
                     f"{'sso' if r['sso'] else 'mfa=' + ('yes' if r['mfa'] else 'no ')} failures={r['failures']}"
                     + (f" wait={r['wait_s']}s" if r['wait_s'] else "") for r in rows) or "no operators"
    return _print(args, rows, text)


def cmd_grant(args) -> int:
    out = _operators().grant(args.name, args.role, actor=cli_actor())
    return _print(args, out, f"operator {out['name']}: role {out['role']} (was {out['was'] or 'none'})")


def cmd_unlock(args) -> int:
    out = _operators().unlock(args.name, source=args.source, actor=cli_actor())
    return _print(args, out, f"operator {out['name']}: failed sign-ins forgotten ({out['counts_cleared']} count(s))")


def cmd_link_sso(args) -> int:
    out = _operators().link_sso(args.name, args.subject, args.issuer, actor=cli_actor())
    return _print(args, out, f"operator {out['name']} is {out['sso_subject']} at {out['sso_issuer']}")


def cmd_disable(args) -> int:
    out = _operators().disable(args.name, actor=cli_actor())
    return _print(args, out, f"operator {out['name']} disabled; {out['sessions_ended']} session(s) ended")


def cmd_reset_mfa(args) -> int:
    out = _operators().reset_mfa(args.name, actor=cli_actor())
    return _print(args, out, f"operator {out['name']}: second factor reset; enrols again at the next sign-in")
