"""Admission and execution of requests' work: bounded by count and by pixels, scheduled by cost.

Every request that does real work takes a Ticket (or gets QueueFull -> HTTP 503 + Retry-After),
with its cost: the pixels of its image or file, read from the header before anything is decoded.
Admission bounds the requests at once (`--queue`) and their pixels (PIXEL_BUDGET_IMAGES maximal
images). Pieces run on two FairPools: the model pool has a single thread, so the device runs one
model job at a time and models stay loaded in this process; the CPU pool runs reference search,
coders and PNG encoding on `cpu_workers` threads plus one thread kept for small jobs.

Order: each piece waits in its pool ordered by a virtual deadline, its request's arrival plus
cost / PIXELS_PER_SECOND: a small job overtakes a large one that arrived less than its extra
cost's worth of seconds before it, and a large one is not starved (its deadline comes).
The bound: a request of at most SMALL_JOB_PIXELS never waits for a larger request's CPU work
(the kept thread runs only small jobs); it waits only for small jobs with earlier deadlines, and
for model work, for the one model job already running.

A ticket's slot is released only when its last piece has finished, so work that is still running
for a client who left keeps counting against the bounds.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import statistics
import threading
import time
import warnings
from concurrent.futures import Future

from ..errors import SedicWarning

SMALL_JOB_PIXELS = 1 << 18      # 512x512: jobs up to this size have a CPU thread of their own
PIXELS_PER_SECOND = 1_000_000   # aging rate of the virtual deadline (about the encoder's speed)
PIXEL_BUDGET_IMAGES = 4         # admitted pixels at once: this many images of --max-pixels


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


class FairPool:
    """Worker threads taking the piece with the earliest virtual deadline; `reserved` more threads
    take small pieces only (a ThreadPoolExecutor runs them first come, first served)."""

    def __init__(self, workers: int, reserved: int, name: str):
        self._small: list = []
        self._large: list = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, args=(small_only,), daemon=True,
                                          name=f"{name}-{k}")
                         for k, small_only in enumerate([False] * workers + [True] * reserved)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn, *args, deadline: float | None = None, small: bool = False) -> Future:
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("pool is shut down")
            entry = (time.monotonic() if deadline is None else deadline, next(self._order), future, fn, args)
            heapq.heappush(self._small if small else self._large, entry)
            self._ready.notify_all()
        return future

    def _take(self, small_only: bool):
        heaps = [h for h in ((self._small,) if small_only else (self._small, self._large)) if h]
        return heapq.heappop(min(heaps, key=lambda h: h[0][:2])) if heaps else None

    def _work(self, small_only: bool) -> None:
        while True:
            with self._ready:
                entry = self._take(small_only)
                while entry is None and not self._closed:
                    self._ready.wait()
                    entry = self._take(small_only)
                if entry is None:
                    return
            _, _, future, fn, args = entry
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting request
                future.set_exception(exc)

    def shutdown(self) -> None:
        with self._ready:
            self._closed = True
            pending = self._small + self._large
            self._small.clear()
            self._large.clear()
            self._ready.notify_all()
        for _, _, future, _, _ in pending:
            future.cancel()


class Ticket:
    """One admitted request: its cancel flag, the warnings its work raised, its pieces in flight."""

    def __init__(self, queue: JobQueue, cost: int):
        self._queue = queue
        self.cost = cost  # pixels
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
        deadline = self.started + self.cost / PIXELS_PER_SECOND
        future: Future = pool.submit(call, deadline=deadline, small=self.cost <= SMALL_JOB_PIXELS)
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
    def __init__(self, capacity: int, cpu_workers: int, pixel_budget: int | None = None):
        self.capacity = capacity
        self.pixel_budget = pixel_budget  # None: counted requests only
        self.model_pool = FairPool(1, 0, "sedic-model")
        self.cpu_pool = FairPool(cpu_workers, 1, "sedic-cpu")
        self._lock = threading.Lock()
        self._active: set[Ticket] = set()
        self._pixels = 0
        self._finishes: list[float] = []  # when recent requests ended: the rate slots free at
        self.model_in_flight = 0
        self.counts = {"admitted": 0, "completed": 0, "cancelled": 0, "rejected": 0, "model_jobs": 0}

    def admit(self, cost: int = 1) -> Ticket:
        """A ticket for a request of `cost` pixels, or QueueFull with an estimate of when one frees."""
        with self._lock:
            over_pixels = (self.pixel_budget is not None and self._active
                           and self._pixels + cost > self.pixel_budget)
            if len(self._active) >= self.capacity or over_pixels:
                self.counts["rejected"] += 1
                raise QueueFull(self.capacity, self._retry_after())
            ticket = Ticket(self, cost)
            self._active.add(ticket)
            self._pixels += cost
            self.counts["admitted"] += 1
            return ticket

    def _retry_after(self) -> int:
        """Seconds until a slot is likely free: the median gap between the last requests' ends (one
        slot frees per gap; the median, so that one pause, such as the wait before the first burst
        or a stall of the machine, does not inflate every answer), or the oldest running request's
        age when none ended lately."""
        now = time.monotonic()
        recent = [t for t in self._finishes if now - t < 120][-17:]
        if len(recent) >= 2:
            gap = statistics.median(b - a for a, b in itertools.pairwise(recent))
            idle = now - recent[-1]
            # a pause of a few seconds (a slow stage, a busy machine) is not a new rate; only a
            # long one, such as a large job holding the model, says slots free more slowly now
            estimate = idle if idle > max(5.0, 10 * gap) else gap
        else:
            estimate = max((now - t.started for t in self._active), default=1.0)
        return max(1, min(math.ceil(estimate), 300))

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _finish(self, ticket: Ticket) -> None:
        with self._lock:
            self._active.discard(ticket)
            self._pixels -= ticket.cost
            self.counts["cancelled" if ticket.cancel.is_set() else "completed"] += 1
            self._finishes = self._finishes[-31:] + [time.monotonic()]

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def shutdown(self) -> None:
        with self._lock:
            for ticket in self._active:
                ticket.cancel.set()
        self.model_pool.shutdown()
        self.cpu_pool.shutdown()
