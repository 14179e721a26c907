"""The change feed: PostgreSQL ``NOTIFY`` from write transactions, ``LISTEN`` in every replica.

Two channels:

- :data:`CHANGES`: change-log rows were written (:func:`log_changes`);
  a replica then re-reads the change log at once instead of at its next poll;
- :data:`KEYS`: an API key was revoked (:func:`facegate.storage.apikeys.mark_revoked`); the
  payload is its key id, and a replica drops it from its key cache.
- :data:`REVIEWS`: a kiosk's review case was decided or expired
  (:mod:`facegate.workflows.review.desk`); the payload is the case id, and a replica wakes the
  kiosks waiting for it.

Decisions, and why:

- :func:`notify` runs **inside** the writer's transaction, so PostgreSQL delivers it at commit
  and never for a rolled-back write; a listener never hears of a change it cannot read yet.
- A notification is a **hint, not the data**: the change log (and the key table) stay the
  truth. A listener that was disconnected may have missed hints, so after every (re)connect it
  reports ``resync`` and the caller re-reads everything it caches (the index syncs, the key
  cache empties). Polling stays as the fallback; on SQLite there is no feed and polling is
  the only mechanism (``notify`` does nothing there).
- :class:`Listener` has **its own connection** (autocommit, outside the engine's pool: a
  pooled connection would stop listening when returned), in a daemon thread that waits with
  ``Connection.notifies(timeout=...)`` and reconnects with exponential backoff. TCP keepalives
  and a ``SELECT 1`` after each quiet minute notice a connection that died silently.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

import sqlalchemy as sa

from facegate.clock import utcnow
from facegate.storage.schema import change_log

log = logging.getLogger(__name__)

CHANGES = "facegate_changes"
KEYS = "facegate_keys"
REVIEWS = "facegate_reviews"
CHANNELS = (CHANGES, KEYS, REVIEWS)


def notify(conn: sa.Connection, channel: str, payload: str = "") -> None:
    """Announce ``channel`` (with ``payload``) when the caller's transaction commits
    (PostgreSQL; nothing on SQLite). Identical notifications of one transaction arrive once."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


def log_changes(conn: sa.Connection, op: str, rows: list[tuple[int, int, str]]) -> None:
    """Change-log rows (template id, subject pk, pack id) for index replicas, in the caller's
    transaction, announced on :data:`CHANGES` at commit."""
    if rows:
        now = utcnow()
        conn.execute(change_log.insert(), [dict(op=op, template_id=t, subject_pk=s, pack_id=p, created_at=now)
                                           for t, s, p in rows])
        notify(conn, CHANGES)


def supported(url: str | sa.URL) -> bool:
    """Whether the database at ``url`` has a change feed (PostgreSQL)."""
    return sa.engine.make_url(url).get_backend_name() == "postgresql"


def conninfo(url: str | sa.URL) -> dict:
    """psycopg connection arguments for a SQLAlchemy PostgreSQL URL."""
    u = sa.engine.make_url(url)
    args = {k: v for k, v in u.translate_connect_args(username="user", database="dbname").items() if v is not None}
    args.update({k: (v[-1] if isinstance(v, tuple) else v) for k, v in u.query.items()})
    return args


class Listener:
    """``LISTEN`` on ``channels`` in a thread, calling ``on_notify(channel, payload)`` for each
    notification, ``on_resync()`` after each successful (re)connect (hints may have been
    missed: re-read everything) and ``on_lost(error)`` when the connection breaks. The
    callbacks run in the listener's thread and must be quick and thread-safe."""

    def __init__(self, url: str | sa.URL, channels: Sequence[str], on_notify: Callable[[str, str], None], *,
                 on_resync: Callable[[], None] = lambda: None,
                 on_lost: Callable[[str], None] = lambda error: None,
                 wait_s: float = 0.5, backoff_s: tuple[float, float] = (0.2, 5.0), ping_s: float = 60.0,
                 connect_timeout_s: int = 5):
        self.url = url
        self.channels = tuple(channels)
        self.on_notify, self.on_resync, self.on_lost = on_notify, on_resync, on_lost
        self.wait_s, self.backoff_s, self.ping_s = wait_s, backoff_s, ping_s
        self.connect_timeout_s = connect_timeout_s
        self.connected = threading.Event()
        self.reconnects = 0        # successful connects after the first
        self.received = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Listener":
        self._thread = threading.Thread(target=self._run, name="facegate-changefeed", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening (returns within about ``wait_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def status(self) -> dict:
        return {"connected": self.connected.is_set(), "reconnects": self.reconnects,
                "received": self.received, "last_error": self.last_error}

    # ------------------------------------------------------------------ the thread
    def _connect(self):
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(autocommit=True, connect_timeout=self.connect_timeout_s, keepalives=1,
                               keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                               application_name="facegate-changefeed", **conninfo(self.url))
        try:
            for channel in self.channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except Exception:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        delay = self.backoff_s[0]
        first = True
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except Exception as exc:  # the database is down or unreachable: retry with backoff
                self._lost(exc)
                self._stop.wait(delay)
                delay = min(2 * delay, self.backoff_s[1])
                continue
            delay = self.backoff_s[0]
            self.connected.set()
            self.last_error = None
            if not first:
                self.reconnects += 1
                log.info("change feed reconnected; resynchronising")
            first = False
            try:
                self._safe(self.on_resync)
                self._listen(conn)
            except Exception as exc:
                self._lost(exc)
            finally:
                self.connected.clear()
                try:
                    conn.close()
                except Exception:
                    pass

    def _listen(self, conn) -> None:
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            got = False
            for note in conn.notifies(timeout=self.wait_s):
                got = True
                self.received += 1
                self._safe(self.on_notify, note.channel, note.payload)
                if self._stop.is_set():
                    return
            now = time.monotonic()
            if got:
                quiet_since = now
            elif now - quiet_since >= self.ping_s:
                conn.execute("SELECT 1")    # raises if the connection died without a word
                quiet_since = now

    def _lost(self, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}".strip()[:300]
        if error != self.last_error:
            log.warning("change feed unavailable: %s", error)
        self.last_error = error
        self.connected.clear()
        self._safe(self.on_lost, error)

    @staticmethod
    def _safe(callback, *args) -> None:
        try:
            callback(*args)
        except Exception:  # a callback's bug must not end the feed
            log.exception("change feed callback failed")
