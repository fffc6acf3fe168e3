"""Small-segment clean-up after agglomeration (``merge_small`` / ``merge_small_nm3``)."""

from __future__ import annotations

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
from emseg.instance._agglomerate import merge_small_voxels

from .conftest import cell_grid


def _row(sizes, faces):
    """Fragments 1..n in a row of the given widths (x), 1 voxel high; `faces[i]` on face i|i+1.

    The boundary value at both voxels of each face is ``faces[i]``, so the face
    between fragments i+1 and i+2 has mean ``faces[i]``; interior voxels are 0.
    """
    frag = np.repeat(np.arange(1, len(sizes) + 1), sizes)[None, :]
    bnd = np.zeros(frag.shape)
    edges = np.cumsum(sizes)[:-1]
    for e, v in zip(edges, faces, strict=True):
        bnd[0, e - 1] = v
        bnd[0, e] = v
    return frag, bnd


def _partition(lookup: np.ndarray) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for node, seg in enumerate(lookup.tolist()):
        if seg:
            groups.setdefault(seg, []).append(node)
    return sorted(groups.values())


def test_small_segment_goes_to_its_lowest_mean_neighbour():
    # widths 5 2 5; faces 1|2 = 0.7, 2|3 = 0.6: nothing below the threshold 0.5;
    # the 2-voxel fragment joins 3 (mean 0.6 < 0.7), not 1, though 1 has the smaller id
    frag, bnd = _row([5, 2, 5], [0.7, 0.6])
    rag = region_adjacency_graph(frag, bnd)
    assert agglomerate_graph(rag, threshold=0.5).segment.tolist() == [1, 2, 3]
    res = agglomerate_graph(rag, threshold=0.5, merge_small=3)
    assert res.segment.tolist() == [1, 2, 2]
    np.testing.assert_allclose(res.merges, [[2, 3, 0.6]])
    # the merged segment (7 voxels) is not small: 1 (5 voxels) is, and now merges
    res = agglomerate_graph(rag, threshold=0.5, merge_small=6)
    assert res.segment.tolist() == [1, 1, 1]
    np.testing.assert_allclose(res.merges, [[2, 3, 0.6], [1, 3, 0.7]])


def test_smallest_first_and_sizes_updated_after_each_merge():
    # widths 2 3 9; faces 0.8 0.9. min 5: fragment 1 (2 voxels) goes first, into 2
    # (its only neighbour): 1+2 has 5 voxels, no longer small -> it stays apart from 3
    frag, bnd = _row([2, 3, 9], [0.8, 0.9])
    rag = region_adjacency_graph(frag, bnd)
    assert agglomerate_graph(rag, threshold=0.5, merge_small=5).segment.tolist() == [1, 1, 2]
    # min 6: 1+2 (5 voxels) is still small and merges on into 3 across its only face (0.9)
    res = agglomerate_graph(rag, threshold=0.5, merge_small=6)
    assert res.segment.tolist() == [1, 1, 1]
    assert res.merges[:, 2].tolist() == pytest.approx([0.8, 0.9])


def test_threshold_merges_first_then_merged_faces_are_exact():
    # widths 1 4 1 4; faces 0.1 (1|2), 0.7 (2|3), 0.4 (3|4); t = 0.2 merges 1+2 only.
    # 3 (1 voxel) then sees 1+2 across mean 0.7 and 4 across 0.4 -> joins 4
    frag, bnd = _row([1, 4, 1, 4], [0.1, 0.7, 0.4])
    rag = region_adjacency_graph(frag, bnd)
    res = agglomerate_graph(rag, threshold=0.2, merge_small=2)
    assert res.segment.tolist() == [1, 1, 2, 2]
    assert res.merges[:, 2].tolist() == pytest.approx([0.1, 0.4])


def test_size_tie_goes_to_the_smaller_id_and_isolated_segments_stay():
    # two 2-voxel fragments 1 and 2 joined by a face 0.9; 3 elsewhere with no neighbour
    frag = np.array([[1, 1, 2, 2, 0, 3]])
    bnd = np.array([[0.0, 0.9, 0.9, 0.0, 0.0, 0.0]])
    rag = region_adjacency_graph(frag, bnd)
    res = agglomerate_graph(rag, threshold=0.5, merge_small=3)
    assert res.segment.tolist() == [1, 1, 2]  # 3 has no neighbour: stays
    np.testing.assert_allclose(res.merges, [[1, 2, 0.9]])  # 1 went first (tie on size)


def test_edge_weights_choose_the_neighbour():
    frag, bnd = _row([5, 2, 5], [0.7, 0.6])
    rag = region_adjacency_graph(frag, bnd)
    w = np.array([0.55, 0.9])  # learned weights say: 2 belongs with 1
    res = agglomerate_graph(rag, threshold=0.5, edge_weights=w, merge_small=3)
    assert res.segment.tolist() == [1, 1, 2]
    np.testing.assert_allclose(res.merges, [[1, 2, 0.55]])


def _brute_force(frag: np.ndarray, bnd: np.ndarray, seg: np.ndarray, min_size: int) -> np.ndarray:
    """Image-level reference: recompute the graph of the current segments after every merge."""
    lab = np.zeros_like(frag)
    for s in np.unique(seg[seg > 0]):  # each segment named by its smallest fragment id
        lab[seg == s] = frag[seg == s].min()
    while True:
        rag = region_adjacency_graph(lab, bnd)
        size = dict(zip(rag.nodes.tolist(), rag.sizes.tolist(), strict=True))
        has_nbr = set(rag.edges.ravel().tolist())
        small = [(size[n], n) for n in size if size[n] < min_size and n in has_nbr]
        if not small:
            return lab
        _, n = min(small)
        faces = [
            (float(m), int(v if u == n else u))
            for (u, v), m in zip(rag.edges.tolist(), rag.features["mean"], strict=True)
            if n in (u, v)
        ]
        _, target = min(faces)
        lab[(lab == n) | (lab == target)] = min(n, target)


@pytest.mark.parametrize("seed", range(6))
def test_equals_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    frag = rng.integers(0, 40, size=(4, 7, 8))  # 0 = background, fragments of 0..~10 voxels
    bnd = rng.random(frag.shape)
    rag = region_adjacency_graph(frag, bnd)
    t = 0.35 if seed % 2 else 0.0
    base = agglomerate_graph(rag, threshold=t).lookup(int(frag.max()))[frag]
    for min_size in (4, 9, 30):
        got = agglomerate_graph(rag, threshold=t, merge_small=min_size).lookup(int(frag.max()))
        ref = np.zeros_like(got)
        ref[frag] = _brute_force(frag, bnd, base, min_size)
        assert _partition(got) == _partition(ref)
        # what is left small has no neighbour
        seg = got[frag]
        ids, sizes = np.unique(seg[frag > 0], return_counts=True)
        su, sv = got[rag.edges[:, 0]], got[rag.edges[:, 1]]
        touching = set(su[su != sv].tolist()) | set(sv[su != sv].tolist())
        assert not touching & set(ids[sizes < min_size].tolist())


def test_merge_small_zero_is_the_plain_agglomeration(rng):
    frag = rng.integers(1, 30, size=(5, 6, 7))
    bnd = rng.random(frag.shape)
    rag = region_adjacency_graph(frag, bnd)
    a = agglomerate_graph(rag, threshold=0.45)
    b = agglomerate_graph(rag, threshold=0.45, merge_small=0)
    np.testing.assert_array_equal(a.segment, b.segment)
    np.testing.assert_array_equal(a.merges, b.merges)


def test_agglomerate_in_nm3_2d_and_anisotropic():
    frag, bnd = _row([5, 2, 5], [0.7, 0.6])
    # 3D, 4 x 4 x 40 nm = 640 nm^3 per voxel: 3 voxels = 1920 nm^3
    f3, b3 = frag[None], bnd[None]
    sp = (40.0, 4.0, 4.0)
    out = agglomerate(f3, b3, threshold=0.5, spacing=sp, merge_small_nm3=1920.0)
    assert out[0, 0].tolist() == [1] * 5 + [2] * 7
    # 1919 nm^3 is < 3 voxels: the 2-voxel fragment (1280 nm^3) is below it, 5 voxels are not
    assert agglomerate(f3, b3, threshold=0.5, spacing=sp, merge_small_nm3=1281.0).max() == 2
    assert agglomerate(f3, b3, threshold=0.5, spacing=sp, merge_small_nm3=1280.0).max() == 3
    # 2D: nm^2, 10 x 10 nm pixels; 6 pixels = 600 nm^2 also takes fragment 1 (5 pixels)
    assert agglomerate(frag, bnd, threshold=0.5, spacing=10.0, merge_small_nm3=600.0).max() == 1
    assert merge_small_voxels(None, spacing=sp, ndim=3) == 0
    assert merge_small_voxels(0.0, spacing=sp, ndim=3) == 0
    assert merge_small_voxels(640.5, spacing=sp, ndim=3) == 2


def test_bad_input():
    frag, bnd = _row([5, 2, 5], [0.7, 0.6])
    rag = region_adjacency_graph(frag, bnd)
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(EmsegValueError, match="`merge_small` must be an integer"):
            agglomerate_graph(rag, threshold=0.5, merge_small=bad)
    with pytest.raises(EmsegValueError, match="not in voxels"):
        agglomerate(frag[None], bnd[None], threshold=0.5, spacing=10.0, merge_small_nm3=3)
    with pytest.raises(EmsegValueError, match=">= 0"):
        agglomerate(frag, bnd, threshold=0.5, merge_small_nm3=-1.0)


@pytest.mark.parametrize("block", [(6, 18, 18), (4, 7, 8), (6, 10, 18)])
def test_blockwise_equals_in_memory_graph(block):
    _, bnd, _, _ = cell_grid(3, shape=(6, 18, 18), cell=6)
    sp = (10.0, 10.0, 10.0)
    kw = {"block_shape": block, "chunks": block, "progress": False, "sigma_nm": 7, "halo": 2}
    kw["spacing"] = sp
    frag = fragments_blockwise(bnd, **kw)[:]
    rag = boundary_graph(frag, bnd)
    plain = agglomerate_graph(rag, threshold=0.3).lookup(int(frag.max()))[frag]
    sizes = np.unique(plain[plain > 0], return_counts=True)[1]
    n = int(np.sort(sizes)[sizes.size // 2])  # half the segments are smaller: the option acts
    ref = agglomerate_graph(rag, threshold=0.3, merge_small=n).lookup(int(frag.max()))[frag]
    assert ref.max() < plain.max()
    out = agglomerate_blockwise(bnd, threshold=0.3, merge_small_nm3=n * 1000.0, n_workers=2, **kw)
    np.testing.assert_array_equal(out[:], ref)
    assert out.attrs["emseg"]["params"]["merge_small_nm3"] == n * 1000.0


def _median_segment(rag, t: float) -> int:
    """The median segment size (voxels) of the plain agglomeration: half are smaller."""
    seg = agglomerate_graph(rag, threshold=t).segment
    sizes = np.bincount(seg.astype(np.int64), weights=rag.sizes)[1:]
    return int(np.sort(sizes)[sizes.size // 2])


def _preset_doc(agglomeration):
    return {
        "format": "emseg.preset",
        "format_version": 1,
        "name": "tiny-neurons",
        "spacing": [10.0, 10.0, 10.0],
        "prediction": {"kind": "forest", "model": "none.safetensors", "class": "boundary"},
        "instances": {
            "method": "agglomerate",
            "supervoxels": {"sigma_nm": 7.0},
            "agglomeration": agglomeration,
            "halo_nm": [20.0, 20.0, 20.0],
        },
    }


def test_preset_merge_small_nm3_reaches_the_agglomeration(tmp_path):
    from emseg.errors import FormatError
    from emseg.presets._preset import parse_preset
    from emseg.presets._segment import _instances

    _, bnd, _, _ = cell_grid(3, shape=(6, 18, 18), cell=6)
    sp = (10.0, 10.0, 10.0)
    run = {"block_shape": (6, 18, 18), "chunks": None, "n_workers": 1, "scheduler": None,
           "resume": False, "progress": False}  # fmt: skip
    base = {"edges": "mean", "threshold": 0.3, "edge_classifier": None}
    frag = fragments_blockwise(bnd, spacing=sp, sigma_nm=7.0, halo=2, progress=False)[:]
    rag = boundary_graph(frag, bnd)
    n = _median_segment(rag, 0.3)
    for n_vox in (0, n):
        agg = {**base, "merge_small_nm3": n_vox * 1000.0 if n_vox else None}
        preset = parse_preset(_preset_doc(agg), tmp_path / "p")
        out = _instances(preset, bnd, tmp_path / f"out{n_vox}.zarr", sp, run)
        ref = agglomerate_graph(rag, threshold=0.3, merge_small=n_vox).lookup(int(frag.max()))
        np.testing.assert_array_equal(out[:], ref[frag])
    assert ref[frag].max() < agglomerate_graph(rag, threshold=0.3).segment.max()
    for bad in (-5.0, "1e6", True):
        with pytest.raises(FormatError, match="merge_small_nm3"):
            parse_preset(_preset_doc({**base, "merge_small_nm3": bad}), tmp_path / "p")


def test_cli_merge_small(tmp_path, capsys):
    import tifffile
    import zarr

    from emseg.cli import main

    _, bnd, _, _ = cell_grid(3, shape=(6, 18, 18), cell=6)
    path = tmp_path / "boundary.tif"
    tifffile.imwrite(path, bnd)
    args = ["instances", str(path), "", "--method", "agglomerate", "--threshold", "0.3",
            "--sigma", "7", "--halo", "2", "--no-progress", "--spacing", "10", "10", "10"]  # fmt: skip
    frag = fragments_blockwise(bnd, spacing=10.0, sigma_nm=7.0, halo=2, progress=False)[:]
    rag = boundary_graph(frag, bnd)
    n = _median_segment(rag, 0.3)
    ref = agglomerate_graph(rag, threshold=0.3, merge_small=n)
    assert ref.segment.max() < agglomerate_graph(rag, threshold=0.3).segment.max()
    args[2] = str(tmp_path / "small.zarr")
    assert main([*args, "--merge-small", str(n * 1000)]) == 0
    got = zarr.open_group(args[2], mode="r")["0"][:]
    np.testing.assert_array_equal(got, ref.lookup(int(frag.max()))[frag])
    args[2] = str(tmp_path / "voxels.zarr")
    assert main([*args, "--merge-small", "40"]) != 0  # 40 voxels is not 40 nm^3
    assert "nm^3, not in voxels" in capsys.readouterr().err
