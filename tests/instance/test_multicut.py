"""Multicut agglomeration (``linkage="multicut"``: greedy additive edge contraction)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from emseg.errors import EmsegValueError
from emseg.instance import (
    agglomerate,
    agglomerate_blockwise,
    agglomerate_graph,
    boundary_graph,
    fragments_blockwise,
    region_adjacency_graph,
)
from emseg.instance._agglomerate import multicut_costs
from emseg.instance._rag import RegionAdjacencyGraph

from .conftest import cell_grid
from .test_merge_small import _partition, _preset_doc


def _graph(pairs, means, counts, sizes):
    """A hand-made graph: nodes 1..len(sizes), edges `pairs` with face `means` and `counts`."""
    counts = np.asarray(counts, dtype=np.float64)
    return RegionAdjacencyGraph(
        edges=np.asarray(pairs, dtype=np.uint64),
        features={"count": counts, "sum": np.asarray(means, dtype=np.float64) * counts},
        nodes=np.arange(1, len(sizes) + 1, dtype=np.uint64),
        sizes=np.asarray(sizes, dtype=np.int64),
    )


def _cost(p, count, max_count, t):
    return (math.log((1 - p) / p) + math.log(t / (1 - t))) * count / max_count


def test_sum_linkage_differs_from_mean_by_hand():
    # 1|2: a large face (100 pairs) of mean 0.35; 2|3: one pair of mean 0.05; 1|3: 100 pairs
    # of mean 0.45. Threshold 0.4.
    rag = _graph([(1, 2), (1, 3), (2, 3)], [0.35, 0.45, 0.05], [100, 100, 1], [50, 50, 50])
    # mean: 2|3 first (0.05); the merged face {1}|{2,3} has mean (35 + 45) / 200 = 0.40: stop
    mean = agglomerate_graph(rag, threshold=0.4)
    assert mean.segment.tolist() == [1, 2, 2]
    # multicut: costs 1|2 = +0.214, 2|3 = +0.0254, 1|3 = -0.205: 1|2 first; then
    # {1,2}|3 = 0.0254 - 0.205 < 0: stop
    w12, w23, w13 = _cost(0.35, 100, 100, 0.4), _cost(0.05, 1, 100, 0.4), _cost(0.45, 100, 100, 0.4)
    assert w12 > w23 > 0 > w13
    assert w23 + w13 < 0
    mc = agglomerate_graph(rag, threshold=0.4, linkage="multicut")
    assert mc.segment.tolist() == [1, 1, 2]
    np.testing.assert_allclose(mc.merges, [[1, 2, w12]])
    # a lower threshold makes 1|2 repulsive too: nothing merges (and 2|3 alone is not enough
    # to pull 1 along): 2|3 merges, then {2,3}|1 = w12' + w13' < 0
    low = agglomerate_graph(rag, threshold=0.3, linkage="multicut")
    assert low.segment.tolist() == [1, 2, 2]


def test_costs_formula_sign_and_size_weighting():
    means = np.array([0.1, 0.4, 0.39, 0.41, 0.9, 0.0, 1.0])
    counts = np.array([10, 10, 5, 5, 20, 1, 1])
    w = multicut_costs(means, counts, 0.4)
    ref = [
        _cost(min(max(p, 1e-3), 1 - 1e-3), c, 20, 0.4) for p, c in zip(means, counts, strict=True)
    ]
    np.testing.assert_allclose(w, ref, rtol=1e-12)
    assert (w > 0).tolist() == [True, False, True, False, False, True, False]
    assert w[1] == pytest.approx(0.0, abs=1e-12)  # exactly at the threshold: neither
    flat = multicut_costs(means, counts, 0.4, size_exponent=0)
    np.testing.assert_allclose(flat * counts / 20, w, rtol=1e-12)


def _brute_gaec(rag, t):
    """Independent GAEC: recompute every cluster pair's summed cost from the original edges."""
    w = multicut_costs(rag.features["sum"] / rag.features["count"], rag.features["count"], t)
    label = {int(n): int(n) for n in rag.nodes}
    while True:
        between: dict[tuple[int, int], float] = {}
        for (u, v), x in zip(rag.edges.tolist(), w.tolist(), strict=True):
            a, b = sorted((label[u], label[v]))
            if a != b:
                between[(a, b)] = between.get((a, b), 0.0) + x
        if not between:
            break
        (a, b), best = max(between.items(), key=lambda kv: kv[1])
        if best <= 0:
            break
        for n in label:
            if label[n] == b:
                label[n] = a
    return label, between


@pytest.mark.parametrize("seed", range(5))
def test_equals_brute_force_gaec_and_is_locally_optimal(seed):
    rng = np.random.default_rng(seed)
    frag = rng.integers(1, 25, size=(4, 6, 7))
    bnd = rng.random(frag.shape)
    rag = region_adjacency_graph(frag, bnd)
    for t in (0.3, 0.5, 0.7):
        got = agglomerate_graph(rag, threshold=t, linkage="multicut")
        label, between = _brute_gaec(rag, t)
        ref = np.zeros(int(frag.max()) + 1, dtype=np.int64)
        for n, lab in label.items():
            ref[n] = lab
        assert _partition(got.lookup(int(frag.max()))) == _partition(ref)
        # no two touching segments would lower the multicut objective by joining
        assert all(x <= 0 for x in between.values())
    # and it is not the mean agglomeration on these graphs
    assert any(
        _partition(agglomerate_graph(rag, threshold=t, linkage="multicut").lookup(24))
        != _partition(agglomerate_graph(rag, threshold=t).lookup(24))
        for t in (0.3, 0.5, 0.7)
    )


@pytest.mark.parametrize("seed", range(3))
def test_equals_bioimage_cpp_greedy_additive_multicut(seed):
    import bioimage_cpp as bic

    rng = np.random.default_rng(seed)
    frag = rng.integers(1, 300, size=(10, 30, 30))
    rag = region_adjacency_graph(frag, rng.random(frag.shape))
    n = int(rag.nodes.max()) + 1
    graph = bic.graph.UndirectedGraph.from_edges(n, rag.edges.astype(np.uint64))
    counts = []
    for t in (0.4, 0.5, 0.6):
        w = multicut_costs(rag.features["sum"] / rag.features["count"], rag.features["count"], t)
        objective = bic.graph.multicut.MulticutObjective(graph, w)
        ref = np.asarray(bic.graph.multicut.GreedyAdditiveMulticut().optimize(objective))
        got = agglomerate_graph(rag, threshold=t, linkage="multicut").lookup(n - 1)
        ref_part = _partition(np.where(np.isin(np.arange(n), rag.nodes), ref + 1, 0))
        assert _partition(got) == ref_part
        counts.append(int(got.max()))
    assert counts[0] > counts[1] > 1  # a lower threshold keeps more segments; not trivial


def test_merge_small_after_multicut_uses_the_mean():
    # 1|2 repulsive (0.6), 2|3 repulsive (0.7): multicut merges nothing; the 2-voxel segment 2
    # then joins 1 (mean 0.6 < 0.7)
    rag = _graph([(1, 2), (2, 3)], [0.6, 0.7], [4, 4], [10, 2, 10])
    assert agglomerate_graph(rag, threshold=0.5, linkage="multicut").segment.tolist() == [1, 2, 3]
    res = agglomerate_graph(rag, threshold=0.5, linkage="multicut", merge_small=3)
    assert res.segment.tolist() == [1, 1, 2]
    np.testing.assert_allclose(res.merges, [[1, 2, 0.6]])


def test_in_memory_and_blockwise_equal_the_graph():
    _, bnd, _, _ = cell_grid(3, shape=(6, 18, 18), cell=6)
    sp = (10.0, 10.0, 10.0)
    kw = {"progress": False, "sigma_nm": 7, "halo": 2, "spacing": sp}
    frag = fragments_blockwise(bnd, block_shape=(6, 18, 18), **kw)[:]
    rag = boundary_graph(frag, bnd)
    ref = agglomerate_graph(rag, threshold=0.3, linkage="multicut").lookup(int(frag.max()))[frag]
    assert 1 < ref.max() < frag.max()  # it merges, and not everything
    for block in ((3, 9, 9), (6, 18, 18)):
        out = agglomerate_blockwise(bnd, threshold=0.3, linkage="multicut", n_workers=2,
                                    block_shape=block, chunks=block, **kw)  # fmt: skip
        got = out[:]
        assert out.attrs["emseg"]["params"]["linkage"] == "multicut"
        # the same fragments for a one-block run: the in-memory chain bit for bit
        if block == (6, 18, 18):
            np.testing.assert_array_equal(got, ref)
        else:
            f2 = fragments_blockwise(bnd, block_shape=block, chunks=block, **kw)[:]
            r2 = boundary_graph(f2, bnd)
            exp = agglomerate_graph(r2, threshold=0.3, linkage="multicut").lookup(int(f2.max()))
            np.testing.assert_array_equal(got, exp[f2])
    frag2 = np.repeat(np.arange(1, 5), 3)[None, :]
    b2 = np.zeros(frag2.shape)
    b2[0, 2:4], b2[0, 5:7], b2[0, 8:10] = 0.2, 0.8, 0.2
    assert agglomerate(frag2, b2, threshold=0.5, linkage="multicut").tolist() == [
        [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    ]


def test_preset_and_cli_reach_multicut(tmp_path, capsys):
    import tifffile

    from emseg.cli import main
    from emseg.errors import FormatError
    from emseg.io import open_image
    from emseg.presets._preset import parse_preset
    from emseg.presets._segment import _instances

    _, bnd, _, _ = cell_grid(3, shape=(6, 18, 18), cell=6)
    sp = (10.0, 10.0, 10.0)
    frag = fragments_blockwise(bnd, spacing=sp, sigma_nm=7.0, halo=2, progress=False)[:]
    ref = agglomerate_graph(boundary_graph(frag, bnd), threshold=0.3, linkage="multicut")
    ref = ref.lookup(int(frag.max()))[frag]
    agg = {"edges": "mean", "threshold": 0.3, "edge_classifier": None, "linkage": "multicut"}
    run = {"block_shape": (6, 18, 18), "chunks": None, "n_workers": 1, "scheduler": None,
           "resume": False, "progress": False}  # fmt: skip
    preset = parse_preset(_preset_doc(agg), tmp_path / "p")
    np.testing.assert_array_equal(_instances(preset, bnd, tmp_path / "o.zarr", sp, run)[:], ref)
    with pytest.raises(FormatError, match="linkage"):
        parse_preset(_preset_doc({**agg, "linkage": "gasp"}), tmp_path / "p")
    path = tmp_path / "boundary.tif"
    tifffile.imwrite(path, bnd)
    out = tmp_path / "cli.zarr"
    args = ["instances", str(path), str(out), "--method", "agglomerate", "--threshold", "0.3",
            "--sigma", "7", "--halo", "2", "--no-progress", "--spacing", "10", "10", "10",
            "--linkage", "multicut"]  # fmt: skip
    assert main(args) == 0
    np.testing.assert_array_equal(open_image(out)[:], ref)


def test_bad_input():
    rag = _graph([(1, 2)], [0.3], [4], [5, 5])
    for t in (0.0, 1.0):
        with pytest.raises(EmsegValueError, match="strictly between 0 and 1"):
            agglomerate_graph(rag, threshold=t, linkage="multicut")
    with pytest.raises(EmsegValueError, match="linkage"):
        agglomerate_graph(rag, threshold=0.5, linkage="sum")  # type: ignore[arg-type]
    for e in (-1.0, float("inf"), True):
        with pytest.raises(EmsegValueError, match="size_exponent"):
            agglomerate_graph(rag, threshold=0.5, linkage="multicut", size_exponent=e)
    _, bnd, _, _ = cell_grid(2, shape=(4, 12, 12), cell=6)
    with pytest.raises(EmsegValueError, match="strictly between"):
        agglomerate_blockwise(bnd, threshold=1.0, linkage="multicut", progress=False)


def test_ties_merge_the_smaller_pair_first():
    # two equal attractive faces 1|2 and 2|3 and a repulsive 1|3 that outweighs either:
    # (1, 2) merges first, then {1,2}|3 = w + w13 < 0
    rag = _graph([(1, 2), (1, 3), (2, 3)], [0.2, 0.9, 0.2], [10, 10, 10], [5, 5, 5])
    res = agglomerate_graph(rag, threshold=0.5, linkage="multicut")
    assert res.segment.tolist() == [1, 1, 2]
    assert [tuple(map(int, m[:2])) for m in res.merges] == [(1, 2)]
    assert list(itertools.islice(res.merges[:, 2], 1)) == pytest.approx([math.log(4)])


def test_segment_list_names_the_linkage(tmp_path):
    from emseg.cli._segment import _agglomeration_note, list_lines
    from emseg.presets._preset import parse_preset

    base = {"edges": "mean", "threshold": 0.3, "edge_classifier": None}
    mean = parse_preset(_preset_doc(base), tmp_path / "p")
    multicut = parse_preset(_preset_doc({**base, "linkage": "multicut"}), tmp_path / "p")
    assert _agglomeration_note(mean) == " (mean linkage, threshold 0.3)"
    assert _agglomeration_note(multicut) == " (multicut linkage, threshold 0.3)"
    # the shipped neuron preset, whatever its linkage, shows it on its instances line
    shipped = [line for line in list_lines() if line.startswith("  instances   agglomerate")]
    assert len(shipped) == 1
    assert "linkage, threshold" in shipped[0]
