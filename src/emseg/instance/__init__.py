"""Instance segmentation: from probability, boundary and affinity maps to objects.

Plain functions on numpy arrays (``docs/instance.md``):

- :func:`threshold_components` — threshold (with hysteresis), fill holes and
  remove small objects in nm^3, connected components;
- :func:`seeded_watershed`, :func:`find_seeds`, :func:`distance_watershed` —
  a compiled priority-flood watershed and seeds in physical units;
- :func:`supervoxels`, :func:`region_adjacency_graph`,
  :func:`agglomerate_graph`, :func:`agglomerate` — supervoxels and
  waterz-style mean-boundary agglomeration (with an optional clean-up of
  small segments, ``merge_small``), optionally driven by a learned
  :class:`EdgeClassifier` (:func:`train_edge_classifier`); at any size on one
  global graph: :func:`fragments_blockwise`, :func:`graph_blockwise`
  (= :func:`boundary_graph` in memory), :func:`agglomerate_blockwise`;
- :func:`mutex_watershed` — the mutex watershed on (long-range) affinities;
- :func:`link_sections` — 2D instances linked across sections (Hungarian on IoU);

and their blockwise versions (``*_blockwise``) that run through
:mod:`emseg.blockwise` on volumes of any size.
"""

from emseg.instance._agglomerate import (
    Agglomeration,
    agglomerate,
    agglomerate_graph,
    supervoxels,
)
from emseg.instance._blockwise import (
    components_blockwise,
    link_sections_blockwise,
    mutex_watershed_blockwise,
    segment_blockwise,
    watershed_blockwise,
)
from emseg.instance._components import threshold_components
from emseg.instance._edges import (
    EdgeClassifier,
    edge_features,
    edge_labels,
    load_edge_classifier,
    save_edge_classifier,
    train_edge_classifier,
)
from emseg.instance._graph_blockwise import (
    agglomerate_blockwise,
    boundary_graph,
    fragments_blockwise,
    graph_blockwise,
    quantise_boundary,
)
from emseg.instance._link2d import link_sections
from emseg.instance._mws import mutex_watershed
from emseg.instance._rag import RegionAdjacencyGraph, region_adjacency_graph
from emseg.instance._watershed import distance_watershed, find_seeds, seeded_watershed

__all__ = [
    "Agglomeration",
    "EdgeClassifier",
    "RegionAdjacencyGraph",
    "agglomerate",
    "agglomerate_blockwise",
    "agglomerate_graph",
    "boundary_graph",
    "components_blockwise",
    "distance_watershed",
    "edge_features",
    "edge_labels",
    "find_seeds",
    "fragments_blockwise",
    "graph_blockwise",
    "link_sections",
    "link_sections_blockwise",
    "load_edge_classifier",
    "mutex_watershed",
    "mutex_watershed_blockwise",
    "quantise_boundary",
    "region_adjacency_graph",
    "save_edge_classifier",
    "seeded_watershed",
    "segment_blockwise",
    "supervoxels",
    "threshold_components",
    "train_edge_classifier",
    "watershed_blockwise",
]
