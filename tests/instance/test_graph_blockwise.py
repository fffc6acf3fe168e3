"""Agglomeration on one global graph: blockwise = the in-memory chain on the same fragments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.instance import _graph_blockwise as gb
from emseg.instance import (
    agglomerate,
    agglomerate_blockwise,
    agglomerate_graph,
    boundary_graph,
    fragments_blockwise,
    graph_blockwise,
    quantise_boundary,
    region_adjacency_graph,
    supervoxels,
    train_edge_classifier,
)
from emseg.metrics import voi

from .conftest import cell_grid

SHAPE = (6, 18, 18)
OPTS = {"sigma_nm": 0.7, "halo": 2}
BLOCKS = [(6, 18, 18), (4, 7, 8), (6, 10, 18)]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a == 0, b == 0) and voi(a, b, ignore_truth=()).total == 0.0


@pytest.fixture(scope="module")
def grid():
    truth, bnd, _, _ = cell_grid(3, shape=SHAPE, cell=6)
    return truth, bnd


@pytest.fixture(scope="module")
def classifier(grid):
    truth, bnd = grid
    q = gb.dequantise(quantise_boundary(bnd))
    frag = supervoxels(q, sigma_nm=0.7)
    return train_edge_classifier([(boundary_graph(frag, q), frag, truth)], n_estimators=10)


def reference(frag: np.ndarray, bnd: np.ndarray, t: float, clf=None) -> np.ndarray:
    """The in-memory chain: boundary graph of the assembled fragments, one agglomeration."""
    rag = boundary_graph(frag, bnd)
    w = None if clf is None else 1.0 - clf.merge_probability(rag)
    return agglomerate_graph(rag, threshold=t, edge_weights=w).lookup(int(frag.max()))[frag]


def test_quantise_by_hand():
    p = np.array([[0.0, 0.2, 0.5, 1.0, 1.7, -0.1]], np.float32)
    np.testing.assert_array_equal(quantise_boundary(p), [[0, 51, 128, 255, 255, 0]])
    lev = np.array([[3, 200]], np.uint8)
    assert quantise_boundary(lev) is lev
    with pytest.raises(EmsegTypeError, match="uint8 levels"):
        quantise_boundary(np.array([[1, 2]], np.int16))
    with pytest.raises(EmsegValueError, match="NaN"):
        quantise_boundary(np.array([[np.nan, 0.1]]))


def test_boundary_graph_by_hand():
    frag = np.array([[1, 1, 2, 2], [1, 3, 3, 2]])
    bnd = np.array([[0.0, 0.2, 0.6, 0.0], [0.2, 1.0, 1.0, 0.0]])
    g = boundary_graph(frag, bnd)  # levels [[0, 51, 153, 0], [51, 255, 255, 0]]
    assert g.edges.tolist() == [[1, 2], [1, 3], [2, 3]]
    f = {k: (v * 255).round(6).tolist() for k, v in g.features.items()}
    assert g.features["count"].tolist() == [1, 2, 2]  # count is not scaled
    # pairs in levels: 1-2 (51+153)/2; 1-3 (51+255)/2 twice; 2-3 (255+0)/2 and (153+255)/2
    assert f["mean"] == [102.0, 153.0, 165.75]
    assert f["min"] == [102.0, 153.0, 127.5]
    assert f["max"] == [102.0, 153.0, 204.0]
    assert f["q25"] == [102.0, 153.0, 127.5 + 0.25 * 76.5]
    assert g.nodes.tolist() == [1, 2, 3]
    assert g.sizes.tolist() == [3, 3, 2]


@pytest.mark.parametrize("block", BLOCKS[1:])
def test_graph_blockwise_equals_boundary_graph_bit_for_bit(grid, block):
    _, bnd = grid
    frag = supervoxels(bnd, sigma_nm=0.7)
    ref = boundary_graph(frag, bnd)
    got = graph_blockwise(frag, bnd, block_shape=block, progress=False)
    np.testing.assert_array_equal(got.edges, ref.edges)
    np.testing.assert_array_equal(got.nodes, ref.nodes)
    np.testing.assert_array_equal(got.sizes, ref.sizes)
    assert set(got.features) == set(ref.features)
    for k in ref.features:
        np.testing.assert_array_equal(got.features[k], ref.features[k], err_msg=k)
    # and the float graph of the dequantised map, to rounding
    flt = region_adjacency_graph(frag, quantise_boundary(bnd) / 255.0)
    for k in ref.features:
        np.testing.assert_allclose(got.features[k], flt.features[k], rtol=1e-12, err_msg=k)


def test_graph_blockwise_2d_and_uint8_levels(rng):
    frag = rng.integers(1, 6, size=(17, 23)).astype(np.uint32)
    lev = rng.integers(0, 256, size=(17, 23)).astype(np.uint8)
    ref = boundary_graph(frag, lev)
    got = graph_blockwise(frag, lev, block_shape=(5, 7), progress=False)
    for k in ref.features:
        np.testing.assert_array_equal(got.features[k], ref.features[k], err_msg=k)
    np.testing.assert_allclose(
        ref.features["q25"], region_adjacency_graph(frag, lev / 255.0).features["q25"], rtol=1e-12
    )


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("edges", ["mean", "learned"])
def test_blockwise_equals_in_memory_chain_on_its_fragments(grid, classifier, block, edges):
    _, bnd = grid
    clf = classifier if edges == "learned" else None
    t = 0.5 if clf is None else 0.4
    out = agglomerate_blockwise(
        bnd,
        threshold=t,
        edge_classifier=clf,
        block_shape=block,
        chunks=block,
        n_workers=2,
        progress=False,
        **OPTS,
    )
    frag = fragments_blockwise(bnd, block_shape=block, chunks=block, progress=False, **OPTS)[:]
    ref = reference(frag, bnd, t, clf)
    np.testing.assert_array_equal(out[:], ref)  # same ids, not only the same partition
    assert 1 < out.attrs["emseg"]["n_labels"] == int(ref.max())
    assert out.attrs["emseg"]["n_fragments"] == np.unique(frag).size
    # the float graph of the dequantised map gives the same segmentation here
    flt = region_adjacency_graph(frag, quantise_boundary(bnd) / 255.0)
    w = None if clf is None else 1.0 - clf.merge_probability(flt)
    seg = agglomerate_graph(flt, threshold=t, edge_weights=w).lookup(int(frag.max()))[frag]
    assert same(seg, out[:])


def test_2d_blockwise_equals_in_memory_chain(grid):
    _, bnd = grid
    b2 = np.ascontiguousarray(bnd[2])
    kw = {"block_shape": (7, 8), "chunks": (7, 8), "progress": False, **OPTS}
    out = agglomerate_blockwise(b2, threshold=0.5, **kw)
    frag = fragments_blockwise(b2, **kw)[:]
    np.testing.assert_array_equal(out[:], reference(frag, b2, 0.5))
    assert out.attrs["emseg"]["n_labels"] > 1


def test_one_block_equals_in_memory_supervoxels_and_agglomeration(grid):
    _, bnd = grid
    q = gb.dequantise(quantise_boundary(bnd))  # float32 q / 255, as emseg segment reads it
    frag = fragments_blockwise(bnd, block_shape=SHAPE, progress=False, sigma_nm=0.7)[:]
    np.testing.assert_array_equal(frag, supervoxels(q, sigma_nm=0.7))
    out = agglomerate_blockwise(bnd, threshold=0.5, block_shape=SHAPE, progress=False, **OPTS)
    assert same(agglomerate(supervoxels(q, sigma_nm=0.7), q, threshold=0.5), out[:])


def test_fragments_are_unique_per_block_and_cut_at_faces(grid):
    _, bnd = grid
    block = (3, 9, 9)
    frag = fragments_blockwise(bnd, block_shape=block, chunks=block, progress=False, **OPTS)[:]
    budget = np.prod(block)
    assert frag.min() >= 1
    for bz in range(2):
        for by in range(2):
            for bx in range(2):
                sl = (slice(3 * bz, 3 * bz + 3), slice(9 * by, 9 * by + 9))
                sl += (slice(9 * bx, 9 * bx + 9),)
                bid = (bz * 2 + by) * 2 + bx
                ids = np.unique(frag[sl])
                assert ids.min() > bid * budget
                assert ids.max() <= (bid + 1) * budget
                assert ids.max() - bid * budget == ids.size  # consecutive per block


def test_given_fragments_any_block_shape(grid):
    _, bnd = grid
    frag = supervoxels(bnd, sigma_nm=0.7).astype(np.uint32)
    ref = reference(frag, bnd, 0.45)
    for block in [(3, 7, 9), (6, 18, 18)]:
        out = agglomerate_blockwise(
            bnd, fragments=frag, threshold=0.45, block_shape=block, chunks=block, progress=False
        )
        np.testing.assert_array_equal(out[:], ref)
    # uint8 levels: the same result as the float map they quantise
    lev = quantise_boundary(bnd)
    out = agglomerate_blockwise(lev, fragments=frag, threshold=0.45, progress=False)
    np.testing.assert_array_equal(out[:], ref)


def test_serial_threads_and_written_output(tmp_path, grid):
    _, bnd = grid
    kw = {"threshold": 0.5, "block_shape": (3, 9, 9), "chunks": (3, 9, 9), "progress": False}
    a = agglomerate_blockwise(bnd, out=tmp_path / "a.zarr", scheduler="serial", **OPTS, **kw)
    b = agglomerate_blockwise(bnd, out=tmp_path / "b.zarr", n_workers=2, **OPTS, **kw)
    np.testing.assert_array_equal(a[:], b[:])
    assert a.dtype == np.uint64
    assert a.attrs["emseg"]["complete"] is True
    assert a.attrs["emseg"]["method"] == "agglomerate"
    assert not (tmp_path / "a.zarr.scratch").exists()  # intermediate fragments removed


@pytest.mark.slow
def test_distributed_local_cluster_gives_the_same_bytes(tmp_path, grid):
    from distributed import LocalCluster

    _, bnd = grid
    kw = {"threshold": 0.5, "block_shape": (3, 9, 9), "chunks": (3, 9, 9), "progress": False}
    local = agglomerate_blockwise(bnd, out=tmp_path / "a.zarr", **OPTS, **kw)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        dist = agglomerate_blockwise(
            bnd, out=tmp_path / "b.zarr", scheduler=cluster.scheduler_address, **OPTS, **kw
        )
    np.testing.assert_array_equal(local[:], dist[:])
    assert _chunks(tmp_path / "a.zarr") == _chunks(tmp_path / "b.zarr")


def _chunks(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and "/c/" in str(p.relative_to(root)).replace("\\", "/") + "/"
        and ".emseg" not in str(p)
    }


@pytest.mark.parametrize("stage", ["_EdgesTask", "_RelabelTask"])
def test_resume_after_a_failure_is_byte_identical(tmp_path, grid, monkeypatch, stage):
    _, bnd = grid
    kw = {"threshold": 0.5, "block_shape": (3, 9, 9), "chunks": (3, 9, 9), "progress": False}
    clean = agglomerate_blockwise(
        bnd, out=tmp_path / "clean.zarr", scheduler="serial", **OPTS, **kw
    )
    cls = getattr(gb, stage)
    original = cls.__call__
    calls = []

    def failing(self, block_id):
        calls.append(block_id)
        if len(calls) == 4:
            raise RuntimeError("injected failure")
        return original(self, block_id)

    monkeypatch.setattr(cls, "__call__", failing)
    out = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError, match="injected"):
        agglomerate_blockwise(bnd, out=out, scheduler="serial", **OPTS, **kw)
    monkeypatch.setattr(cls, "__call__", original)
    import zarr

    assert zarr.open_group(str(out), mode="r")["0"].attrs["emseg"]["complete"] is False
    with pytest.raises(Exception, match="already exists"):
        agglomerate_blockwise(bnd, out=out, scheduler="serial", **OPTS, **kw)
    done = agglomerate_blockwise(bnd, out=out, scheduler="serial", resume=True, **OPTS, **kw)
    np.testing.assert_array_equal(done[:], clean[:])
    assert _chunks(out) == _chunks(tmp_path / "clean.zarr")
    assert len(_chunks(out)) > 1


def test_cli_learned_edges_equal_the_function(tmp_path, grid, classifier):
    import tifffile

    from emseg.cli._main import main
    from emseg.instance import save_edge_classifier

    _, bnd = grid
    tifffile.imwrite(tmp_path / "b.tif", bnd)
    save_edge_classifier(classifier, tmp_path / "edges.safetensors")
    args = ["instances", str(tmp_path / "b.tif"), str(tmp_path / "o.zarr"), "--method"]
    args += ["agglomerate", "--threshold", "0.4", "--edge-classifier"]
    args += [str(tmp_path / "edges.safetensors"), "--no-progress", "--spacing", "1", "1", "1"]
    args += ["--block", "3", "9", "9", "--chunks", "3", "9", "9", "--halo", "2"]
    assert main(args) == 0
    import zarr

    got = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["0"][:]
    kw = {"block_shape": (3, 9, 9), "chunks": (3, 9, 9), "halo": 2, "progress": False}
    ref = agglomerate_blockwise(bnd, threshold=0.4, edge_classifier=classifier, **kw)
    np.testing.assert_array_equal(got, ref[:])


def test_bad_input(grid):
    _, bnd = grid
    with pytest.raises(EmsegValueError, match="threshold"):
        agglomerate_blockwise(bnd, threshold=2.0, progress=False)
    with pytest.raises(EmsegTypeError, match="boundary"):
        agglomerate_blockwise(bnd.astype(np.int16), threshold=0.5, progress=False)
    with pytest.raises(EmsegTypeError, match="fragments"):
        agglomerate_blockwise(bnd, fragments=bnd, threshold=0.5, progress=False)
    with pytest.raises(EmsegValueError, match="shape"):
        agglomerate_blockwise(
            bnd, fragments=np.ones((2, 3, 4), np.uint32), threshold=0.5, progress=False
        )
    with pytest.raises(EmsegTypeError, match="edge_classifier"):
        agglomerate_blockwise(bnd, threshold=0.5, edge_classifier=3, progress=False)
