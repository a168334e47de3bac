"""Admission and execution of requests' work: a bounded queue, one model job at a time, CPU threads.

Every request that does real work takes a Ticket (or gets QueueFull -> HTTP 503 + Retry-After).
Its pieces run on one of two pools: the model pool has a single thread, so the device runs one
model job at a time and models stay loaded in this process; the CPU pool runs reference search,
coders and PNG encoding. A ticket's slot is released only when its last piece has finished, so
work that is still running for a client who left keeps counting against the bound.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import SedicWarning


class QueueFull(Exception):
    """The bounded queue is full; `retry_after` (seconds) is an estimate of when a slot frees."""

    def __init__(self, capacity: int, retry_after: int):
        super().__init__(f"server busy: {capacity} requests already queued or running; retry later")
        self.retry_after = retry_after


class JobCancelled(Exception):
    """The client went away: raised inside work at the next checkpoint (between stages or steps)."""


# Warnings (alpha dropped, empty mask dropped...) go to the ticket of the job that raised them.
_warning_sink: contextvars.ContextVar[list | None] = contextvars.ContextVar("sedic_warning_sink", default=None)
_original_showwarning = warnings.showwarning


def _show(message, category, filename, lineno, file=None, line=None):
    sink = _warning_sink.get()
    if sink is not None and issubclass(category, SedicWarning):
        sink.append(str(message))
        return
    _original_showwarning(message, category, filename, lineno, file, line)


def _ensure_warning_capture() -> None:
    # re-checked per job: test harnesses restore warnings.showwarning and the filters between tests
    global _original_showwarning
    if warnings.showwarning is not _show:
        _original_showwarning = warnings.showwarning
        warnings.showwarning = _show
    if not any(f[0] == "always" and f[2] is SedicWarning for f in warnings.filters):
        warnings.filterwarnings("always", category=SedicWarning)


class Ticket:
    """One admitted request: its cancel flag, the warnings its work raised, its pieces in flight."""

    def __init__(self, queue: "JobQueue"):
        self._queue = queue
        self._refs = 1  # the request itself; each piece in flight adds one
        self._lock = threading.Lock()
        self.cancel = threading.Event()
        self.warnings: list[str] = []
        self.started = time.monotonic()

    def check(self) -> None:
        if self.cancel.is_set():
            raise JobCancelled("client disconnected")

    def progress_guard(self, forward=None):
        """A progress(index, total, label) callback for sedic's decoder that stops cancelled work."""
        def progress(*args):
            self.check()
            if forward is not None:
                forward(*args)
        return progress

    async def run(self, fn, *args, model: bool = False):
        """Run fn(*args) on the model pool (one at a time) or the CPU pool; await its result."""
        self.check()
        pool = self._queue.model_pool if model else self._queue.cpu_pool

        def call():
            self.check()  # cancelled while waiting for the pool: never start
            if model:
                self._queue._count("model_jobs")
            _ensure_warning_capture()
            token = _warning_sink.set(self.warnings)
            try:
                return fn(*args)
            finally:
                _warning_sink.reset(token)

        with self._lock:
            self._refs += 1
        future: Future = pool.submit(call)
        future.add_done_callback(lambda _: self._release())  # also fires when cancelled before start
        if model:
            self._queue.model_in_flight += 1
        try:
            return await asyncio.wrap_future(future)
        finally:
            if model:
                self._queue.model_in_flight -= 1

    def close(self, cancelled: bool = False) -> None:
        """The request is over (answered or abandoned); its slot frees when its pieces end."""
        if cancelled:
            self.cancel.set()
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._refs -= 1
            done = self._refs == 0
        if done:
            self._queue._finish(self)


class JobQueue:
    def __init__(self, capacity: int, cpu_workers: int):
        self.capacity = capacity
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="sedic-model")
        self.cpu_pool = ThreadPoolExecutor(cpu_workers, thread_name_prefix="sedic-cpu")
        self._lock = threading.Lock()
        self._active: set[Ticket] = set()
        self._mean_seconds = 1.0  # moving average of a request's time in the server
        self.model_in_flight = 0
        self.counts = {"admitted": 0, "completed": 0, "cancelled": 0, "rejected": 0, "model_jobs": 0}

    def admit(self) -> Ticket:
        with self._lock:
            if len(self._active) >= self.capacity:
                self.counts["rejected"] += 1
                retry = math.ceil(self._mean_seconds * len(self._active) / 2)
                raise QueueFull(self.capacity, max(1, min(retry, 300)))
            ticket = Ticket(self)
            self._active.add(ticket)
            self.counts["admitted"] += 1
            return ticket

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _finish(self, ticket: Ticket) -> None:
        with self._lock:
            self._active.discard(ticket)
            self.counts["cancelled" if ticket.cancel.is_set() else "completed"] += 1
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - ticket.started)

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def shutdown(self) -> None:
        with self._lock:
            for ticket in self._active:
                ticket.cancel.set()
        self.model_pool.shutdown(wait=False, cancel_futures=True)
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
