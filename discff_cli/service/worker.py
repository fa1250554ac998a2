"""One worker thread owns the models; every request that needs them queues for it.

Why one thread: two U-Net batches at once would only fight over the same cores (or GPU memory)
and double the peak memory, and the scorer's caches are not thread-safe. The queue is bounded so
a flood of requests is answered at once with 503 + Retry-After instead of piling up; shortlist-only
jobs go ahead of queued reranks, since they take milliseconds and a rerank takes seconds.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

T = TypeVar("T")
log = logging.getLogger("discff.serve")

FAST, SLOW = 0, 1  # job priorities: shortlist-only before rerank


class QueueFull(Exception):
    """The bounded queue is full; `retry_after` is a guess, in whole seconds, of when there will be room."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class ModelWorker:
    """A thread that builds the models with `load()` and then runs queued jobs `fn(models)` one at a time."""

    def __init__(self, load: Callable[[], Any], max_queue: int = 32) -> None:
        self._load = load
        self._queue: queue.PriorityQueue = queue.PriorityQueue(maxsize=max_queue)
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name="discff-model-worker", daemon=True)
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._job_seconds = 1.0  # running average of a job's duration, for Retry-After
        self.models: Any = None
        self.max_queue = max_queue

    def start(self) -> None:
        """Start the thread and wait until the models are loaded; a load error is raised here, in the caller."""
        self._thread.start()
        self._ready.wait()
        if self._load_error is not None:
            raise self._load_error

    def submit(self, fn: Callable[[Any], T], priority: int = FAST) -> "Future[T]":
        """Queue `fn(models)`; returns its future. Raises QueueFull rather than wait for room."""
        future: Future = Future()
        try:
            self._queue.put_nowait((priority, next(self._seq), fn, future))
        except queue.Full:
            raise QueueFull(self.retry_after()) from None
        return future

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1, at most 10 minutes)."""
        return int(min(600, max(1, math.ceil(self._job_seconds * max(1, self._queue.qsize())))))

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish the running job and exit; queued jobs are cancelled."""
        while True:
            try:
                _, _, _, future = self._queue.get_nowait()
            except queue.Empty:
                break
            if future is not None:
                future.cancel()
        self._queue.put((-1, -1, None, None))  # the queue was just emptied, so this cannot block for long
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.models = self._load()
        except BaseException as exc:  # handed to start(), which raises it in the caller's thread
            self._load_error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            _, _, fn, future = self._queue.get()
            if fn is None:
                return
            if not future.set_running_or_notify_cancel():
                continue  # its request gave up (time limit) before the job started
            start = time.perf_counter()
            try:
                future.set_result(fn(self.models))
            except Exception as exc:  # the request gets the error; the worker goes on serving
                future.set_exception(exc)
            seconds = time.perf_counter() - start
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * seconds
