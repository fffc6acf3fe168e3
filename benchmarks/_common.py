"""Helpers shared by the benchmarks: peak memory, CPU time, a timer.

Benchmarks run as scripts (``python benchmarks/bench_x.py``, also what
``benchmarks/run_all.py`` does), so this directory is ``sys.path[0]`` and
``from _common import ...`` works, in ``spawn`` children too (they inherit
``sys.path``). A child started with ``python -c CODE`` does not: prefix its
code with :data:`CHILD_PRELUDE`.

Peak RSS is ``VmHWM`` from ``/proc/self/status``: the high-water mark of this
process image. ``ru_maxrss`` is only the fallback where /proc has no VmHWM:
on Linux it keeps the parent's peak across fork + exec, so a child started by
a big parent would report the parent's memory.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

HERE = Path(__file__).resolve().parent

#: Code to put before a ``python -c`` child's code: makes ``peak_rss_bytes``,
#: ``reset_peak_rss`` and ``cpu_seconds`` importable and imported.
CHILD_PRELUDE = (
    f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
    "from _common import cpu_seconds, peak_rss_bytes, reset_peak_rss\n"
)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process image in bytes (VmHWM; ru_maxrss fallback)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); return whether it was reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """``(seconds, fn())``: wall time of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
