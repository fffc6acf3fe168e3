"""Random-forest pixel classifier: training, exact tree export, blockwise, safe model files."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from emseg.data import synthetic_em
from emseg.errors import EmsegTypeError, EmsegValueError, FormatError, OutputExistsError
from emseg.features import FeatureSpec
from emseg.semantic.forest import (
    PackedForest,
    load_model,
    predict_blockwise,
    quantize,
    save_model,
    train_forest,
)
from emseg.semantic.forest._io import _digest

SPEC = FeatureSpec(scales=(4.0, 8.0, 16.0), mode="2d")
NAMES = ("cytoplasm", "membrane", "nucleus")


@pytest.fixture(scope="module")
def volume():
    em = synthetic_em((8, 96, 96), seed=3, spacing=(40.0, 4.0, 4.0))
    truth = np.select([em.classes == 1, em.classes == 4], [2, 3], 1).astype(np.uint8)
    rng = np.random.default_rng(0)
    scribbles = np.zeros_like(truth)
    for c in (1, 2, 3):
        idx = np.flatnonzero(truth.ravel() == c)
        scribbles.flat[rng.choice(idx, 200, replace=False)] = c
    return em, truth, scribbles


@pytest.fixture(scope="module")
def models(volume):
    em, _, scribbles = volume
    kw = {"spacing": em.spacing, "spec": SPEC, "n_estimators": 30, "class_names": NAMES}
    return {s: train_forest(em.image, scribbles, stages=s, **kw) for s in (1, 2)}


def _ious(pred, truth):
    return [
        ((pred == c) & (truth == c)).sum() / ((pred == c) | (truth == c)).sum() for c in (1, 2, 3)
    ]


def test_packed_forest_equals_sklearn(rng):
    x = rng.normal(size=(600, 7)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] ** 2 > 0.5).astype(int) + (x[:, 2] > 1.0)
    rf = RandomForestClassifier(
        n_estimators=15, max_depth=8, random_state=0, class_weight="balanced"
    )
    rf.fit(x, y)
    packed = PackedForest.from_sklearn(rf)
    xt = rng.normal(size=(20_000, 7)).astype(np.float32)
    ref = rf.predict_proba(xt)
    np.testing.assert_allclose(packed.predict_proba(xt), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(packed.predict_proba(xt, n_threads=2), ref, rtol=0, atol=1e-12)
    for threads in (1, 2):
        got = packed.predict_proba(xt, n_threads=threads, engine="numba")
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    with pytest.raises(EmsegValueError, match="shape"):
        packed.predict_proba(xt[:, :3])
    with pytest.raises(EmsegValueError, match="engine"):
        packed.predict_proba(xt, engine="pickle")


def test_packed_forest_refuses_a_child_in_another_tree(rng):
    x = rng.normal(size=(300, 4)).astype(np.float32)
    rf = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0)
    rf.fit(x, (x[:, 0] > 0).astype(int))
    arrays = PackedForest.from_sklearn(rf).arrays()
    left = arrays["left"].copy()
    first_internal = int(np.flatnonzero(left >= 0)[0])
    left[first_internal] = int(arrays["roots"][1]) + 1  # in range, after its parent, wrong tree
    with pytest.raises(FormatError, match="leaves its tree"):
        PackedForest.from_arrays({**arrays, "left": left}, 4)


def test_forest_recovers_synthetic_classes(volume, models):
    """Stated bounds: stage 1 mean IoU >= 0.6, autocontext stage 2 mean IoU >= 0.7."""
    em, truth, _ = volume
    iou1 = _ious(models[1].predict(em.image), truth)
    iou2 = _ious(models[2].predict(em.image), truth)
    assert np.mean(iou1) >= 0.6, iou1
    assert np.mean(iou2) >= 0.7, iou2
    assert min(iou2) >= 0.55, iou2
    p = models[2].predict_proba(em.image)
    assert p.shape == (3, *em.image.shape)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("block", [(4, 32, 32), (3, 40, 24)])
def test_blockwise_equals_in_memory(volume, models, stages, block):
    em, _, _ = volume
    model = models[stages]
    full = model.predict_proba(em.image, spacing=em.spacing)
    out = predict_blockwise(
        model, em.image, spacing=em.spacing, block_shape=block, chunks=block, progress=False
    )
    assert out.shape == full.shape
    np.testing.assert_allclose(out[:], full, rtol=0, atol=1e-6)


def test_blockwise_to_ome_zarr_uint8_and_class_map(tmp_path, volume, models):
    from emseg.io import open_image

    em, _, _ = volume
    model = models[1]
    probs = tmp_path / "p.ome.zarr"
    classes = tmp_path / "c.ome.zarr"
    predict_blockwise(
        model,
        em.image,
        out=probs,
        class_map_out=classes,
        spacing=em.spacing,
        dtype="uint8",
        chunks=(4, 48, 48),
        progress=False,
    )
    full = model.predict_proba(em.image)
    p = open_image(probs)
    assert p.axes == "czyx"
    assert p.spacing == em.spacing
    np.testing.assert_array_equal(p[:], quantize(full))
    np.testing.assert_array_equal(open_image(classes)[:], model.predict(em.image))
    with pytest.raises(OutputExistsError):
        predict_blockwise(model, em.image, out=probs, spacing=em.spacing, progress=False)
    # resume of a finished job does nothing and keeps the result
    again = predict_blockwise(
        model,
        em.image,
        out=probs,
        class_map_out=classes,
        spacing=em.spacing,
        dtype="uint8",
        chunks=(4, 48, 48),
        resume=True,
        progress=False,
    )
    assert p.channel_names == NAMES
    np.testing.assert_array_equal(again[:], quantize(full))


def test_3d_features_blockwise(volume):
    em, _truth, scribbles = volume
    spec = FeatureSpec(scales=(6.0, 40.0), features=("gaussian", "hessian", "structure"))
    model = train_forest(
        em.image,
        scribbles,
        spacing=em.spacing,
        spec=spec,
        n_estimators=8,
        stages=2,
        context_scales=(8.0,),
    )
    assert model.halo()[0] > 0
    full = model.predict_proba(em.image)
    out = predict_blockwise(
        model,
        em.image,
        block_shape=(4, 48, 32),
        chunks=(4, 48, 32),
        spacing=em.spacing,
        progress=False,
    )
    np.testing.assert_allclose(out[:], full, rtol=0, atol=1e-6)


def test_save_load_round_trip(tmp_path, volume, models):
    em, _, _ = volume
    for stages, model in models.items():
        path = save_model(model, tmp_path / f"m{stages}.safetensors")
        back = load_model(path)
        assert back.class_names == NAMES
        assert back.spacing == em.spacing
        assert back.spec == model.spec
        assert back.context_scales == model.context_scales
        assert back.provenance["samples"] == {n: 200 for n in NAMES}
        np.testing.assert_array_equal(back.predict_proba(em.image), model.predict_proba(em.image))
    with pytest.raises(OutputExistsError):
        save_model(models[1], tmp_path / "m1.safetensors")


class _Evil:
    def __reduce__(self):
        return (open, ("/tmp/emseg_pwned_marker", "w"))


def test_refuses_tampered_and_foreign_files(tmp_path, models):
    from safetensors.numpy import save_file

    good = save_model(models[1], tmp_path / "good.safetensors")
    raw = bytearray(good.read_bytes())
    # a changed byte in the tree arrays
    bad = tmp_path / "bad.safetensors"
    raw2 = bytearray(raw)
    raw2[-100] ^= 0x01
    bad.write_bytes(bytes(raw2))
    with pytest.raises(FormatError, match="checksum"):
        load_model(bad)
    # a changed byte in the JSON header
    (n,) = struct.unpack("<Q", raw[:8])
    raw3 = bytearray(raw)
    raw3[8 + n // 2] = ord("#")
    bad.write_bytes(bytes(raw3))
    with pytest.raises(FormatError):
        load_model(bad)
    # a pickle renamed: refused, and nothing from it runs
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(FormatError, match="pickle"):
        load_model(evil)
    assert not (tmp_path / "emseg_pwned_marker").exists()
    # a valid safetensors file of another kind
    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other), metadata={"format": "pt"})
    with pytest.raises(FormatError, match="not an emseg forest"):
        load_model(other)
    # forged trees with a correct checksum: a child pointing outside the arrays
    from safetensors import safe_open

    with safe_open(str(good), framework="numpy") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors["stage0.left"] = tensors["stage0.left"].copy()
    tensors["stage0.left"][0] = 10**8
    meta["sha256"] = _digest(meta["model"], tensors)
    forged = tmp_path / "forged.safetensors"
    save_file(tensors, str(forged), metadata=meta)
    with pytest.raises(FormatError, match="invalid forest"):
        load_model(forged)
    # metadata from another version
    meta2 = dict(meta, format_version="99")
    save_file(tensors, str(forged), metadata=meta2)
    with pytest.raises(FormatError, match="version"):
        load_model(forged)
    assert json.loads(meta["model"])["class_names"] == list(NAMES)


def test_spacing_mismatch_refused_or_rescaled(volume, models):
    em, _, _ = volume
    model = models[1]
    with pytest.raises(EmsegValueError, match="rescale"):
        model.predict_proba(em.image, spacing=(40.0, 8.0, 8.0))
    with pytest.raises(EmsegValueError, match="rescale"):
        predict_blockwise(model, em.image, spacing=(40.0, 8.0, 8.0), progress=False)
    p = model.predict_proba(em.image[:, ::2, ::2], spacing=(40.0, 8.0, 8.0), rescale=True)
    assert p.shape == (3, 8, 48, 48)
    with pytest.raises(EmsegValueError, match="3D"):
        model.predict_proba(em.image[0], spacing=(4.0, 4.0))


def test_bad_training_input(volume):
    em, _, scribbles = volume
    kw = {"spacing": em.spacing, "spec": SPEC, "n_estimators": 5}
    with pytest.raises(EmsegValueError, match="same shape"):
        train_forest(em.image, scribbles[:, :50], **kw)
    no_two = scribbles.copy()
    no_two[no_two == 2] = 0
    with pytest.raises(EmsegValueError, match=r"\[2\] have no labelled voxels"):
        train_forest(em.image, no_two, **kw)
    with pytest.raises(EmsegValueError, match="no labelled voxels"):
        train_forest(em.image, scribbles, class_names=("a", "b", "c", "d"), **kw)
    with pytest.raises(EmsegValueError, match="at least two classes"):
        train_forest(em.image, (scribbles == 1).astype(np.uint8), **kw)
    nan = em.image.astype(np.float32)
    nan[2, 10, 10] = np.nan
    with pytest.raises(EmsegValueError, match="NaN"):
        train_forest(nan, scribbles, **kw)
    with pytest.raises(EmsegTypeError, match="integer"):
        train_forest(em.image, scribbles.astype(np.float32), **kw)
    with pytest.raises(EmsegValueError, match="stages"):
        train_forest(em.image, scribbles, stages=4, **kw)


def test_blockwise_on_local_cluster(tmp_path, volume, models):
    """A real distributed LocalCluster (2 worker processes) gives the in-memory result."""
    em, _, _ = volume
    model = models[2]
    out = predict_blockwise(
        model, em.image, out=tmp_path / "p.ome.zarr", spacing=em.spacing, chunks=(4, 48, 48),
        scheduler="local", n_workers=2, progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(out[:], model.predict_proba(em.image), rtol=0, atol=1e-6)


def test_folds_are_balanced_per_class(rng):
    from emseg.semantic.forest._train import _folds, _select_samples

    # dense labels: one giant component per class -> halves along z
    dense = np.ones((6, 40, 40), np.uint8)
    dense[:, 10:20] = 2
    index = _select_samples(dense, 2, 1000, rng)
    fold = _folds(dense, index, 2, rng)
    y = dense.reshape(-1)[index]
    for c in (1, 2):  # class 1: two components (1/3, 2/3); class 2: one, cut in halves
        share = (fold[y == c] == 0).mean()
        assert 0.25 <= share <= 0.75
    assert 0.45 <= (fold[y == 2] == 0).mean() <= 0.55
    z = np.unravel_index(index, dense.shape)[0]
    assert z[(fold == 0) & (y == 2)].max() <= z[(fold == 1) & (y == 2)].min()
    # strokes: whole strokes go to one fold, about half of the samples in each
    strokes = np.zeros((1, 40, 40), np.uint8)
    for i in range(6):
        strokes[0, 3 + 6 * i, 2:30] = 1 + i % 2
    index = _select_samples(strokes, 2, None, rng)
    fold = _folds(strokes, index, 2, rng)
    rows = np.unravel_index(index, strokes.shape)[1]
    for r in np.unique(rows):
        assert len(np.unique(fold[rows == r])) == 1
    for c in (1, 2):
        share = (fold[strokes.reshape(-1)[index] == c] == 0).mean()
        assert np.isclose(share, 1 / 3) or np.isclose(share, 2 / 3)
    # sparse random voxels, scheme "halves": each class's first half along z is fold 0
    sparse = np.zeros((10, 30, 30), np.uint8)
    flat = sparse.reshape(-1)
    pick = rng.choice(flat.size, 400, replace=False)
    flat[pick[:150]] = 1
    flat[pick[150:]] = 2
    index = _select_samples(sparse, 2, None, rng)
    fold = _folds(sparse, index, 2, rng, scheme="halves")
    y = flat[index]
    z = np.unravel_index(index, sparse.shape)[0]
    for c, n in ((1, 150), (2, 250)):
        assert (fold[y == c] == 0).sum() == n // 2
        assert z[(fold == 0) & (y == c)].max() <= z[(fold == 1) & (y == c)].min()


def test_autocontext_folds_option_is_checked_and_recorded(volume):
    em, _, scribbles = volume
    kw = {"spacing": em.spacing, "spec": SPEC, "n_estimators": 10, "stages": 2}
    with pytest.raises(EmsegValueError, match="autocontext_folds"):
        train_forest(em.image, scribbles, autocontext_folds="random", **kw)
    model = train_forest(em.image, scribbles, autocontext_folds="halves", **kw)
    assert model.provenance["autocontext_training"] == "out-of-fold (2 folds by z half)"


def test_autocontext_with_dense_labels_does_not_degrade(volume):
    """Dense labels (one huge component per class) used to give one-class folds."""
    em, truth, _ = volume
    dense = np.zeros_like(truth)
    dense[:4] = truth[:4]
    kw = {"spacing": em.spacing, "spec": SPEC, "n_estimators": 20, "max_samples_per_class": 3000}
    s1 = train_forest(em.image, dense, stages=1, **kw)
    s2 = train_forest(em.image, dense, stages=2, **kw)
    iou1 = np.mean(_ious(s1.predict(em.image)[4:], truth[4:]))
    iou2 = np.mean(_ious(s2.predict(em.image)[4:], truth[4:]))
    assert iou2 >= iou1 - 0.05, (iou1, iou2)
    assert iou2 >= 0.6


def _same_forests(a, b):
    assert len(a.stages) == len(b.stages)
    for sa, sb in zip(a.stages, b.stages, strict=True):
        for name in ("left", "right", "feature", "threshold", "value", "roots"):
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))


@pytest.mark.parametrize(
    ("spec", "block", "reused"),
    [
        (SPEC, None, True),  # 2D mode: a whole section per block, same region every stage
        (FeatureSpec(scales=(8.0, 16.0), mode="3d"), (8, 96, 96), True),  # spans the image
        # the halo grows with the stage: only blocks whose read region is clipped are reused
        (FeatureSpec(scales=(8.0, 16.0), mode="3d"), (4, 48, 48), False),
    ],
)
def test_feature_cache_across_stages_gives_the_same_model(volume, caplog, spec, block, reused):
    em, _, scribbles = volume
    kw = {
        "spacing": em.spacing,
        "spec": spec,
        "n_estimators": 5,
        "stages": 3,
        "block_shape": block,
        "max_samples_per_class": 60,
    }
    with caplog.at_level("INFO", logger="emseg.semantic.forest._train"):
        cached = train_forest(em.image, scribbles, **kw)
    msg = [r.getMessage() for r in caplog.records if "reused" in r.getMessage()][-1]
    n_computed, n_reused = (int(w) for w in msg.split() if w.isdigit())
    # computed once per block and reused at stages 2 and 3, or recomputed for some blocks
    assert (n_reused == 2 * n_computed) == reused, msg
    _same_forests(cached, train_forest(em.image, scribbles, feature_cache_bytes=0, **kw))
