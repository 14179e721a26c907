"""A bounded inference pool: ``concurrency`` worker threads and at most ``queue`` jobs waiting.

When both are full a new job is refused at once with ``overloaded`` (HTTP 503 + Retry-After)
instead of queueing without limit. onnxruntime releases the GIL while it runs, so threads give
real parallelism; a job whose client went away still finishes and frees its slot only then.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from facegate.errors import FacegateError
from facegate.service import metrics

T = TypeVar("T")


class InferencePool:
    def __init__(self, concurrency: int, queue: int, retry_after_s: int = 1):
        self.concurrency = max(1, int(concurrency))
        self.capacity = self.concurrency + max(0, int(queue))
        self.retry_after_s = retry_after_s
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="facegate-inference")
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def _release(self, _future) -> None:
        with self._lock:
            self._pending -= 1
            metrics.INFERENCE_PENDING.set(self._pending)

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        with self._lock:
            if self._pending >= self.capacity:
                raise FacegateError("overloaded", f"{self._pending} inference jobs are running or queued",
                                    retry_after=self.retry_after_s)
            self._pending += 1
            metrics.INFERENCE_PENDING.set(self._pending)
        submitted = time.perf_counter()

        def job():
            metrics.STAGE_SECONDS.labels("queue").observe(time.perf_counter() - submitted)
            return fn(*args, **kwargs)

        future = self._executor.submit(job)
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
