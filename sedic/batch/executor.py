"""Running work items through a chain of stages on many workers: local processes or a Ray cluster.

A `Stage` names a worker factory (a picklable class; its instance is the per-process worker, so
models load once per process) and whether it holds models. An `Executor` runs every item through
the stages and yields each item once, finished ("ok") or given up on ("failed"):

- an error the user caused (`SedicError`: a bad image, a missing semantics file) fails the item at
  once, with its one-line message; the batch goes on;
- any other exception, or a worker process that dies, is retried (`max_attempts` in all) in a
  later pass, from the stage that did not finish.

Placement: a model stage gets one worker per GPU (CUDA_VISIBLE_DEVICES set per worker, device
"cuda"); other stages get CPU workers. Without GPUs, consecutive stages are fused into one CPU
worker, so no core sits reserved by an idle model holder. Every worker runs torch with the same
thread count (`threads`), which keeps CPU results identical between executors.

Test-only fault injection: the environment variable SEDIC_TEST_FAULT="MODE:STAGE:ITEM:MARKER"
(MODE `raise` or `exit`) makes the worker running STAGE on ITEM raise RuntimeError (`raise`) or
kill its own process with os._exit (`exit`), once: the first worker to create the file MARKER
(O_EXCL) fires, every later attempt finds it and runs normally. It is read by the driver and sent
to the workers with the stages, so it reaches Ray workers on any node (MARKER must then be on a
shared file system). Nothing else reads it.
"""

from __future__ import annotations

import abc
import logging
import os
import pickle
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import InputError, SedicError, one_line

FAULT_ENV = "SEDIC_TEST_FAULT"


# ------------------------------------------------------------------ items and stages

@dataclass(frozen=True)
class Stage:
    name: str
    make_worker: Callable  # make_worker(device) -> callable(payload: dict) -> dict of new payload keys
    uses_models: bool = False


@dataclass
class WorkItem:
    key: str                       # unique name (the image's file name)
    payload: dict                  # inputs, then each stage's outputs
    status: str = "pending"        # pending -> ok | failed (| retry between passes)
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0           # time spent in workers, all attempts
    done: tuple = ()               # names of the stages finished
    warnings: list = field(default_factory=list)


@dataclass(frozen=True)
class Fault:
    """Test-only fault injection (see the module docstring)."""

    mode: str
    stage: str
    key: str
    marker: str

    @staticmethod
    def from_env() -> Fault | None:
        spec = os.environ.get(FAULT_ENV)
        if not spec:
            return None
        mode, stage, key, marker = spec.split(":", 3)
        if mode not in ("raise", "exit"):
            raise InputError(f"{FAULT_ENV}: mode must be raise or exit, got {mode!r}")
        return Fault(mode, stage, key, marker)

    def fire(self, stage: str, key: str) -> None:
        if stage != self.stage or key != self.key:
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # fired before: this attempt runs normally
        if self.mode == "exit":
            os._exit(17)
        raise RuntimeError(f"injected fault in stage {stage} on {key} ({FAULT_ENV}, test only)")


# ------------------------------------------------------------------ what runs inside a worker

_WORKERS: dict = {}  # stage name -> ((factory, device), worker): one per process, models load once


def _worker_for(stage: Stage, device: str, threads: int):
    # A process may serve several runs (a kept pool, a reused Ray worker): a stage made with other
    # options (another bpp, semantics folder...) gets a new worker, never the previous run's.
    config = (stage.make_worker, device)
    cached = _WORKERS.get(stage.name)
    if cached is None or cached[0] != config:
        import torch

        torch.set_num_threads(threads)
        cached = _WORKERS[stage.name] = (config, stage.make_worker(device))
    return cached[1]


def apply_stages(stages: tuple[Stage, ...], item: WorkItem, device: str, threads: int,
                 fault: Fault | None) -> WorkItem:
    """Run the stages the item still needs; errors become its status, never an exception."""
    for stage in stages:
        if item.status != "pending" or stage.name in item.done:
            continue
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                worker = _worker_for(stage, device, threads)
                if fault is not None:
                    fault.fire(stage.name, item.key)
                item.payload.update(worker(item.payload))
            item.done += (stage.name,)
            item.warnings += [" ".join(str(w.message).split()) for w in caught
                              if not issubclass(w.category, (DeprecationWarning, FutureWarning))]
        except SedicError as exc:
            item.status, item.error = "failed", one_line(exc)
        except Exception as exc:  # noqa: BLE001 - anything else may be transient: retried
            item.status, item.error = "retry", one_line(exc)
        item.seconds += time.perf_counter() - start
    return item


# ------------------------------------------------------------------ the executors

def plan(stages: list[Stage], gpus: int) -> list[tuple[Stage, ...]]:
    """Group stages into worker kinds: with GPUs each stage on its own; without, one CPU group."""
    if gpus > 0:
        return [(s,) for s in stages]
    return [tuple(stages)]


class Executor(abc.ABC):
    """Runs items through stages; yields each item once, finished or failed."""

    def __init__(self, *, threads: int = 1, max_attempts: int = 3):
        if threads < 1 or max_attempts < 1:
            raise InputError("threads and attempts must be at least 1")
        self.threads = threads
        self.max_attempts = max_attempts
        self.fault: Fault | None = None  # read at each run (test-only, see the module docstring)

    @property
    @abc.abstractmethod
    def gpus(self) -> int:
        """GPUs the model stages can use."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for logs and benchmark reports."""

    @abc.abstractmethod
    def _run_pass(self, groups: list[tuple[Stage, ...]], items: list[WorkItem]) -> Iterator[WorkItem]:
        """Each item once, after the groups it could get through (status pending means done)."""

    def run(self, stages: list[Stage], items: Iterable[WorkItem]) -> Iterator[WorkItem]:
        groups = plan(stages, self.gpus)
        self.fault = Fault.from_env()
        todo = list(items)
        while todo:
            again = []
            for item in self._run_pass(groups, todo):
                if item.status == "pending":
                    item.status = "ok"
                if item.status == "retry":
                    if item.attempts < self.max_attempts:
                        item.attempts += 1
                        item.status = "pending"
                        again.append(item)
                        continue
                    item.status = "failed"
                    item.error = f"{item.error} (after {item.attempts} attempts)"
                yield item
            todo = again

    def close(self) -> None:  # noqa: B027 (a no-op by default: the serial executor holds nothing)
        """Release workers (and a Ray instance this executor started)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextmanager
def opened(executor: Executor | Callable[[], Executor] | None,
           default: Callable[[], Executor] | None = None) -> Iterator[Executor | None]:
    """The executor a run uses, for the length of the block: an `Executor` as given (its owner
    closes it); a factory, or `default` when `executor` is None, called now and closed on the way
    out; None when there is neither (the caller runs in its own process). Call it after every check
    of the run's options: a bad option then never waits for Ray to start."""
    if isinstance(executor, Executor):
        yield executor
        return
    factory = executor or default
    if factory is None:
        yield None
        return
    made = factory()
    try:
        yield made
    finally:
        made.close()


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def _child_environment(values: dict[str, str]):
    """Set variables for the processes spawned inside the block (a spawned worker copies the
    environment at start, before numpy and torch read it), then restore the driver's."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _local_task(group, item, device, threads, fault):
    return apply_stages(group, item, device, threads, fault)


class _Pool:
    """One ProcessPoolExecutor, rebuilt when a worker dies (that breaks the whole pool)."""

    def __init__(self, size: int, gpu: str | None, threads: int):
        self.size, self.gpu = size, gpu
        # What Ray does for a worker with num_cpus=threads: every OpenMP/BLAS pool sized alike, so
        # workers neither oversubscribe the cores (measured: 2x slower here) nor differ from Ray's.
        self.env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        if gpu is not None:
            self.env["CUDA_VISIBLE_DEVICES"] = gpu
        self.busy = 0
        self.pool = None

    def executor(self):
        if self.pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: fresh interpreters, as on Ray (fork after torch's threads start is unsafe)
            self.pool = ProcessPoolExecutor(self.size, mp_context=multiprocessing.get_context("spawn"))
        return self.pool

    def submit(self, *args):
        ex = self.executor()
        with _child_environment(self.env):  # workers are spawned by submit, as they are needed
            return ex, ex.submit(*args)

    def broken(self, pool) -> None:
        if self.pool is pool:
            self.pool = None
            self._stop(pool)

    def close(self) -> None:
        if self.pool is not None:
            self._stop(self.pool)
            self.pool = None

    @staticmethod
    def _stop(pool) -> None:
        pool.shutdown(wait=False, cancel_futures=True)
        # An interrupted run must not leave workers computing: stop them (no public API before 3.14).
        terminate = getattr(pool, "terminate_workers", None)
        if terminate is not None:
            terminate()
        else:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
        # Then wait for the pool's manager thread (quick: no worker is left). Left running, it
        # races the interpreter's exit hook, which writes to the pipe the thread closes: an
        # "OSError: Bad file descriptor" traceback after a successful batch (CPython 3.11).
        pool.shutdown(wait=True)


class LocalExecutor(Executor):
    """Worker processes on this machine: `workers` CPU workers, one model worker per GPU."""

    def __init__(self, workers: int | None = None, *, gpus: int | None = None, threads: int = 1,
                 max_attempts: int = 3):
        super().__init__(threads=threads, max_attempts=max_attempts)
        self.workers = workers or max(1, (os.cpu_count() or 1) // threads)
        if self.workers < 1:
            raise InputError("--workers must be at least 1")
        self._gpus = local_gpu_count() if gpus is None else gpus
        self._pools: dict[int, list[_Pool]] = {}

    @property
    def gpus(self) -> int:
        return self._gpus

    def describe(self) -> str:
        return (f"local: {self.workers} CPU worker process(es) x {self.threads} thread(s)"
                + (f", {self._gpus} GPU worker(s)" if self._gpus else ""))

    def _pools_for(self, index: int, group: tuple[Stage, ...]) -> list[_Pool]:
        if index not in self._pools:
            if self._gpus and any(s.uses_models for s in group):
                self._pools[index] = [_Pool(1, str(g), self.threads) for g in range(self._gpus)]
            else:
                self._pools[index] = [_Pool(self.workers, None, self.threads)]
        return self._pools[index]

    def _device(self, pool: _Pool) -> str:
        return "cuda" if pool.gpu is not None else "cpu"

    def _run_pass(self, groups, items):
        from concurrent.futures import FIRST_COMPLETED, wait

        queue = deque((0, item) for item in items)  # (group index, item)
        running: dict = {}  # future -> (group index, item, _Pool, ProcessPoolExecutor)
        while queue or running:
            queue = self._submit(groups, queue, running)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                gi, item = self._collect(fut, running)
                if item.status == "pending" and gi + 1 < len(groups):
                    queue.appendleft((gi + 1, item))  # later groups first so finished work leaves soonest
                else:
                    yield item

    def _submit(self, groups, queue: deque, running: dict) -> deque:
        """Start each queued (group index, item) that a pool of its group has room for; the rest wait
        (returned, in order)."""
        waiting: deque = deque()
        while queue:
            gi, item = queue.popleft()
            pool = next((p for p in self._pools_for(gi, groups[gi]) if p.busy < p.size), None)
            if pool is None:
                waiting.append((gi, item))
                continue
            ex, fut = pool.submit(_local_task, groups[gi], item, self._device(pool), self.threads, self.fault)
            pool.busy += 1
            running[fut] = (gi, item, pool, ex)
        return waiting

    @staticmethod
    def _collect(fut, running: dict) -> tuple[int, WorkItem]:
        """A finished task's group index and item; a worker that died marks its item for a retry and
        has its pool rebuilt."""
        from concurrent.futures.process import BrokenProcessPool

        gi, item, pool, ex = running.pop(fut)
        pool.busy -= 1
        try:
            item = fut.result()
        except BrokenProcessPool:
            pool.broken(ex)
            item.status, item.error = "retry", "a worker process died"
        return gi, item

    def close(self) -> None:
        for pools in self._pools.values():
            for pool in pools:
                pool.close()
        self._pools.clear()


# ------------------------------------------------------------------ Ray

class _RayStageActor:
    """A Ray Data actor: holds the group's workers (models) for its lifetime."""

    def __init__(self, group, device, threads, fault):
        self.group, self.device, self.threads, self.fault = group, device, threads, fault
        for stage in group:  # load the models now, once per actor
            _worker_for(stage, device, threads)

    def __call__(self, row: dict) -> dict:
        item = apply_stages(self.group, pickle.loads(row["item"]), self.device, self.threads, self.fault)
        return {"item": pickle.dumps(item)}


def _ray_stage_task(row: dict, group, threads, fault) -> dict:
    item = apply_stages(group, pickle.loads(row["item"]), "cpu", threads, fault)
    return {"item": pickle.dumps(item)}


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that nothing answers is an error now: ray.init would wait
    for it for minutes. "auto", None and addresses without a port are left to Ray."""
    target = (address or "").removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"cannot reach Ray at {address}: {one_line(exc) or type(exc).__name__} "
                         f"(is `ray start --head` running there, and the port open?)") from None


class RayExecutor(Executor):
    """A Ray Data pipeline: model stages on actors (one per GPU, or per CPU group without GPUs),
    other stages as CPU tasks. `address` None starts a local Ray unless one is running."""

    def __init__(self, address: str | None = None, *, threads: int = 1, max_attempts: int = 3,
                 num_cpus: int | None = None):
        super().__init__(threads=threads, max_attempts=max_attempts)
        try:
            import ray
            import ray.data  # noqa: F401 - fail here, not mid-run, when the extra is missing
        except ImportError as exc:
            raise InputError(f"--ray needs Ray Data: pip install 'sedic[ray]' ({exc})") from None
        self._started = False
        if not ray.is_initialized():
            _check_reachable(address)
            try:
                ray.init(address=address or None, num_cpus=num_cpus if not address else None,
                         include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise InputError(f"cannot start or reach Ray at {address or 'a local instance'}: "
                                 f"{one_line(exc)}") from None
            self._started = True
        # Ray Data's plan and progress notices would tear through sedic's own progress bar
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # incl. "progress bars disabled"
        resources = ray.cluster_resources()
        self.cpus = int(resources.get("CPU", 1))
        self._gpus = int(resources.get("GPU", 0))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # sedic draws its own bar on the driver

    @property
    def gpus(self) -> int:
        return self._gpus

    def describe(self) -> str:
        return (f"ray: {self.cpus} CPU(s), {self._gpus} GPU(s) in the cluster, "
                f"{self.threads} thread(s) per worker")

    def _run_pass(self, groups, items):
        import ray.data

        by_key = {}
        rows = []
        for item in items:
            by_key[item.key] = item
            rows.append({"item": pickle.dumps(item)})
        # One block per item up to a cap: items spread over all workers, retries stay small.
        ds = self._pipeline(ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4096))), groups)
        for row in ds.iter_rows():
            item = pickle.loads(row["item"])
            by_key.pop(item.key, None)
            yield item
        for item in by_key.values():  # lost by Ray without an error: run again
            item.status, item.error = "retry", "lost by the Ray pipeline"
            yield item

    def _pipeline(self, ds, groups):
        """The dataset mapped through each group: model groups on an actor pool (one actor per GPU,
        or per `threads` CPUs without GPUs), the others as CPU tasks."""
        import ray.data

        per_worker = self.threads
        for group in groups:
            if any(s.uses_models for s in group):
                gpu = self._gpus > 0
                actors = self._gpus if gpu else max(1, self.cpus // per_worker)
                ds = ds.map(_RayStageActor, fn_constructor_args=(group, "cuda" if gpu else "cpu", self.threads,
                                                                 self.fault),
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=per_worker,
                            num_gpus=1 if gpu else 0)
            else:
                ds = ds.map(_ray_stage_task, fn_args=(group, self.threads, self.fault), num_cpus=per_worker)
        return ds

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def make_executor(ray_address: str | None, *, workers: int | None = None, threads: int = 1,
                  max_attempts: int = 3) -> Executor:
    """`ray_address` None: local processes; "" a local Ray (or the running one); else that cluster."""
    if ray_address is None:
        return LocalExecutor(workers, threads=threads, max_attempts=max_attempts)
    return RayExecutor(ray_address or None, threads=threads, max_attempts=max_attempts)
