"""Blockwise processing of volumes larger than memory, exactly as in memory.

The blocking geometry (:class:`Blocking`: write region + halo = read region),
:func:`map_blocks` (a block function into a zarr output),
:func:`reduce_blocks` (streaming tree reductions), exact out-of-core
connected components (:func:`label`) and relabelling (:func:`relabel`), and
filters in physical units (:func:`gaussian_filter`, :func:`median_filter`).
Every job runs serially, on local threads (default) or on a Dask
``distributed`` cluster, records finished blocks in a journal and resumes
after a kill. See ``docs/blockwise.md``.
"""

from emseg.blockwise._execute import CONNECT_TIMEOUT, SchedulerLike, TreeReducer
from emseg.blockwise._filters import gaussian_filter, gaussian_halo, median_filter
from emseg.blockwise._geometry import (
    Block,
    Blocking,
    Roi,
    check_chunk_alignment,
    default_block_shape,
)
from emseg.blockwise._journal import JOURNAL_NAME, Journal
from emseg.blockwise._labels import label, merge_pairs, relabel
from emseg.blockwise._map import map_blocks
from emseg.blockwise._output import is_complete
from emseg.blockwise._reduce import (
    Histogram,
    SparseCounts,
    count_overlaps,
    histogram,
    reduce_blocks,
)

__all__ = [
    "CONNECT_TIMEOUT",
    "JOURNAL_NAME",
    "Block",
    "Blocking",
    "Histogram",
    "Journal",
    "Roi",
    "SchedulerLike",
    "SparseCounts",
    "TreeReducer",
    "check_chunk_alignment",
    "count_overlaps",
    "default_block_shape",
    "gaussian_filter",
    "gaussian_halo",
    "histogram",
    "is_complete",
    "label",
    "map_blocks",
    "median_filter",
    "merge_pairs",
    "reduce_blocks",
    "relabel",
]
