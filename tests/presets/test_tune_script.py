"""scripts/tune_presets.py: the grid search and the preset it writes (on the blob volume)."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from emseg.presets import load_preset, write_preset

from .conftest import ROOT, SPACING


@pytest.fixture(scope="module")
def tune_presets():
    spec = importlib.util.spec_from_file_location(
        "tune_presets", ROOT / "scripts" / "tune_presets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scores_against_hand_counted_matches(tune_presets):
    truth = np.zeros((1, 4, 12), np.uint32)
    truth[0, :, 0:4], truth[0, :, 4:8], truth[0, :, 8:12] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[0, :, 0:4] = 5  # exact
    pred[0, :, 4:7] = 6  # IoU 0.75: a match at 0.5 and at 0.75 (IoU >= t, emseg.metrics)
    pred[0, 0, 8] = 7  # IoU 1/16: a false positive, and truth 3 is missed
    s = tune_presets.scores(truth, pred)
    assert s["ap50"] == pytest.approx(2 / (2 + 1 + 1))
    assert s["ap75"] == pytest.approx(2 / (2 + 1 + 1))
    assert s["pq"] == pytest.approx((1 + 0.75) / (2 + 0.5 + 0.5))
    assert (s["n_truth"], s["n_predicted"]) == (3, 3)


def test_tune_picks_the_watershed_and_segment_reproduces_it(tmp_path, tune_presets, blob_data,
                                                            forest_model_file):  # fmt: skip
    from emseg.semantic.forest import load_model, quantize

    image, truth = blob_data
    prob = quantize(load_model(forest_model_file).predict_proba(image, spacing=SPACING))[1] / 255
    prob = prob.astype(np.float32)
    grid = tune_presets.candidates(thresholds=(0.5,), min_sizes=(0.0, 7e5),
                                   seed_distances=(60.0,))  # fmt: skip
    assert [g["method"] for g in grid] == ["components"] * 2 + ["watershed"] * 2
    best, rows = tune_presets.tune(prob, truth, SPACING, grid)
    assert len(rows) == 4
    # the touching pair is split only by the watershed, and 7e5 nm^3 drops the smallest blob
    assert best["instances"] == grid[2]
    assert (best["ap50"], best["ap75"], best["n_predicted"]) == (1.0, 1.0, 4)
    assert rows[3]["n_predicted"] == 3
    assert rows[0]["n_predicted"] == 3
    for row in rows:  # the cached bases give what a fresh run gives
        fresh = tune_presets.run_instances(prob, row["instances"], SPACING)
        assert tune_presets.scores(truth, fresh)["pq"] == row["pq"]

    doc = tune_presets.preset_document(
        "mitochondria", best, model="mitochondria", spacing=SPACING,
        model_card={"command": "emseg train x"}, verified=None,
    )  # fmt: skip
    assert doc["validation"]["scores"] == {"ap50": 1.0, "ap75": 1.0, "pq": round(best["pq"], 4)}
    assert doc["training"]["model_command"] == "emseg train x"
    preset = write_preset(doc, tmp_path / "mitochondria")
    assert preset.kind == "deep"
    assert preset.method == "watershed"
    # the same chain with the forest, end to end through segment (blockwise): same scores
    shutil.copy(forest_model_file, tmp_path / "mitochondria" / "blob.safetensors")
    doc["prediction"] = {"kind": "forest", "model": "blob.safetensors", "class": "blob"}
    write_preset(doc, tmp_path / "mitochondria")
    verified = tune_presets.verify(tmp_path / "mitochondria", image, truth, SPACING)
    assert verified == {k: best[k] for k in verified}
    assert load_preset(tmp_path / "mitochondria").instances["min_size_nm3"] == 0.0


def test_a_setting_the_method_refuses_is_recorded_not_fatal(tune_presets, monkeypatch):
    from emseg.errors import EmsegValueError

    prob = np.zeros((4, 8, 8), np.float32)
    prob[1:3, 2:6, 2:6] = 0.9
    truth = (prob > 0.5).astype(np.uint32)
    grid = tune_presets.candidates(thresholds=(0.5,), min_sizes=(0.0,), seed_distances=(20.0,))
    real = tune_presets.run_instances

    def refuse_watershed(prob, inst, spacing, cache=None):
        if inst["method"] == "watershed":
            raise EmsegValueError("`image` holds NaN or infinite values")
        return real(prob, inst, spacing, cache)

    monkeypatch.setattr(tune_presets, "run_instances", refuse_watershed)
    best, rows = tune_presets.tune(prob, truth, (40.0, 4.0, 4.0), grid)
    assert best["instances"]["method"] == "components"
    assert best["ap50"] == 1.0
    assert "NaN" in rows[1]["error"]
    assert np.isnan(rows[1]["pq"])
    monkeypatch.setattr(tune_presets, "run_instances", lambda *a, **k: refuse_watershed(
        a[0], {"method": "watershed"}, None))  # fmt: skip
    with pytest.raises(SystemExit, match="every setting"):
        tune_presets.tune(prob, truth, (40.0, 4.0, 4.0), grid)
