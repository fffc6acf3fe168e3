"""Blockwise processing of volumes larger than memory, exactly as in memory.

The blocking geometry (:class:`Blocking`: write region + halo = read region),
:func:`map_blocks` (a block function into a zarr output),
:func:`reduce_blocks` (streaming tree reductions), exact out-of-core
connected components (:func:`label`) and relabelling (:func:`relabel`), and
filters in physical units (:func:`gaussian_filter`, :func:`median_filter`).
Every job runs serially, on local threads (default) or on a Dask
``distributed`` cluster, records finished blocks in a journal and resumes
after a kill. See ``docs/blockwise.md``.

The engine's building blocks are public too, for packages that run their own
block tasks (features, forest, deep inference, instance segmentation):
:func:`open_backend` and :func:`run_blocks` (schedulers), :func:`prepare_output`,
:class:`Output` and :func:`finish_output` (outputs, journals, resume),
:func:`as_input`, :func:`as_inputs`, :func:`check_inputs`, :func:`input_spacing`,
:func:`resolve_chunks`, :func:`default_chunks`, :func:`parse_block_shape`, and
:func:`read_block` / :func:`write_block` (direct chunk I/O through
:class:`ChunkIO` where the array allows it).
"""

from emseg.blockwise._chunkio import ChunkIO
from emseg.blockwise._execute import (
    CONNECT_TIMEOUT,
    Backend,
    SchedulerLike,
    TreeReducer,
    local_cluster,
    open_backend,
    run_blocks,
)
from emseg.blockwise._filters import gaussian_filter, gaussian_halo, median_filter
from emseg.blockwise._geometry import (
    Block,
    Blocking,
    Roi,
    check_chunk_alignment,
    default_block_shape,
    parse_block_shape,
)
from emseg.blockwise._journal import JOURNAL_NAME, Journal
from emseg.blockwise._labels import label, merge_pairs, relabel
from emseg.blockwise._map import as_inputs, map_blocks, read_block, write_block
from emseg.blockwise._output import (
    Output,
    as_input,
    check_inputs,
    default_chunks,
    finish_output,
    input_spacing,
    is_complete,
    prepare_output,
    resolve_chunks,
)
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
    "Backend",
    "Block",
    "Blocking",
    "ChunkIO",
    "Histogram",
    "Journal",
    "Output",
    "Roi",
    "SchedulerLike",
    "SparseCounts",
    "TreeReducer",
    "as_input",
    "as_inputs",
    "check_chunk_alignment",
    "check_inputs",
    "count_overlaps",
    "default_block_shape",
    "default_chunks",
    "finish_output",
    "gaussian_filter",
    "gaussian_halo",
    "histogram",
    "input_spacing",
    "is_complete",
    "label",
    "local_cluster",
    "map_blocks",
    "median_filter",
    "merge_pairs",
    "open_backend",
    "parse_block_shape",
    "prepare_output",
    "read_block",
    "reduce_blocks",
    "relabel",
    "resolve_chunks",
    "run_blocks",
    "write_block",
]
