"""Deep ensemble presets (`prediction.members`): format, checks, and segment = in-memory chain."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.errors import EmsegValueError, FormatError
from emseg.io import open_image
from emseg.presets import load_preset, segment, write_preset

from .conftest import SPACING


def _model(*, dim=2, seed=0, spacing=SPACING, classes=("background", "blob")):
    from emseg.semantic.deep import Intensity, Model, load_config

    if dim == 2:
        cfg = {"data": {"class_names": list(classes), "patch_shape": [1, 16, 16]},
               "network": {"channels": [4, 8]}}  # fmt: skip
    else:
        cfg = {"data": {"class_names": list(classes), "patch_shape": [8, 16, 16]},
               "network": {"dim": 3, "channels": [4, 8]}}  # fmt: skip
    model = Model.create(load_config(cfg), spacing=spacing, intensity=Intensity(128.0, 60.0),
                         seed=seed)  # fmt: skip
    model.network.eval()
    return model


MEMBERS = [
    {"model": "net2d", "planes": 3, "tta": True},
    {"model": "net3d", "planes": 1, "tta": True},
]


def _doc(prediction, spacing=SPACING):
    return {
        "spacing": list(spacing),
        "description": "two-member ensemble (test)",
        "prediction": prediction,
        "instances": {"method": "components", "components": {"threshold": 0.5}},
        "validation": {"dataset": "test blobs"},
    }


@pytest.fixture
def one_thread():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ensemble_dir(tmp_path):
    folder = tmp_path / "ens"
    m2, m3 = _model(dim=2), _model(dim=3, seed=1)
    m2.save(folder / "net2d")
    m3.save(folder / "net3d")
    return folder, m2, m3


def test_ensemble_preset_equals_in_memory_chain(tmp_path, blob_data, ensemble_dir, one_thread):
    from emseg.instance import threshold_components
    from emseg.semantic.deep import Member, predict_image, predict_members
    from emseg.semantic.forest import quantize

    folder, m2, m3 = ensemble_dir
    image = blob_data[0][6:18, 4:36, 8:44]  # 12 x 32 x 36
    members = [Member(m2, planes=3, tta=True), Member(m3, planes=1, tta=True)]
    ens = predict_members(members, image)
    q = quantize(ens)
    # untrained members: threshold between quantisation steps, at the map's 70th percentile
    t = (float(np.percentile(q[1], 70)) + 0.5) / 255
    doc = _doc({"kind": "deep", "class": "blob", "members": MEMBERS})
    doc["instances"]["components"]["threshold"] = t
    preset = write_preset(doc, folder)
    assert preset.is_ensemble
    assert preset.members == tuple(MEMBERS)
    result = segment(image, folder, tmp_path / "out", spacing=SPACING, progress=False)
    probs = open_image(result.probabilities)[:]
    assert probs.dtype == np.uint8
    assert probs.shape == (2, 12, 32, 36)
    diff = np.abs(probs.astype(np.int16) - q.astype(np.int16))
    assert diff.max() <= 1  # float rounding of the blended tiles: at most one step
    assert np.mean(diff > 0) < 1e-3
    # and the map is the ensemble's, not either member's
    for m in members:
        alone = quantize(predict_image(m.model, image, planes=m.planes, tta=m.tta))
        assert np.abs(probs.astype(np.int16) - alone.astype(np.int16)).max() > 1
    expected = threshold_components(q[1].astype(np.float32) / 255, threshold=t, spacing=SPACING)
    labels = open_image(result.labels)[:]
    assert expected.max() > 0
    if (diff == 0).all():  # the usual case: identical maps give the identical partition
        a, b = labels, expected
        assert ((a == 0) == (b == 0)).all()
        pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    else:
        assert np.mean((labels > 0) != (expected > 0)) < 1e-3
    # provenance names the members (outputs and segment.json)
    attrs = open_image(result.labels).attrs["emseg"]
    assert attrs["members"] == MEMBERS
    assert "model" not in attrs
    assert open_image(result.probabilities).attrs["emseg"]["members"] == MEMBERS


def test_single_member_ensemble_equals_the_model_preset(tmp_path, blob_data, ensemble_dir,
                                                        one_thread):  # fmt: skip
    folder, _, _ = ensemble_dir
    image = blob_data[0][8:14, :32, :32]
    write_preset(_doc({"kind": "deep", "class": "blob", "members": [MEMBERS[0]]}), folder)
    a = segment(image, folder, tmp_path / "a", spacing=SPACING, progress=False)
    single = tmp_path / "single"
    (single).mkdir()
    import shutil

    shutil.copytree(folder / "net2d", single / "net2d")
    write_preset(_doc({"kind": "deep", "class": "blob", "model": "net2d", "planes": 3,
                       "tta": True}), single)  # fmt: skip
    b = segment(image, single, tmp_path / "b", spacing=SPACING, progress=False)
    np.testing.assert_array_equal(open_image(a.probabilities)[:], open_image(b.probabilities)[:])


def test_member_model_files_are_digested(ensemble_dir):
    folder, _, _ = ensemble_dir
    preset = write_preset(_doc({"kind": "deep", "class": "blob", "members": MEMBERS}), folder)
    for name in ("net2d", "net3d"):
        for f in ("model.safetensors", "config.json"):
            assert len(preset.files[f"{name}/{f}"]) == 64
    assert [p.name for p in preset.model_paths()] == ["net2d", "net3d"]
    with pytest.raises(EmsegValueError, match="model_paths"):
        preset.model_path()
    with open(folder / "net3d" / "model.safetensors", "ab") as f:
        f.write(b"x")
    with pytest.raises(FormatError, match=r"net3d/model\.safetensors"):
        load_preset(folder)


@pytest.mark.parametrize(
    ("prediction", "match"),
    [
        ({"kind": "deep", "class": "blob", "model": "net2d", "members": MEMBERS},
         r"replaces `prediction\.model`"),
        ({"kind": "deep", "class": "blob", "planes": 3, "members": MEMBERS}, "planes"),
        ({"kind": "deep", "class": "blob", "members": []}, "non-empty list"),
        ({"kind": "deep", "class": "blob", "members": "net2d"}, "non-empty list"),
        ({"kind": "forest", "class": "blob", "members": MEMBERS}, "kind` 'deep'"),
        ({"kind": "deep", "class": "blob", "members": [{"planes": 1}]},
         r"members\[0\]` must be an object with a `model`"),
        ({"kind": "deep", "class": "blob", "members": [{"model": "net2d", "planes": 2}]},
         r"members\[0\]\.planes` must be 1 or 3"),
        ({"kind": "deep", "class": "blob", "members": [{"model": "net2d", "planes": True}]},
         r"members\[0\]\.planes"),
        ({"kind": "deep", "class": "blob",
          "members": [MEMBERS[0], {"model": "net3d", "tta": "yes"}]},
         r"members\[1\]\.tta` must be false, true"),
        ({"kind": "deep", "class": "blob",
          "members": [MEMBERS[0], {"model": "net3d", "tta": "transpose"}]},
         r"members\[1\]\.tta` must be false, true .*flips\+transpose"),
        ({"kind": "deep", "class": "blob", "members": [{"model": "net2d", "weight": 0}]},
         r"members\[0\]\.weight` must be a positive number"),
        ({"kind": "deep", "class": "blob", "members": [{"model": "net2d", "weight": "2"}]},
         r"members\[0\]\.weight"),
        ({"kind": "deep", "class": "blob", "members": [{"model": "net2d", "weight": True}]},
         r"members\[0\]\.weight"),
        ({"kind": "deep", "class": "blob", "members": [{"model": "net2d", "flips": True}]},
         r"unknown keys \['flips'\]"),
    ],
)  # fmt: skip
def test_members_format_is_checked(ensemble_dir, prediction, match):
    folder, _, _ = ensemble_dir
    with pytest.raises(FormatError, match=match):
        write_preset(_doc(prediction), folder)


@pytest.mark.parametrize(
    ("third", "members", "match"),
    [
        ({"classes": ("background", "blob", "other")}, None, r"members\[1\].*predicts"),
        ({"spacing": (20.0, 10.0, 10.0)}, None, r"members\[1\].*spacing"),
        (None, [{"model": "net3d", "planes": 3}], r"members\[0\].*needs a 2D network"),
        (None, [{"model": "missing"}], "not installed"),
    ],
)
def test_members_that_cannot_be_averaged_are_refused(tmp_path, blob_data, ensemble_dir, third,
                                                     members, match):  # fmt: skip
    from emseg.errors import DatasetNotFoundError

    folder, _, _ = ensemble_dir
    if third is not None:
        _model(**third).save(folder / "odd")
        members = [MEMBERS[0], {"model": "odd"}]
    write_preset(_doc({"kind": "deep", "class": "blob", "members": members}), folder)
    with pytest.raises((EmsegValueError, DatasetNotFoundError), match=match):
        segment(blob_data[0][:8], folder, tmp_path / "out", spacing=SPACING, progress=False)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_preset_spacing_must_be_the_members_spacing(tmp_path, blob_data, ensemble_dir):
    folder, _, _ = ensemble_dir
    write_preset(_doc({"kind": "deep", "class": "blob", "members": MEMBERS},
                      spacing=(20.0, 10.0, 10.0)), folder)  # fmt: skip
    with pytest.raises(EmsegValueError, match=r"members were trained at \(10\.0"):
        segment(blob_data[0][:8], folder, tmp_path / "out", spacing=(20.0, 10.0, 10.0),
                progress=False)  # fmt: skip


def test_list_lines_show_the_members(tmp_path, ensemble_dir, monkeypatch):
    from emseg.cli import _segment
    from emseg.presets import _preset

    folder, _, _ = ensemble_dir
    write_preset(_doc({"kind": "deep", "class": "blob", "members": MEMBERS}), folder)
    monkeypatch.setattr(_preset, "presets_dir", lambda: folder.parent)
    lines = _segment.list_lines()
    assert lines[0] == "ens: two-member ensemble (test)"
    assert (
        "  model       deep ensemble, mean of 2 members (class 'blob'), trained at 10 x 10 x 10 nm"
        in lines
    )
    assert (
        "  member 1    net2d: planes 3 (xy, zx and zy planes, averaged), tta on (test-time flips)"
        in lines
    )
    assert "  member 2    net3d: planes 1 (as trained), tta on (test-time flips)" in lines
    assert not any(x.startswith("  predicts") for x in lines)


def test_segment_cli_runs_an_ensemble_preset(tmp_path, blob_data, ensemble_dir, one_thread,
                                             capsys):  # fmt: skip
    from emseg.cli import main
    from emseg.io import write_image

    folder, _, _ = ensemble_dir
    image = blob_data[0][8:14, :32, :32]
    write_image(image, tmp_path / "img.ome.zarr", spacing=SPACING)
    write_preset(_doc({"kind": "deep", "class": "blob", "members": MEMBERS}), folder)
    args = ["segment", str(folder), str(tmp_path / "img.ome.zarr"), str(tmp_path / "out"),
            "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "(preset ens)" in capsys.readouterr().out
    expected = segment(image, folder, tmp_path / "api", spacing=SPACING, progress=False)
    np.testing.assert_array_equal(
        open_image(tmp_path / "out" / "probabilities.ome.zarr")[:],
        open_image(expected.probabilities)[:],
    )
    # a member asking for tri-planar prediction of a 3D network: one line, before any work
    write_preset(_doc({"kind": "deep", "class": "blob",
                       "members": [MEMBERS[0], {"model": "net3d", "planes": 3}]}),
                 folder)  # fmt: skip
    assert main([*args[:3], str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("emseg segment: error") == 1
    assert "needs a 2D network" in err
    assert "Traceback" not in err
    assert not (tmp_path / "bad").exists()


WEIGHTED = [
    {"model": "net2d", "planes": 3, "tta": "flips+transpose", "weight": 2.0},
    {"model": "net3d", "planes": 1, "tta": True},
]


def test_weighted_transposed_preset_equals_in_memory_members(tmp_path, blob_data, ensemble_dir,
                                                             one_thread):  # fmt: skip
    from emseg.semantic.deep import Member, predict_image, predict_members
    from emseg.semantic.forest import quantize

    folder, m2, m3 = ensemble_dir
    image = blob_data[0][6:18, 4:36, 8:40]  # 12 x 32 x 32
    preset = write_preset(_doc({"kind": "deep", "class": "blob", "members": WEIGHTED}), folder)
    assert [m.get("weight") for m in preset.members] == [2.0, None]  # 1: not written
    assert preset.members[0]["tta"] == "flips+transpose"
    result = segment(image, folder, tmp_path / "out", spacing=SPACING, progress=False)
    probs = open_image(result.probabilities)[:].astype(np.int16)
    members = [Member(m2, planes=3, tta="flips+transpose", weight=2.0), Member(m3, tta=True)]
    q = quantize(predict_members(members, image)).astype(np.int16)
    diff = np.abs(probs - q)
    assert diff.max() <= 1
    assert np.mean(diff > 0) < 1e-3
    # neither the unweighted mean nor the member with flips only
    plain = quantize(predict_members([Member(m2, planes=3, tta=True), Member(m3, tta=True)],
                                     image)).astype(np.int16)  # fmt: skip
    assert np.abs(probs - plain).max() > 1
    p2 = predict_image(m2, image, planes=3, tta=True)  # without the transpose
    flips_only = quantize((2 * p2 + predict_image(m3, image, tta=True)) / 3).astype(np.int16)
    assert np.mean(np.abs(probs - flips_only) > 0) > 0.02  # measured 0.08; the preset's < 1e-3
    # provenance: the weight where it is not 1, the tta mode as written
    assert open_image(result.labels).attrs["emseg"]["members"] == [
        {"model": "net2d", "planes": 3, "tta": "flips+transpose", "weight": 2.0},
        {"model": "net3d", "planes": 1, "tta": True},
    ]


def test_list_lines_show_weights_and_transpose(tmp_path, ensemble_dir, monkeypatch):
    from emseg.cli import _segment
    from emseg.presets import _preset

    folder, _, _ = ensemble_dir
    write_preset(_doc({"kind": "deep", "class": "blob", "members": WEIGHTED}), folder)
    monkeypatch.setattr(_preset, "presets_dir", lambda: folder.parent)
    lines = _segment.list_lines()
    assert (
        "  member 1    net2d: planes 3 (xy, zx and zy planes, averaged), tta on (test-time "
        "flips and y/x transpose), weight 2 (67% of the mean)" in lines
    )
    assert "  member 2    net3d: planes 1 (as trained), tta on (test-time flips)" in lines
