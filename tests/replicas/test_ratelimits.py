"""The shared token buckets (``facegate.storage.ratelimits``) and the service's policy on them
(``facegate.service.auth.RateLimiter``), on SQLite and PostgreSQL, with the clock given.

The buckets' semantics are the per-process limiter's they replace: ``limit`` a minute, bursts
up to ``limit``, a refused request costs nothing, ``retry_after`` until one whole token.
"""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from facegate.errors import FacegateError
from facegate.service.auth import RateLimiter, authenticate
from facegate.storage import ratelimits
from facegate.storage.db import open_database
from gallery_support import BACKENDS, fresh_database, make_settings


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    with fresh_database(request.param, tmp_path) as url:
        engine = open_database(make_settings(tmp_path, url).database)
        yield engine
        engine.dispose()


def rows(db) -> dict:
    with db.connect() as conn:
        return {b: (t, u) for b, t, u in conn.execute(sa.text("SELECT bucket, tokens, updated FROM rate_buckets"))}


def test_a_burst_up_to_the_limit_then_refusals_that_cost_nothing(db):
    taken = [ratelimits.take(db, "k", 60, now=1000.0) for _ in range(61)]
    assert [t.allowed for t in taken] == [True] * 60 + [False]
    assert taken[59].tokens == 0 and taken[60].retry_after_s == pytest.approx(1.0)
    for _ in range(5):               # knocking while empty neither consumes nor moves the clock
        assert not ratelimits.take(db, "k", 60, now=1000.5).allowed
    assert ratelimits.take(db, "k", 60, now=1000.5).retry_after_s == pytest.approx(0.5)
    assert ratelimits.take(db, "k", 60, now=1001.0).allowed          # one token a second
    assert not ratelimits.take(db, "k", 60, now=1001.0).allowed
    assert [ratelimits.take(db, "k", 60, now=2000.0).allowed for _ in range(61)].count(True) == 60   # full, not more


def test_buckets_are_separate_and_follow_their_limit(db):
    assert ratelimits.take(db, "a", 2, now=0.0).tokens == 1
    assert ratelimits.take(db, "b", 2, now=0.0).tokens == 1
    assert ratelimits.take(db, "a", 600, now=0.0).tokens == 0       # a raised limit refills at its own rate
    assert ratelimits.take(db, "a", 600, now=1.0).tokens == pytest.approx(9.0)
    assert ratelimits.take(db, "a", 2, now=100.0).tokens == pytest.approx(1.0)   # a lowered one caps at once


def test_a_clock_going_backwards_adds_nothing(db):
    ratelimits.take(db, "k", 60, now=500.0)
    assert ratelimits.take(db, "k", 60, now=400.0).tokens == pytest.approx(58.0)


def test_the_database_clock_is_used_when_none_is_given(db):
    first, second = ratelimits.take(db, "k", 60), ratelimits.take(db, "k", 60)
    assert first.allowed and second.allowed and 57.9 < second.tokens <= 58.1
    updated = rows(db)["k"][1]
    import time
    assert abs(updated - time.time()) < 60


def test_prune_removes_only_buckets_that_are_full_again(db):
    ratelimits.take(db, "old", 5, now=100.0)
    ratelimits.take(db, "new", 5, now=150.0)
    assert ratelimits.prune(db, now=161.0) == 1
    assert set(rows(db)) == {"new"}


def test_concurrent_takes_never_overspend(db):
    allowed = []
    lock = threading.Lock()

    def worker():
        mine = sum(ratelimits.take(db, "shared", 100, now=10.0).allowed for _ in range(40))
        with lock:
            allowed.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100


def test_the_limiter_answers_rate_limited_with_retry_after(db):
    limiter = RateLimiter(db)
    for _ in range(3):
        limiter.take("key:k_1", 3)
    with pytest.raises(FacegateError) as err:
        limiter.take("key:k_1", 3)
    assert err.value.code == "rate_limited" and err.value.status == 429
    assert err.value.detail["retry_after"] >= 1 and err.value.detail["limit_per_minute"] == 3
    limiter.take("key:k_2", 0)          # no limit: no statement, no row
    assert "key:k_2" not in rows(db)


def test_an_unreachable_database_answers_not_ready():
    gone = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    for call in (lambda: RateLimiter(gone).take("k", 10), lambda: authenticate(gone, "fg_k_x.secret")):
        with pytest.raises(FacegateError) as err:
            call()
        assert err.value.code == "not_ready" and err.value.status == 503 and err.value.detail["retry_after"] == 1
