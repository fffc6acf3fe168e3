"""Run every ``benchmarks/bench_*.py`` in turn (``make bench``).

Each benchmark runs in its own Python process, prints a small table and
writes its JSON to ``bench_output/``. This script prints each one's output,
a summary of the exit statuses and wall times, and exits non-zero when any
benchmark failed. Pass names to run a subset: ``python benchmarks/run_all.py
convert metrics``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        wanted = {a.removeprefix("bench_").removesuffix(".py") for a in argv}
        unknown = wanted - {s.stem.removeprefix("bench_") for s in scripts}
        if unknown:
            names = ", ".join(s.stem.removeprefix("bench_") for s in scripts)
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; available: {names}")
            return 2
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    Path("bench_output").mkdir(exist_ok=True)
    results = []
    for script in scripts:
        print(f"=== {script.name} ===", flush=True)
        start = time.perf_counter()
        status = subprocess.call([sys.executable, str(script)])
        results.append((script.name, status, time.perf_counter() - start))
        print(flush=True)
    print("=== summary ===")
    for name, status, seconds in results:
        print(f"{name:<28}{'ok' if status == 0 else f'FAILED ({status})':>12}{seconds:>9.1f} s")
    print("JSON results in bench_output/")
    return 0 if all(status == 0 for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
