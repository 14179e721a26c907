"""Console operators (issue 23): argon2id passwords, TOTP enrolled at first sign-in, database
sessions with idle and absolute expiry (time moved through the clock the module reads),
lockout with back-off, CSRF tokens, and the CLI's audited changes."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyotp
import pytest
import sqlalchemy as sa

from gallery_support import BACKENDS, fresh_database, make_settings
from service_support import cli

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self):
        self.now = datetime.now(timezone.utc)

    def __call__(self):
        return self.now


@pytest.fixture(params=BACKENDS)
def ops(request, tmp_path, monkeypatch):
    from facegate.storage.store import Store
    from facegate.workflows.review import operators as module
    clock = Clock()
    monkeypatch.setattr(module, "utcnow", clock)
    data = tmp_path / "data"
    with fresh_database(request.param, data) as url:
        settings = make_settings(data, url, console_max_failures=3, console_lockout_s=60)
        store = Store.open(settings)
        o = module.Operators(settings, store)
        o.clock = clock
        o.store = store
        yield o
        store.close()


def _code(ops, name: str, at: datetime) -> str:
    from facegate.storage.aad import totp_aad
    with ops.db.connect() as conn:
        blob, kid = conn.execute(sa.text("SELECT secret_enc, key_id FROM operator_totp WHERE operator=:n"),
                                 {"n": name}).one()
    return pyotp.TOTP(ops.keys.decrypt(blob, kid, totp_aad(name)).decode()).at(at)


def _audit(ops, operation: str) -> list[dict]:
    from facegate.storage import audit
    with ops.db.connect() as conn:
        return audit.rows(conn, operation=operation, limit=1000)


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
    with pytest.raises(FacegateError) as bad:
        ops.verify_code(s, "000000" if _code(ops, "ana", ops.clock.now) != "000000" else "111111")
    assert bad.value.code == "sign_in_failed"
    s = ops.verify_code(s, _code(ops, "ana", ops.clock.now))
    assert s.stage == "active" and ops.session(secret).stage == "active"
    # a code is used once
    ops.clock.now += timedelta(seconds=1)
    secret2, s2 = ops.sign_in("ana", PASSWORD)
    assert s2.stage == "mfa"
    with pytest.raises(FacegateError) as replay:
        ops.verify_code(s2, _last_code(ops))
    assert replay.value.code in ("sign_in_failed", "operator_locked")
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


def _last_code(ops) -> str:
    """The code accepted last (its time step is remembered: it is refused a second time)."""
    with ops.db.connect() as conn:
        step = conn.execute(sa.text("SELECT last_step FROM operator_totp WHERE operator='ana'")).scalar()
    return _code(ops, "ana", datetime.fromtimestamp(step * 30, timezone.utc))


def test_absolute_expiry_csrf_and_sign_out(ops):
    from facegate.errors import FacegateError
    ops.add("bo", "supervisor", PASSWORD)
    secret, s = ops.sign_in("bo", PASSWORD)
    ops.enrolment(s)
    ops.verify_code(s, _code(ops, "bo", ops.clock.now))
    live = ops.session(secret)
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
    ops.verify_code(s, _code(ops, "bo", ops.clock.now))
    ops.sign_out(ops.session(secret))
    with pytest.raises(FacegateError):
        ops.session(secret)
    assert _audit(ops, "console.sign_out")[-1]["actor"] == "operator:bo"


def test_lockout_with_back_off_and_everything_audited(ops):
    from facegate.errors import FacegateError
    ops.add("cy", "auditor", PASSWORD)
    for i in range(3):
        with pytest.raises(FacegateError) as e:
            ops.sign_in("cy", "wrong password!!")
    assert e.value.code == "operator_locked" and 55 <= e.value.detail["retry_after"] <= 60
    with pytest.raises(FacegateError) as e:                # the right password does not help while locked
        ops.sign_in("cy", PASSWORD)
    assert e.value.code == "operator_locked"
    ops.clock.now += timedelta(seconds=61)
    with pytest.raises(FacegateError) as e:                # one more failure: locked twice as long
        ops.sign_in("cy", "wrong again!!!!")
    assert e.value.code == "operator_locked" and 115 <= e.value.detail["retry_after"] <= 120
    ops.clock.now += timedelta(seconds=121)
    secret, s = ops.sign_in("cy", PASSWORD)
    assert s.stage == "enrol"
    with pytest.raises(FacegateError) as e:
        ops.sign_in("nobody", PASSWORD)
    assert e.value.code == "sign_in_failed"
    outcomes = [(r["actor"], r["outcome"]) for r in _audit(ops, "console.sign_in")]
    assert outcomes.count(("operator:cy", "sign_in_failed")) == 4
    assert ("operator:cy", "operator_locked") in outcomes and ("operator:cy", "password_ok") in outcomes
    assert outcomes[-1] == ("operator:nobody", "sign_in_failed")


def test_disable_and_reset_mfa_end_sessions(ops):
    from facegate.errors import FacegateError
    ops.add("di", "reviewer", PASSWORD)
    secret, s = ops.sign_in("di", PASSWORD)
    ops.enrolment(s)
    ops.verify_code(s, _code(ops, "di", ops.clock.now))
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
    assert json.loads(cli(env, "operators", "list", "--json").stdout)[0]["name"] == "eve"
    assert json.loads(cli(env, "operators", "reset-mfa", "eve", "--json").stdout)["mfa"] is False
    assert json.loads(cli(env, "operators", "disable", "eve", "--json").stdout)["status"] == "disabled"
    dup = cli(env, "operators", "disable", "nobody", check=False)
    assert dup.returncode == 2 and "unknown_operator" in dup.stderr
    entries = [json.loads(line) for line in cli(env, "audit", "list", "--json").stdout.splitlines() if line.strip()]
    ops = [e["operation"] for e in entries if e["operation"].startswith("operator.")]
    assert ops == ["operator.add", "operator.reset_mfa", "operator.disable"]
    assert all(e["actor"].startswith("cli:") for e in entries if e["operation"].startswith("operator."))
