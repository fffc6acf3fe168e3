"""Running block tasks: serially, on threads in-process, or on a Dask cluster.

A job is a picklable callable ``task(block_id) -> result`` and a list of block
ids. Only block ids travel to the workers; the task (with its input and
output arrays, which are opened on the worker and read / written directly) is
sent once. Results stream back in completion order to a callback in the
driver; at most a few tasks per worker are in flight, so memory in the
driver stays bounded however many blocks there are.

``scheduler`` selects the backend:

- ``None`` or ``"threads"`` (default): a pool of `n_workers` threads in this
  process. Threads overlap only where the GIL is released: numpy, the numba
  kernels of emseg (the Gaussian filter), Blosc and file I/O do; most of
  ``scipy.ndimage``, ``cc3d`` and numcodecs' zstd do not (use
  ``scheduler="local"`` for such block functions). It is the execution model
  of Dask's threaded scheduler, without building a task graph of all blocks
  up front.
- ``"serial"``: one block after the other in this thread (for debugging).
- ``"local"``: a ``distributed.LocalCluster`` started for the job with
  `n_workers` processes of one thread each.
- ``"tcp://host:port"`` (any address): an existing ``distributed`` scheduler.
- a ``distributed.Client``: used as it is.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from emseg.errors import EmsegTypeError, EmsegValueError, SchedulerError

log = logging.getLogger(__name__)

#: Seconds to wait for a scheduler given by address before giving up.
CONNECT_TIMEOUT = 5.0

SchedulerLike = Any
"""None, "threads", "serial", "local", a scheduler address, or a distributed.Client."""


@dataclass(frozen=True)
class Backend:
    """A resolved execution backend."""

    kind: str  # "serial" | "threads" | "distributed"
    n_workers: int
    client: Any = None

    @property
    def parallel(self) -> bool:
        """Whether two blocks may be written at the same time."""
        return self.kind == "distributed" or (self.kind == "threads" and self.n_workers > 1)


def parse_workers(n_workers: int) -> int:
    if isinstance(n_workers, bool) or not isinstance(n_workers, int):
        raise EmsegTypeError(f"`n_workers` must be an integer >= 1; got {n_workers!r}.")
    if n_workers < 1:
        raise EmsegValueError(f"`n_workers` must be >= 1; got {n_workers}.")
    return n_workers


def _is_client(obj: Any) -> bool:
    return type(obj).__name__ == "Client" and type(obj).__module__.startswith("distributed")


def describe_scheduler(scheduler: SchedulerLike) -> str:
    """How a scheduler is recorded in a journal (a client by its address)."""
    if _is_client(scheduler):
        return "distributed"
    if isinstance(scheduler, str) and scheduler not in ("threads", "serial", "local"):
        return "distributed"
    return str(scheduler or "threads")


@contextlib.contextmanager
def open_backend(scheduler: SchedulerLike, n_workers: int) -> Iterator[Backend]:
    """Resolve `scheduler` (see module docstring); start / connect as needed.

    Raises
    ------
    SchedulerError
        When a scheduler address cannot be reached within
        :data:`CONNECT_TIMEOUT` seconds, or a local cluster fails to start.
    """
    n_workers = parse_workers(n_workers)
    if scheduler is None or scheduler == "threads":
        yield Backend("threads", n_workers)
        return
    if scheduler == "serial":
        yield Backend("serial", 1)
        return
    if _is_client(scheduler):
        yield Backend("distributed", _cluster_size(scheduler, n_workers), scheduler)
        return
    if not isinstance(scheduler, str):
        raise EmsegTypeError(
            "`scheduler` must be None, 'threads', 'serial', 'local', a scheduler address "
            f"('tcp://host:8786') or a distributed.Client; got {scheduler!r}."
        )
    from distributed import Client

    if scheduler == "local":
        try:
            cluster = local_cluster(n_workers)
        except Exception as exc:  # a cluster that cannot start is a scheduler problem
            raise SchedulerError(f"could not start a local Dask cluster: {exc}") from exc
        try:
            with Client(cluster, set_as_default=False) as client:
                yield Backend("distributed", n_workers, client)
        finally:
            cluster.close()
        return
    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(
            f"cannot reach the Dask scheduler at `scheduler`={scheduler!r} within "
            f"{CONNECT_TIMEOUT:g} s ({type(exc).__name__}: {exc}). Check the address and that "
            "`dask scheduler` is running, or leave --scheduler out to run on local threads."
        ) from exc
    try:
        yield Backend("distributed", _cluster_size(client, n_workers), client)
    finally:
        client.close()


def local_cluster(n_workers: int) -> Any:
    """A ``distributed.LocalCluster`` of `n_workers` processes x 1 thread, set up for block jobs.

    Unlike distributed's default, the worker processes do not get
    ``MALLOC_TRIM_THRESHOLD_=65536``: setting it fixes glibc's mmap threshold
    at 128 KiB, so every block-sized array is a fresh mmap whose pages are
    faulted in and zeroed again for every block. Measured on a 512**3
    Gaussian job (16 blocks of 128 x 256 x 256): 1.98 s of compute per
    block with it, 0.64 s without. The other variables distributed sets
    (``OMP_NUM_THREADS=1`` and the like) are kept. The dashboard takes any
    free port (8787 may be held by another cluster, which makes distributed
    warn).
    """
    import dask
    from distributed import LocalCluster

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    # distributed copies its pre-spawn variables into this process's os.environ (and
    # leaves them there), so a cluster started earlier would pass it on: hide it while
    # the workers are spawned
    inherited = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            return LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
    finally:
        if inherited is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = inherited


def _cluster_size(client: Any, default: int) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # a scheduler that does not answer: fall back to the request
        return default


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="block", disable=not enabled, file=sys.stderr)


def _call(task: Callable[[int], Any], block_id: int) -> Any:
    return task(block_id)


def run_blocks(
    task: Callable[[int], Any],
    block_ids: Sequence[int],
    backend: Backend,
    *,
    on_result: Callable[[int, Any], None] | None = None,
    progress: bool = True,
    desc: str = "blocks",
) -> None:
    """Run ``task(block_id)`` for every id; call ``on_result(block_id, result)`` as each ends.

    The first failing block stops the job: blocks not started are cancelled
    and its exception is raised (finished blocks stay recorded).
    """
    ids = [int(b) for b in block_ids]
    window = max(2, 2 * backend.n_workers)
    with _progress(len(ids), desc, progress) as bar:

        def done(bid: int, result: Any) -> None:
            if on_result is not None:
                on_result(bid, result)
            bar.update(1)

        if not ids:
            return
        if backend.kind == "serial":
            for bid in ids:
                done(bid, task(bid))
        elif backend.kind == "threads":
            _run_threads(task, ids, backend.n_workers, window, done)
        else:
            _run_distributed(task, ids, backend.client, window, done)


def _run_threads(
    task: Callable[[int], Any],
    ids: list[int],
    n_workers: int,
    window: int,
    done: Callable[[int, Any], None],
) -> None:
    pending: dict[cf.Future[Any], int] = {}
    it = iter(ids)
    with cf.ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="emseg") as pool:
        try:
            for bid in it:
                pending[pool.submit(task, bid)] = bid
                if len(pending) >= window:
                    break
            while pending:
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    bid = pending.pop(fut)
                    done(bid, fut.result())
                    nxt = next(it, None)
                    if nxt is not None:
                        pending[pool.submit(task, nxt)] = nxt
        finally:
            for fut in pending:
                fut.cancel()


def _run_distributed(
    task: Callable[[int], Any],
    ids: list[int],
    client: Any,
    window: int,
    done: Callable[[int, Any], None],
) -> None:
    from distributed import as_completed

    task_future = client.scatter(task, broadcast=True, hash=False)
    it = iter(ids)
    futures: dict[Any, int] = {}

    def submit(bid: int) -> Any:
        fut = client.submit(_call, task_future, bid, pure=False)
        futures[fut] = bid
        return fut

    first = [submit(bid) for _, bid in zip(range(window), it, strict=False)]
    ac = as_completed(first, with_results=False, loop=client.loop)
    try:
        for fut in ac:
            bid = futures.pop(fut)
            done(bid, fut.result())
            fut.release()
            nxt = next(it, None)
            if nxt is not None:
                ac.add(submit(nxt))
    finally:
        if futures:
            client.cancel(list(futures))
        task_future.release()


class TreeReducer:
    """Merge summaries pairwise as they arrive, like a binary counter.

    Holds at most ``log2(n) + 1`` partial summaries; each summary takes part
    in ``log2(n)`` merges, so merging grows like a balanced tree, never like
    a list of all block results. `merge` must be associative and commutative
    (block results arrive in completion order).
    """

    def __init__(self, merge: Callable[[Any, Any], Any]) -> None:
        self.merge = merge
        self._stack: list[tuple[int, Any]] = []
        self.count = 0

    def add(self, summary: Any) -> None:
        level = 0
        self.count += 1
        while self._stack and self._stack[-1][0] == level:
            _, other = self._stack.pop()
            summary = self.merge(other, summary)
            level += 1
        self._stack.append((level, summary))

    def result(self, empty: Any = None) -> Any:
        if not self._stack:
            return empty
        out = self._stack[-1][1]
        for _, s in reversed(self._stack[:-1]):
            out = self.merge(s, out)
        return out
