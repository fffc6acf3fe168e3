"""Session 9, addendum 1 (exploration only): the chooser's multicut with another size exponent.

Runs ``choose_flyem_chain.py`` with ``agglomerate_graph(..., size_exponent=E)`` for the multicut
linkage (the preset's exponent is 1 and a preset cannot set another yet). Only z 60-79 is read.

    python scripts/explore_size_exponent.py 0.5 --smooth --perturb 4 --jobs 2 \\
        --out bench_output/choose_flyem_chain_s9e05.json \\
        --candidate M=boundaries-fibsem:3+boundaries-fibsem-3d-stage2:1#multicut
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import choose_flyem_chain
import instance_results

from emseg.instance import agglomerate_graph


def main() -> None:
    exponent = float(sys.argv[1])
    # the grid's workers are forked, so they see the patched function
    instance_results.agglomerate_graph = functools.partial(  # type: ignore[assignment]
        agglomerate_graph, size_exponent=exponent
    )
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    choose_flyem_chain.main()


if __name__ == "__main__":
    main()
