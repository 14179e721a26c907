"""Console operators (issues 23 and 31): argon2id passwords hashed outside the write lock, TOTP
enrolled at first sign-in by the one session it was shown to, database sessions renewed when the
second factor passes, with idle and absolute expiry (time moved through the clock the module
reads), growing waits after failures per source, name and device (never a lock an outsider
holds), single sign-on operators keyed by (issuer, sub), CSRF tokens, and the CLI's audited
changes."""
from __future__ import annotations

import json
from datetime import timedelta

import pyotp
import pytest
import sqlalchemy as sa

from gallery_support import BACKENDS, Clock, fresh_database, make_settings
from service_support import cli

PASSWORD = "correct horse battery"


@pytest.fixture(params=BACKENDS)
def ops(request, tmp_path, monkeypatch):
    from facegate.storage.store import Store
    from facegate.workflows.review import operators as module
    clock = Clock()
    monkeypatch.setattr(module, "utcnow", clock)
    data = tmp_path / "data"
    with fresh_database(request.param, data) as url:
        settings = make_settings(data, url, console_max_failures=3, console_lockout_s=60,
                                 console_source_max_failures=6, console_throttle_max_s=300)
        store = Store.open(settings)
        o = module.Operators(settings, store)
        o.clock = clock
        o.store = store
        yield o
        store.close()


ISSUER = "https://idp.example"
OUTSIDE = "203.0.113.66"
AT_DESK = "10.1.2.3"


def _code(ops, name: str, at) -> str:
    """The current code of an operator's confirmed secret."""
    from facegate.storage.aad import totp_aad
    with ops.db.connect() as conn:
        blob, kid = conn.execute(sa.text("SELECT secret_enc, key_id FROM operator_totp WHERE operator=:n "
                                         "AND confirmed_at IS NOT NULL"), {"n": name}).one()
    return pyotp.TOTP(ops.keys.decrypt(blob, kid, totp_aad(name)).decode()).at(at)


def _audit(ops, operation: str) -> list[dict]:
    from facegate.storage import audit
    with ops.db.connect() as conn:
        return audit.rows(conn, operation=operation, limit=1000)


def _enrol(ops, name: str, source: str | None = AT_DESK):
    """Sign in for the first time and enrol: (the active session's secret, the session, the device cookie)."""
    secret, s = ops.sign_in(name, PASSWORD, source)
    totp = pyotp.TOTP(ops.enrolment(s)["secret"])
    done = ops.verify_code(s, totp.at(ops.clock.now), source)
    return done.secret, done.session, done.device


def test_first_sign_in_enrols_totp_then_sessions_expire(ops):
    from facegate.errors import FacegateError
    ops.add("ana", "reviewer", PASSWORD)
    with ops.db.connect() as conn:
        stored = conn.execute(sa.text("SELECT password_hash FROM operators WHERE name='ana'")).scalar()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    secret, s = ops.sign_in("ana", PASSWORD)
    assert s.stage == "enrol"
    enrol = ops.enrolment(s)
    assert enrol["qr_svg"].startswith("data:image/svg+xml") and enrol["uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(enrol["secret"])
    with pytest.raises(FacegateError) as bad:
        ops.verify_code(s, "000000" if totp.at(ops.clock.now) != "000000" else "111111")
    assert bad.value.code == "sign_in_failed"
    done = ops.verify_code(s, totp.at(ops.clock.now))
    assert done.session.stage == "active" and ops.session(done.secret).stage == "active"
    # the session that asked for the second factor ended; the new one has its own id and CSRF token
    assert done.secret != secret and done.session.csrf != s.csrf and done.session.id_hash != s.id_hash
    with pytest.raises(FacegateError) as old:
        ops.session(secret)
    assert old.value.code == "session_expired"
    secret = done.secret
    # a code is used once
    ops.clock.now += timedelta(seconds=1)
    secret2, s2 = ops.sign_in("ana", PASSWORD)
    assert s2.stage == "mfa"
    with pytest.raises(FacegateError) as replay:
        ops.verify_code(s2, totp.at(ops.clock.now - timedelta(seconds=1)))
    assert replay.value.code == "sign_in_failed"
    # idle timeout: 15 minutes without a request
    ops.clock.now += timedelta(minutes=14)
    assert ops.session(secret).operator == "ana"
    ops.clock.now += timedelta(minutes=14)
    assert ops.session(secret).operator == "ana"          # used 14 min ago: still alive
    ops.clock.now += timedelta(minutes=15, seconds=1)
    with pytest.raises(FacegateError) as gone:
        ops.session(secret)
    assert gone.value.code == "session_expired"
    assert _audit(ops, "console.session_expired")[-1]["actor"] == "operator:ana"


def test_the_secret_being_enrolled_belongs_to_one_session_and_is_shown_once(ops):
    """Whoever knows the password while an operator enrols cannot read the secret the operator
    was shown, nor confirm one of their own after the operator did."""
    from facegate.errors import FacegateError
    ops.add("fay", "reviewer", PASSWORD)
    _, mine = ops.sign_in("fay", PASSWORD)
    _, theirs = ops.sign_in("fay", PASSWORD, OUTSIDE)
    shown = ops.enrolment(mine)["secret"]
    with pytest.raises(FacegateError) as again:
        ops.enrolment(mine)
    assert again.value.code == "enrolment_shown" and again.value.status == 409
    other = ops.enrolment(theirs)["secret"]
    assert other != shown
    with pytest.raises(FacegateError):                      # my code is no good for their session
        ops.verify_code(theirs, pyotp.TOTP(shown).at(ops.clock.now), OUTSIDE)
    from facegate.storage.keyrotation import rotate_data_key
    rotate_data_key(ops.store)                              # the shown secret is resealed with everything else
    ops.verify_code(mine, pyotp.TOTP(shown).at(ops.clock.now))
    with pytest.raises(FacegateError) as late:              # they cannot replace it with theirs
        ops.verify_code(theirs, pyotp.TOTP(other).at(ops.clock.now), OUTSIDE)
    assert late.value.code == "forbidden"
    assert _code(ops, "fay", ops.clock.now) == pyotp.TOTP(shown).at(ops.clock.now)
    assert len(_audit(ops, "console.mfa_enrolment")) == 2


def test_absolute_expiry_csrf_and_sign_out(ops):
    from facegate.errors import FacegateError
    ops.add("bo", "supervisor", PASSWORD)
    secret, live, _ = _enrol(ops, "bo")
    ops.check_csrf(live, live.csrf)
    for token in (None, "", "x" * 43, live.csrf + "x"):
        with pytest.raises(FacegateError) as e:
            ops.check_csrf(live, token)
        assert e.value.code == "csrf_failed"
    for _ in range(8 * 4):                                # used every 15 min, still ends after 8 h
        ops.clock.now += timedelta(minutes=14, seconds=59)
        try:
            ops.session(secret)
        except FacegateError as exc:
            assert exc.code == "session_expired"
            break
    assert ops.clock.now - live.created_at >= timedelta(hours=8) - timedelta(minutes=15)
    secret, s = ops.sign_in("bo", PASSWORD)
    ops.clock.now += timedelta(seconds=31)
    done = ops.verify_code(s, _code(ops, "bo", ops.clock.now))
    ops.sign_out(ops.session(done.secret))
    with pytest.raises(FacegateError):
        ops.session(done.secret)
    assert _audit(ops, "console.sign_out")[-1]["actor"] == "operator:bo"


def _fail(ops, name: str, source: str, password: str = "wrong password!!", device: str | None = None):
    from facegate.errors import FacegateError
    with pytest.raises(FacegateError) as e:
        ops.sign_in(name, password, source, device)
    return e.value


def test_failures_slow_down_per_name_and_source_the_same_for_unknown_names(ops):
    ops.add("cy", "auditor", PASSWORD)
    answers = {}
    for name, source in (("cy", "198.51.100.1"), ("nobody", "198.51.100.2")):
        seen = [_fail(ops, name, source) for _ in range(4)]
        answers[name] = [(e.code, e.status, e.detail.get("retry_after")) for e in seen]
    # a real name and an unknown one get the same answers: nothing tells them apart
    assert answers["cy"] == answers["nobody"] == [("sign_in_failed", 401, None)] * 2 + [
        ("sign_in_throttled", 429, 60)] * 2
    # the wait grows with each further failure, up to console_throttle_max_s
    for expected in (120, 240, 300, 300):
        ops.clock.now += timedelta(seconds=1000)
        assert _fail(ops, "cy", "198.51.100.1").detail["retry_after"] == expected
    # the right password waits too, from a browser that never completed a sign-in as cy
    assert _fail(ops, "cy", "198.51.100.9", PASSWORD).code == "sign_in_throttled"
    ops.clock.now += timedelta(seconds=301)
    assert ops.sign_in("cy", PASSWORD, "198.51.100.9")[1].stage == "enrol"
    # one source trying many names waits as well, past console_source_max_failures
    for i in range(6):
        _fail(ops, f"guess{i}", "192.0.2.50")
    assert _fail(ops, "cy", "192.0.2.50", PASSWORD).code == "sign_in_throttled"


def test_an_outsider_cannot_keep_an_operator_out_of_their_own_browser(ops):
    """The device cookie of a complete sign-in takes the operator past the wait that failures
    under their name cause; without it the name waits, and ``unlock`` ends the wait."""
    ops.add("dag", "supervisor", PASSWORD)
    _, _, device = _enrol(ops, "dag")
    for _ in range(6):
        _fail(ops, "dag", OUTSIDE)
    assert _fail(ops, "dag", AT_DESK, PASSWORD).code == "sign_in_throttled"      # a new browser waits
    secret, s = ops.sign_in("dag", PASSWORD, AT_DESK, device)                    # the operator's does not
    assert s.stage == "mfa"
    ops.clock.now += timedelta(seconds=31)
    assert ops.verify_code(s, _code(ops, "dag", ops.clock.now), AT_DESK, device).session.stage == "active"
    # a device cookie is the operator's own: another name, or an altered one, counts for nothing
    ops.add("eli", "reviewer", PASSWORD)
    assert ops.device_id("eli", device) is None and ops.device_id("dag", device[:-2] + "AA") is None
    # wrong passwords from the device slow the device down, not the name's other browsers' waits
    for _ in range(3):
        _fail(ops, "dag", AT_DESK, device=device)
    assert _fail(ops, "dag", AT_DESK, PASSWORD, device).code == "sign_in_throttled"
    assert ops.unlock("dag")["counts_cleared"] >= 2
    assert ops.sign_in("dag", PASSWORD, AT_DESK)[1].stage == "mfa"
    assert [r["detail"]["operator"] for r in _audit(ops, "operator.unlock")] == ["dag"]
    assert [r["wait_s"] for r in ops.list() if r["name"] == "dag"] == [0]


def test_password_hashing_runs_outside_the_write_lock(ops, monkeypatch):
    """argon2id (64 MiB, 3 passes) must not hold the database-wide write lock: every
    enrolment, certification and audit write would queue behind anonymous sign-ins."""
    from contextlib import contextmanager
    from facegate.workflows.review import operators as module
    held = []
    real_tx, real_hasher = module.write_transaction, module._hasher

    @contextmanager
    def tracked(db):
        held.append(True)
        try:
            with real_tx(db) as conn:
                yield conn
        finally:
            held.pop()

    class Hasher:
        def __getattr__(self, name):
            return getattr(real_hasher, name)

        def verify(self, *a):
            assert not held, "argon2id ran inside a write transaction"
            return real_hasher.verify(*a)

        def hash(self, *a):
            assert not held, "argon2id ran inside a write transaction"
            return real_hasher.hash(*a)

    ops.add("gil", "reviewer", PASSWORD)
    monkeypatch.setattr(module, "write_transaction", tracked)
    monkeypatch.setattr(module, "_hasher", Hasher())
    _fail(ops, "gil", AT_DESK)
    _fail(ops, "nobody", AT_DESK)
    assert ops.sign_in("gil", PASSWORD, AT_DESK)[1].stage == "enrol"


def test_failed_sign_ins_are_audited_under_the_refusals_cap(ops):
    from facegate.storage.audit import REFUSALS_PER_MINUTE
    unaudited = []
    ops.on_unaudited = lambda: unaudited.append(1)
    for i in range(REFUSALS_PER_MINUTE + 10):
        _fail(ops, f"someone{i % 7}", OUTSIDE)
    rows = [r for r in _audit(ops, "console.sign_in") if r["detail"].get("source") == OUTSIDE]
    # the bucket refills by the database's clock while the 40 tries run (half a row a second)
    assert REFUSALS_PER_MINUTE <= len(rows) <= REFUSALS_PER_MINUTE + 5
    assert len(rows) + len(unaudited) == REFUSALS_PER_MINUTE + 10
    assert {r["outcome"] for r in rows} == {"sign_in_failed", "sign_in_throttled"}


def test_single_sign_on_is_the_providers_identity_never_a_name(ops):
    from facegate.errors import FacegateError
    ops.add("olga", "supervisor", PASSWORD)
    # a provider user who calls themselves olga is not the local olga
    with pytest.raises(FacegateError) as e:
        ops.open_sso(ISSUER, "u-123", "olga", AT_DESK)
    assert e.value.code == "sso_not_registered" and e.value.status == 403
    assert [r["name"] for r in ops.list()] == ["olga"]
    # registered by an administrator: their (issuer, sub), their role, whatever name they give
    ops.add("pia", "reviewer", None, sso_subject="u-123", sso_issuer=ISSUER)
    done = ops.open_sso(ISSUER, "u-123", "olga", AT_DESK)
    assert (done.session.operator, done.session.role, done.session.via) == ("pia", "reviewer", "oidc")
    with pytest.raises(FacegateError):                      # same sub at another provider: someone else
        ops.open_sso("https://other.example", "u-123", "pia", AT_DESK)
    with pytest.raises(FacegateError) as e:                 # a single sign-on operator has no password
        ops.sign_in("pia", PASSWORD, AT_DESK)
    assert e.value.code == "sign_in_failed"
    with pytest.raises(FacegateError) as e:
        ops.add("pia2", "reviewer", PASSWORD, sso_subject="u-9")
    assert e.value.code == "invalid_request"
    # the wait that failures under the name cause holds for single sign-on too
    for _ in range(3):
        _fail(ops, "pia", OUTSIDE)
    with pytest.raises(FacegateError) as e:
        ops.open_sso(ISSUER, "u-123", None, AT_DESK)
    assert e.value.code == "sign_in_throttled"
    assert ops.open_sso(ISSUER, "u-123", None, AT_DESK, done.device).session.operator == "pia"


def test_auto_created_single_sign_on_operators_have_no_role_until_granted(ops):
    import dataclasses
    from facegate.errors import FacegateError
    ops.settings = dataclasses.replace(ops.settings, console_oidc_auto_create=True)
    ops.add("olga", "supervisor", PASSWORD)
    with pytest.raises(FacegateError) as e:
        ops.open_sso(ISSUER, "u-7", "olga", AT_DESK)
    assert e.value.code == "sso_not_registered"
    created = [r for r in ops.list() if r["sso"]]
    assert len(created) == 1 and created[0]["name"].startswith("sso-") and created[0]["role"] is None
    name = created[0]["name"]
    with pytest.raises(FacegateError) as e:                 # the same again: still no role
        ops.open_sso(ISSUER, "u-7", "olga", AT_DESK)
    assert e.value.code == "sso_not_registered" and len([r for r in ops.list() if r["sso"]]) == 1
    ops.grant(name, "auditor")
    assert ops.open_sso(ISSUER, "u-7", "olga", AT_DESK).session.role == "auditor"
    assert [r["role"] for r in ops.list() if r["name"] == "olga"] == ["supervisor"]     # untouched


def test_disable_and_reset_mfa_end_sessions(ops):
    from facegate.errors import FacegateError
    ops.add("di", "reviewer", PASSWORD)
    secret, _, _ = _enrol(ops, "di")
    assert ops.reset_mfa("di")["sessions_ended"] == 1
    with pytest.raises(FacegateError):
        ops.session(secret)
    secret, s = ops.sign_in("di", PASSWORD)
    assert s.stage == "enrol"                               # enrols again
    ops.disable("di")
    with pytest.raises(FacegateError):
        ops.session(secret)
    with pytest.raises(FacegateError) as e:
        ops.sign_in("di", PASSWORD)
    assert e.value.code == "sign_in_failed"
    with pytest.raises(FacegateError) as e:
        ops.add("di", "reviewer", PASSWORD)
    assert e.value.code == "operator_exists"
    for bad in ({"name": "A B", "role": "reviewer"}, {"name": "ok", "role": "admin"}):
        with pytest.raises(FacegateError):
            ops.add(bad["name"], bad["role"], PASSWORD)
    with pytest.raises(FacegateError):
        ops.add("short", "reviewer", "short")


def test_cli_operators_are_audited(tmp_path):
    import os
    env = {**os.environ, "FACEGATE_DATA_DIR": str(tmp_path)}
    env.pop("FACEGATE_DATABASE_URL", None)
    import subprocess
    from service_support import FACEGATE, REPO
    proc = subprocess.run([*FACEGATE, "operators", "add", "eve", "--role", "reviewer", "--password-stdin", "--json"],
                          input=PASSWORD + "\n", env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["role"] == "reviewer"
    sso = json.loads(cli(env, "operators", "add", "sam", "--role", "auditor", "--sso-subject", "u-1",
                         "--sso-issuer", ISSUER, "--json").stdout)
    assert sso["sso"] is True
    listed = {r["name"]: r for r in json.loads(cli(env, "operators", "list", "--json").stdout)}
    assert listed["eve"]["sso"] is False and listed["sam"]["sso"] is True
    assert json.loads(cli(env, "operators", "grant", "sam", "--role", "reviewer", "--json").stdout)["was"] == "auditor"
    assert json.loads(cli(env, "operators", "unlock", "eve", "--json").stdout)["name"] == "eve"
    assert json.loads(cli(env, "operators", "reset-mfa", "eve", "--json").stdout)["mfa"] is False
    assert json.loads(cli(env, "operators", "disable", "eve", "--json").stdout)["status"] == "disabled"
    dup = cli(env, "operators", "disable", "nobody", check=False)
    assert dup.returncode == 2 and "unknown_operator" in dup.stderr
    entries = [json.loads(line) for line in cli(env, "audit", "list", "--json").stdout.splitlines() if line.strip()]
    ops = [e["operation"] for e in entries if e["operation"].startswith("operator.")]
    assert ops == ["operator.add", "operator.add", "operator.grant", "operator.unlock", "operator.reset_mfa",
                   "operator.disable"]
    assert all(e["actor"].startswith("cli:") for e in entries if e["operation"].startswith("operator."))
