"""The change feed (``facegate.storage.changefeed``) and the key cache that relies on it
(``facegate.service.auth.KeyCache``).

PostgreSQL: a notification arrives at commit and never for a rolled-back write; the two writers
that announce (change-log rows, key revocations) do; a listener whose connection is cut
reports it, reconnects and asks for a resync. SQLite: ``notify`` does nothing. The cache: off
until switched on, a revocation drops the key, and a lookup that raced a revocation cannot put
the stale key back.
"""
from __future__ import annotations

import queue
import time

import numpy as np
import pytest
import sqlalchemy as sa

from facegate.service.auth import KeyCache
from facegate.storage import apikeys, changefeed
from facegate.storage.apikeys import ApiKey
from facegate.storage.db import open_database, write_transaction
from facegate.storage.store import Store
from gallery_support import fresh_database, make_settings


@pytest.fixture
def pg(tmp_path):
    with fresh_database("postgresql", tmp_path) as url:
        engine = open_database(url)
        yield url, engine
        engine.dispose()


class Feed:
    """A started listener whose events land in one queue: ('notify', channel, payload), ('resync',), ('lost',)."""

    def __init__(self, url: str):
        self.events: queue.Queue = queue.Queue()
        self.listener = changefeed.Listener(
            url, changefeed.CHANNELS, lambda c, p: self.events.put(("notify", c, p)),
            on_resync=lambda: self.events.put(("resync",)), on_lost=lambda e: self.events.put(("lost",)),
            wait_s=0.1, backoff_s=(0.05, 0.2)).start()
        assert self.next() == ("resync",)           # every connect asks for a resync, the first one too

    def next(self, timeout: float = 5.0):
        return self.events.get(timeout=timeout)

    def quiet(self, seconds: float = 0.5) -> bool:
        try:
            self.events.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


@pytest.mark.postgres
def test_notifications_arrive_at_commit_and_never_for_a_rollback(pg):
    url, db = pg
    feed = Feed(url)
    try:
        with pytest.raises(RuntimeError):
            with write_transaction(db) as conn:
                changefeed.notify(conn, changefeed.CHANGES, "rolled back")
                raise RuntimeError("abort")
        with write_transaction(db) as conn:
            changefeed.notify(conn, changefeed.CHANGES, "1")
            changefeed.notify(conn, changefeed.CHANGES, "1")      # the same twice in one transaction: once
            assert feed.quiet(0.3), "delivered before the commit"
        assert feed.next() == ("notify", changefeed.CHANGES, "1")
        assert feed.quiet(0.3)
    finally:
        feed.listener.stop()


@pytest.mark.postgres
def test_enrolments_and_revocations_announce_themselves(pg, tmp_path):
    url, db = pg
    feed = Feed(url)
    store = Store.open(make_settings(tmp_path, url))
    try:
        store.add_subject("P-1")
        store.add_template("P-1", np.ones(8, dtype=np.float32), pack_id="p")
        assert feed.next() == ("notify", changefeed.CHANGES, "")
        _, key = apikeys.create_key(db, "app")
        apikeys.revoke_key(db, key.key_id)
        assert feed.next() == ("notify", changefeed.KEYS, key.key_id)
        apikeys.revoke_key(db, key.key_id)                        # revoking again changes nothing: no notice
        assert feed.quiet(0.3)
    finally:
        feed.listener.stop()
        store.close()


@pytest.mark.postgres
def test_a_cut_connection_is_reported_then_resynced(pg):
    url, db = pg
    feed = Feed(url)
    try:
        with db.connect() as conn:
            killed = conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                          "WHERE application_name = 'facegate-changefeed' "
                                          "AND datname = current_database()")).scalars().all()
        assert killed == [True]
        assert feed.next() == ("lost",)
        event = feed.next()
        while event == ("lost",):
            event = feed.next()
        assert event == ("resync",)
        assert feed.listener.status()["connected"] and feed.listener.reconnects == 1
        with write_transaction(db) as conn:                       # and it listens again
            changefeed.notify(conn, changefeed.KEYS, "k_1")
        assert feed.next() == ("notify", changefeed.KEYS, "k_1")
    finally:
        feed.listener.stop()
    assert not feed.listener.status()["connected"]


def test_sqlite_has_no_feed(tmp_path):
    db = open_database(make_settings(tmp_path, "").database)
    with write_transaction(db) as conn:
        changefeed.notify(conn, changefeed.CHANGES)               # nothing to do, and no error
    assert not changefeed.supported(db.url) and changefeed.supported("postgresql+psycopg://u@h/d")
    assert changefeed.conninfo("postgresql+psycopg://u:p@h:5433/d?sslmode=require") == {
        "user": "u", "password": "p", "host": "h", "port": 5433, "dbname": "d", "sslmode": "require"}
    db.dispose()


# ------------------------------------------------------------------ the key cache
KEY = ApiKey("k_1", "app")
SECRET = "fg_k_1.secret"


def test_the_key_cache_is_off_until_the_feed_switches_it_on():
    cache = KeyCache(ttl=60)
    cache.put(SECRET, KEY)
    assert cache.get(SECRET) is None and not cache.enabled
    cache.reset(enabled=True)
    cache.put(SECRET, KEY)
    assert cache.get(SECRET) == KEY
    cache.reset(enabled=False)               # the feed broke: empty, and off
    assert cache.get(SECRET) is None and len(cache) == 0
    cache.put(SECRET, KEY)
    assert len(cache) == 0


def test_a_revocation_drops_the_key_and_a_racing_lookup_cannot_put_it_back():
    cache = KeyCache(ttl=60, enabled=True)
    cache.put(SECRET, KEY)
    cache.put("fg_k_2.other", ApiKey("k_2", "app"))
    before = cache.generation                # a lookup starts ...
    cache.drop("k_1")                        # ... the revocation is announced meanwhile ...
    assert cache.get(SECRET) is None and cache.get("fg_k_2.other") is not None
    cache.put(SECRET, KEY, before)           # ... and the lookup's stale answer is not cached
    assert cache.get(SECRET) is None
    cache.put(SECRET, KEY, cache.generation)
    assert cache.get(SECRET) == KEY


def test_cached_keys_expire_after_the_ttl():
    cache = KeyCache(ttl=0.05, enabled=True)
    cache.put(SECRET, KEY)
    time.sleep(0.1)
    assert cache.get(SECRET) is None
    assert not KeyCache(ttl=0, enabled=True).enabled
