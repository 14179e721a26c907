"""Kiosks waiting for their review case in this process (``GET /v1/kiosk/reviews/{id}?wait=``).

A waiting request sleeps on an event of its case, set when the change feed announces the case
(:data:`facegate.storage.changefeed.REVIEWS`, from whichever replica decided it) or when the
feed reconnects (a hint may have been missed). The database stays the truth: a woken request
reads the case again, and every request also re-reads it every ``POLL_*_S`` and when the case
ends (the only way on SQLite, which has no feed, and the fallback when PostgreSQL's feed is
down).
"""
from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Iterator

POLL_WITH_FEED_S = 2.0     # the fallback read while the change feed is connected
POLL_WITHOUT_FEED_S = 0.5  # SQLite, or the feed is down


class ReviewWaits:
    def __init__(self):
        self._events: dict[int, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def watch(self, case_id: int) -> Iterator[asyncio.Event]:
        """An event set whenever ``case_id`` is announced while the block runs; registered before
        the caller reads the case, so an announcement between the read and the wait is not lost."""
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._events.setdefault(case_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._events.get(case_id)
            if events is not None:
                events.discard(event)
                if not events:
                    self._events.pop(case_id, None)

    def wake(self, case_id: int | None = None) -> None:
        """Wake the requests waiting for ``case_id`` (None: all of them); safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def _set() -> None:
            for cid in ([case_id] if case_id is not None else list(self._events)):
                for event in self._events.get(cid, ()):
                    event.set()
        loop.call_soon_threadsafe(_set)
