"""The helpers of the result scripts (choose_flyem_chain, apply_flyem_choice, instance_results,
tune_presets), on hand-made inputs with known answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import apply_flyem_choice  # noqa: E402
import choose_flyem_chain  # noqa: E402
import instance_results  # noqa: E402
import tune_presets  # noqa: E402

from emseg.instance import region_adjacency_graph  # noqa: E402
from emseg.presets import load_preset  # noqa: E402


def test_perturbed_changes_each_voxel_by_at_most_one_level():
    rng = np.random.default_rng(3)
    b = (rng.integers(0, 256, (6, 7, 8)) / 255).astype(np.float32)
    b[0, 0, :2] = (0.0, 1.0)  # the ends stay in [0, 1]
    assert choose_flyem_chain.perturbed(b, 0) is b
    one, again, other = (choose_flyem_chain.perturbed(b, s) for s in (1, 1, 2))
    steps = np.rint((one - b) * 255).astype(int)
    assert set(np.unique(steps)) <= {-1, 0, 1}
    assert 0.25 < (steps != 0).mean() < 0.9  # about two thirds of the voxels move
    assert one.min() >= 0
    assert one.max() <= 1
    np.testing.assert_array_equal(np.rint(one * 255) / 255, one)  # still multiples of 1/255
    np.testing.assert_array_equal(one, again)  # a seed gives the same copy
    assert not np.array_equal(one, other)


def test_parse_candidate():
    assert choose_flyem_chain.parse_candidate("B=boundaries-fibsem:3+runs/x-3d:1") == (
        "B",
        [
            {"model": "boundaries-fibsem", "planes": 3, "tta": True, "weight": 1.0},
            {"model": "runs/x-3d", "planes": 1, "tta": True, "weight": 1.0},
        ],
    )
    assert choose_flyem_chain.parse_candidate("F=a:3:ft@2+b:1@0.5+c:1:ft")[1] == [
        {"model": "a", "planes": 3, "tta": "flips+transpose", "weight": 2.0},
        {"model": "b", "planes": 1, "tta": True, "weight": 0.5},
        {"model": "c", "planes": 1, "tta": "flips+transpose", "weight": 1.0},
    ]
    bad = ("B", "B=", "=m:1", "B=model", "B=model:2", "B=m:1@0", "B=m:1@x", "B=m:1@-1", "B=:1",
           "B=m:ft", "B=m:1:fx")  # fmt: skip
    for text in bad:
        with pytest.raises(SystemExit):
            choose_flyem_chain.parse_candidate(text)


def test_split_linkage():
    split = choose_flyem_chain.split_linkage
    assert split("M=a:3+runs/b:1#multicut") == ("M=a:3+runs/b:1", "multicut")
    assert split("B=a:3+runs/b:1") == ("B=a:3+runs/b:1", "mean")
    assert split("B=a:3#mean") == ("B=a:3", "mean")
    with pytest.raises(SystemExit):
        split("B=a:3#gasp")


def test_smoothed_objectives_average_threshold_neighbours_by_hand():
    """Neighbours share supervoxels (k) and clean-up; the grid's edges have one neighbour."""
    rows = [
        {"k": 0, "merge_small_nm3": 0.0, "threshold": t, "objective_mean": o}
        for t, o in ((0.35, 1.0), (0.375, 0.9), (0.4, 1.3))
    ] + [
        {"k": 1, "merge_small_nm3": 0.0, "threshold": 0.375, "objective_mean": 5.0},
        {"k": 0, "merge_small_nm3": 1e6, "threshold": 0.375, "objective_mean": 7.0},
    ]
    got = choose_flyem_chain.smoothed_objectives(rows)
    assert got == pytest.approx([(1.0 + 0.9) / 2, (1.0 + 0.9 + 1.3) / 3, (0.9 + 1.3) / 2, 5.0, 7.0])
    # a sharp minimum loses to a flat one of a higher level
    flat = [{**r, "k": 2, "objective_mean": 0.95} for r in rows[:3]]
    both = choose_flyem_chain.smoothed_objectives(rows[:3] + flat)
    assert min(range(6), key=lambda i: both[i]) >= 3
    assert min(rows[:3], key=lambda r: r["objective_mean"])["objective_mean"] == 0.9


def test_member_flags_round_trip_through_the_chooser_syntax():
    _, members = choose_flyem_chain.parse_candidate("F=a:3:ft@2+b:1+c:1:ft@0.25")
    flags = [apply_flyem_choice.member_flag(m) for m in members]
    assert flags == ["a:3:ft@2", "b:1", "c:1:ft@0.25"]
    assert choose_flyem_chain.parse_candidate("F=" + "+".join(flags))[1] == members
    # a session-6/7 choice file lists [model, planes] pairs: flips, weight 1
    assert apply_flyem_choice.member_flag(["m", 3]) == "m:3"
    assert apply_flyem_choice.preset_member(["m", 3]) == {"model": "m", "planes": 3, "tta": True}


def test_ensemble_description_names_weights_and_transpose():
    describe = instance_results.ensemble_map_description
    assert describe([("a", 3), ("b", 1)], True) == (
        "mean boundary map of a tri-planar and b, test-time flips"
    )
    members = [{"model": "a", "planes": 3, "tta": "flips+transpose", "weight": 2.0},
               {"model": "b", "planes": 1, "tta": "flips+transpose"}]  # fmt: skip
    assert describe(members, None) == (
        "weighted mean boundary map of a tri-planar (weight 2) and b (weight 1), "
        "test-time flips and y/x transpose"
    )
    mixed = [{"model": "a", "planes": 3, "tta": True}, members[1]]
    assert describe(mixed, None) == (
        "mean boundary map of a tri-planar and b (+ y/x transpose), test-time flips"
    )


def test_weighted_cached_map_is_the_presets_weighted_mean(tmp_path, rng):
    from emseg.semantic.deep import Member, predict_members

    from .deep._helpers import eval_model
    from .deep.conftest import _tiny_config

    iso = (10.0, 10.0, 10.0)
    cls = ["background", "boundary"]
    m2 = eval_model(_tiny_config, spacing=iso, data__patch_shape=[1, 16, 16], data__class_names=cls)
    m3 = eval_model(_tiny_config, seed=1, spacing=iso, network={"dim": 3, "channels": [4, 8]},
                    data__patch_shape=[8, 16, 16], data__class_names=cls)  # fmt: skip
    image = rng.integers(0, 255, size=(8, 24, 24), dtype=np.uint8)
    kw = {"tta": True, "ttas": ["flips+transpose", True], "weights": [2.0, 1.0]}
    got = instance_results.cached_deep_map([m2, m3], image, [3, 1], cache=str(tmp_path), **kw)
    ref = predict_members([Member(m2, planes=3, tta="flips+transpose", weight=2.0),
                           Member(m3, tta=True)], image)[1]  # fmt: skip
    np.testing.assert_array_equal(got, (np.rint(np.clip(ref, 0, 1) * 255) / 255).astype(np.float32))
    names = sorted(f.name for f in tmp_path.iterdir())
    assert len(names) == 3  # two member maps and the candidate's map
    assert sum(n.startswith("flyem_member_") for n in names) == 2
    assert any(n.endswith("_ft2_f1.npy") for n in names)
    # read back from the cache: the same map
    again = instance_results.cached_deep_map([m2, m3], image, [3, 1], cache=str(tmp_path), **kw)
    np.testing.assert_array_equal(again, got)
    # all weights 1 and flips: the name and the map of the plain mean (sessions 6-7 caches)
    plain = instance_results.cached_deep_map([m2, m3], image, [3, 1], tta=True, cache=None)
    ref = predict_members([Member(m2, planes=3, tta=True), Member(m3, tta=True)], image)[1]
    np.testing.assert_array_equal(
        plain, (np.rint(np.clip(ref, 0, 1) * 255) / 255).astype(np.float32)
    )
    # with a cache, the plain mean is built from member maps: the same map; m3's flips map is
    # shared with the weighted candidate, so only m2's flips map is new
    cached = instance_results.cached_deep_map(
        [m2, m3], image, [3, 1], tta=True, cache=str(tmp_path)
    )
    np.testing.assert_array_equal(cached, plain)
    names = sorted(f.name for f in tmp_path.iterdir())
    assert sum(n.startswith("flyem_member_") for n in names) == 3
    assert any(n.endswith("_p31_tta.npy") for n in names)


def test_preset_meta_writes_a_loadable_preset_with_the_choice(tmp_path):
    base = json.loads((Path(load_preset("neurons-fibsem").path) / "preset.json").read_text())
    sv = {"seeds": "distance", "threshold": 0.5, "sigma_nm": 0.0, "min_seed_distance_nm": 60.0}
    choice = {"members": [["boundaries-fibsem", 3],
                          {"model": "boundaries-fibsem-3d", "planes": 1, "tta": "flips+transpose",
                           "weight": 0.5}],
              "supervoxels": sv, "threshold": 0.45, "merge_small_nm3": 7e5}  # fmt: skip
    meta = apply_flyem_choice.preset_meta(base, choice, "a command")
    (tmp_path / "preset.json").write_text(json.dumps(meta))
    preset = load_preset(tmp_path)
    assert preset.name == "neurons-fibsem"
    assert [m["model"] for m in meta["prediction"]["members"]] == [
        "boundaries-fibsem",
        "boundaries-fibsem-3d",
    ]
    assert [m["tta"] for m in meta["prediction"]["members"]] == [True, "flips+transpose"]
    assert [m.get("weight") for m in preset.members] == [None, 0.5]
    assert meta["instances"]["supervoxels"] == sv
    agg = meta["instances"]["agglomeration"]
    assert (agg["threshold"], agg["merge_small_nm3"], agg["edges"]) == (0.45, 7e5, "mean")
    assert meta["instances"]["halo_nm"] == base["instances"]["halo_nm"]  # the rest is kept
    dims = [r["dim"] for r in meta["training"]["boundary"]["members"]]
    assert dims == [2, 3]
    assert "boundaries-fibsem-3d" in meta["description"]
    assert "weighted mean" in meta["description"]
    assert "mean agglomeration" in meta["description"]
    assert "linkage" not in meta["instances"]["agglomeration"]  # the mean: as before session 8
    multicut = apply_flyem_choice.preset_meta(base, {**choice, "linkage": "multicut"}, "cmd")
    (tmp_path / "preset.json").write_text(json.dumps(multicut))
    assert load_preset(tmp_path).instances["agglomeration"]["linkage"] == "multicut"
    assert "multicut agglomeration" in multicut["description"]
    weights = [r.get("weight") for r in meta["training"]["boundary"]["members"]]
    assert weights == [None, 0.5]


def test_boundary_targets_mark_both_sides_of_every_contact():
    truth = np.array([[1, 1, 2, 2, 0, 3]])
    # contacts 1|2 and 2|0 and 0|3: both voxels of each are boundary (2); 0 is unlabelled
    np.testing.assert_array_equal(instance_results.boundary_targets(truth), [[1, 2, 2, 2, 0, 2]])
    np.testing.assert_array_equal(
        instance_results.boundary_targets(truth, zero_is_boundary=True), [[1, 2, 2, 2, 2, 2]]
    )


def test_criterion_weights_both_goals_alike():
    s = {"adapted_rand_error_cremi": 0.05, "voi_split": 0.3, "voi_merge": 0.2}
    assert instance_results.criterion(s) == pytest.approx(0.5 + 0.5)


def test_joint_grid_rows_match_hand_computed_merges():
    """Three slabs: a weak face (0.33) inside truth object 1, a strong one (0.9) between objects.

    Below 0.33 the weak face stays and object 1 is split in halves (VOI split 0.5 bit) unless the
    clean-up size exceeds a slab (16 voxels of 40^3 nm: 1.5e6 nm^3 = 24 voxels, 1e6 = 16 does not).
    """
    truth = np.ones((2, 4, 8), np.uint32)
    truth[..., 4:] = 2
    frag = np.ones_like(truth)
    frag[..., 2:4] = 2
    frag[..., 4:] = 3
    bnd = np.full(truth.shape, 0.1, np.float32)
    bnd[..., 1:3] = 0.33
    bnd[..., 3:5] = 0.9
    rag = region_adjacency_graph(frag, bnd)
    distance = [k for k, sv in enumerate(instance_results.SUPERVOXEL_GRID)
                if sv["seeds"] == "distance"]  # fmt: skip
    # the multicut linkage agrees here: 1|2 attracts exactly when the threshold is above 0.33
    grids = {"mean": instance_results.JOINT_THRESHOLDS,
             "multicut": instance_results.MULTICUT_THRESHOLDS}  # fmt: skip
    for linkage, thresholds in grids.items():
        rows = instance_results.joint_grid(
            {k: (frag, rag) for k in distance}, truth, slice(0, 2), (40.0, 40.0, 40.0), linkage
        )
        assert len(rows) == len(distance) * len(instance_results.JOINT_MERGE_SMALL_NM3) * len(
            thresholds
        )
        assert sorted({r["threshold"] for r in rows}) == sorted(thresholds)
        for r in rows:
            split = r["threshold"] < 0.33 and r["merge_small_nm3"] < 1.5e6
            assert r["voi_split"] == pytest.approx(0.5 if split else 0.0, abs=1e-4), r
            assert r["voi_merge"] == pytest.approx(0.0, abs=1e-4), r
            assert (r["adapted_rand_error_cremi"] > 0.1) == split, r


def test_tune_presets_candidates_and_size_filter():
    grid = tune_presets.candidates()
    n_t, n_m, n_d = (len(tune_presets.THRESHOLDS), len(tune_presets.MIN_SIZES_NM3),
                     len(tune_presets.SEED_DISTANCES_NM))  # fmt: skip
    assert len(grid) == n_t * n_m + n_t * n_d * n_m
    assert {g["method"] for g in grid} == {"components", "watershed"}
    labels = np.array([[0, 1, 1, 1, 2, 3, 3]], np.uint32)  # sizes 3, 1, 2 voxels of 10 x 10 nm
    out = tune_presets._remove_small(labels, 200.0, (10.0, 10.0))
    np.testing.assert_array_equal(out, [[0, 1, 1, 1, 0, 2, 2]])
    assert tune_presets._remove_small(labels, 0.0, (10.0, 10.0)) is labels


def test_tune_presets_picks_the_setting_that_finds_both_objects():
    z, y, x = np.mgrid[:12, :16, :28]
    truth = np.zeros((12, 16, 28), np.uint32)
    truth[(z - 6) ** 2 + (y - 8) ** 2 + (x - 7) ** 2 <= 25] = 1
    truth[(z - 6) ** 2 + (y - 8) ** 2 + (x - 20) ** 2 <= 25] = 2
    prob = np.where(truth > 0, 0.8, 0.1).astype(np.float32)
    assert tune_presets.truth_instances(truth > 0, (10.0, 10.0, 10.0)).max() == 2
    grid = tune_presets.candidates(thresholds=(0.5, 0.9), min_sizes=(0.0,), seed_distances=(100.0,))
    best, rows = tune_presets.tune(prob, truth, (10.0, 10.0, 10.0), grid)
    assert best["pq"] == pytest.approx(1.0)
    assert best["instances"][best["instances"]["method"]]["threshold"] == 0.5
    # threshold 0.9 finds nothing: AP 0 (or refused), never chosen
    for r in rows:
        inst = r["instances"]
        if inst[inst["method"]]["threshold"] == 0.9:
            assert "error" in r or r["pq"] == 0.0


def test_chooser_grids_are_the_same_in_spawned_workers():
    """The map reaches spawned workers through the pool initializer (not only by fork)."""
    x = np.mgrid[:8, :12, :24][2]
    truth = np.where(x < 12, 1, 2).astype(np.uint32)
    bnd = (np.abs(x - 11.5) < 1) * 0.8 + 0.1  # a membrane between the halves
    bnd = (np.rint(bnd * 255) / 255).astype(np.float32)
    sp = (10.0, 10.0, 10.0)
    here = choose_flyem_chain.grids_of_copies(bnd, truth[2:6], sp, 2, z=slice(2, 6))
    import multiprocessing

    spawned = choose_flyem_chain.grids_of_copies(
        bnd,
        truth[2:6],
        sp,
        2,
        z=slice(2, 6),
        jobs=2,
        mp_context=multiprocessing.get_context("spawn"),
    )
    assert spawned == here
    assert min(r["objective"] for r in here[0]) == pytest.approx(0.0, abs=1e-6)
    # the linkage reaches the workers too: multicut rows on its own threshold grid
    kw = {"z": slice(2, 6), "linkage": "multicut"}
    multicut = choose_flyem_chain.grids_of_copies(bnd, truth[2:6], sp, 2, **kw)
    assert {r["threshold"] for r in multicut[0]} == set(instance_results.MULTICUT_THRESHOLDS)
    spawn = multiprocessing.get_context("spawn")
    assert choose_flyem_chain.grids_of_copies(bnd, truth[2:6], sp, 2, jobs=2, mp_context=spawn,
                                              **kw) == multicut  # fmt: skip
