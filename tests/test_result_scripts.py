"""The helpers of scripts/choose_flyem_chain.py and scripts/apply_flyem_choice.py."""

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
        [("boundaries-fibsem", 3), ("runs/x-3d", 1)],
    )
    for bad in ("B", "B=", "=m:1", "B=model", "B=model:2"):
        with pytest.raises(SystemExit):
            choose_flyem_chain.parse_candidate(bad)


def test_preset_meta_writes_a_loadable_preset_with_the_choice(tmp_path):
    base = json.loads((Path(load_preset("neurons-fibsem").path) / "preset.json").read_text())
    sv = {"seeds": "distance", "threshold": 0.5, "sigma_nm": 0.0, "min_seed_distance_nm": 60.0}
    choice = {"members": [["boundaries-fibsem", 3], ["boundaries-fibsem-3d", 1]],
              "supervoxels": sv, "threshold": 0.45, "merge_small_nm3": 7e5}  # fmt: skip
    meta = apply_flyem_choice.preset_meta(base, choice, "a command")
    (tmp_path / "preset.json").write_text(json.dumps(meta))
    preset = load_preset(tmp_path)
    assert preset.name == "neurons-fibsem"
    assert [m["model"] for m in meta["prediction"]["members"]] == [
        "boundaries-fibsem",
        "boundaries-fibsem-3d",
    ]
    assert all(m["tta"] for m in meta["prediction"]["members"])
    assert meta["instances"]["supervoxels"] == sv
    agg = meta["instances"]["agglomeration"]
    assert (agg["threshold"], agg["merge_small_nm3"], agg["edges"]) == (0.45, 7e5, "mean")
    assert meta["instances"]["halo_nm"] == base["instances"]["halo_nm"]  # the rest is kept
    dims = [r["dim"] for r in meta["training"]["boundary"]["members"]]
    assert dims == [2, 3]
    assert "boundaries-fibsem-3d" in meta["description"]
