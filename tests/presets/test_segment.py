"""``emseg.presets.segment``: blockwise prediction + instances equal the in-memory chain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError, OutputExistsError
from emseg.io import open_image
from emseg.presets import PROBABILITIES, STATE, list_presets, load_preset, segment

from .conftest import SPACING, make_preset


def _same_partition(a, b):
    """Equal up to a renumbering of the non-zero ids (VOI = 0, background kept)."""
    a, b = np.asarray(a), np.asarray(b)
    assert ((a == 0) == (b == 0)).all()
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _in_memory(model_file, image, **components):
    from emseg.instance import threshold_components
    from emseg.semantic.forest import load_model, quantize

    model = load_model(model_file)
    probs = quantize(model.predict_proba(image, spacing=SPACING))[1].astype(np.float32) / 255
    return threshold_components(probs, spacing=SPACING, **components)


@pytest.mark.parametrize("block_shape", [None, (8, 16, 16), (24, 32, 16)])
def test_components_preset_equals_in_memory_chain(tmp_path, blob_data, forest_model_file,
                                                  block_shape):  # fmt: skip
    image, _truth = blob_data
    preset = make_preset(tmp_path / "blobs", forest_model_file)
    result = segment(
        image, preset, tmp_path / "out", spacing=SPACING, block_shape=block_shape,
        chunks=block_shape, progress=False,
    )  # fmt: skip
    labels = open_image(result.labels)
    assert labels.dtype == np.uint64
    assert labels.spacing == SPACING
    expected = _in_memory(
        forest_model_file, image, threshold=0.5, fill_all_holes=True, min_size_nm3=20000.0
    )
    _same_partition(labels[:], expected)
    assert result.n_objects == int(expected.max()) == 3  # the touching pair is one component
    probs = open_image(result.probabilities)
    assert probs.dtype == np.uint8
    assert probs.channel_names == ("background", "blob")
    state = json.loads((tmp_path / "out" / STATE).read_text())
    assert state["complete"]
    assert state["preset"] == "blobs"
    assert state["stages"]["instances"]["n_objects"] == 3
    assert labels.attrs["emseg"]["preset"] == "blobs"
    assert labels.attrs["emseg"]["produced_by"] == "emseg segment"


def test_watershed_preset_splits_touching_blobs(tmp_path, blob_data, forest_model_file):
    from emseg.metrics import average_precision

    image, truth = blob_data
    preset = make_preset(tmp_path / "ws", forest_model_file, method="watershed")
    result = segment(image, preset, tmp_path / "out", spacing=SPACING, progress=False)
    labels = open_image(result.labels)[:]
    assert result.n_objects == 4 == int(labels.max())
    assert sorted(np.unique(labels)) == list(range(5))  # renumbered 1..N after the size filter
    assert average_precision(truth, labels, thresholds=[0.5, 0.75]).ap.tolist() == [1.0, 1.0]
    assert (tmp_path / "out" / "instances.ome.zarr").exists()  # before the size filter


def test_min_size_in_nm3_removes_small_objects(tmp_path, blob_data, forest_model_file):
    image, _ = blob_data
    # the smallest blob (r = 50 nm: ~5.2e5 nm^3) goes, the others (>= 9e5 nm^3) stay
    preset = make_preset(tmp_path / "big", forest_model_file, method="watershed",
                         min_size_nm3=7e5)  # fmt: skip
    result = segment(image, preset, tmp_path / "out", spacing=SPACING, progress=False)
    labels = open_image(result.labels)[:]
    assert result.n_objects == 3 == int(labels.max())
    assert labels[16, 34, 12] == 0
    assert labels[10, 36, 34] > 0


def test_resume_after_an_interrupted_instance_stage(tmp_path, blob_data, forest_model_file,
                                                    monkeypatch):  # fmt: skip
    from emseg.presets import _segment

    image, _ = blob_data
    preset = make_preset(tmp_path / "p", forest_model_file, method="watershed")
    reference = segment(image, preset, tmp_path / "ref", spacing=SPACING, progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_segment, "_instances", killed)
    with pytest.raises(KeyboardInterrupt):
        segment(image, preset, tmp_path / "out", spacing=SPACING, progress=False)
    state = json.loads((tmp_path / "out" / STATE).read_text())
    assert state["stages"]["predict"]["done"]
    assert "instances" not in state["stages"]
    assert not state["complete"]
    with pytest.raises(OutputExistsError, match="--resume"):
        segment(image, preset, tmp_path / "out", spacing=SPACING, progress=False)
    monkeypatch.undo()
    chunk_files = sorted((tmp_path / "out" / PROBABILITIES).rglob("c/*"))
    mtimes = [p.stat().st_mtime_ns for p in chunk_files if p.is_file()]
    result = segment(image, preset, tmp_path / "out", spacing=SPACING, resume=True,
                     progress=False)  # fmt: skip
    assert [p.stat().st_mtime_ns for p in chunk_files if p.is_file()] == mtimes  # not redone
    np.testing.assert_array_equal(open_image(result.labels)[:], open_image(reference.labels)[:])
    assert json.loads((tmp_path / "out" / STATE).read_text())["complete"]
    # a complete run resumes to the same answer; another preset is refused
    again = segment(image, preset, tmp_path / "out", spacing=SPACING, resume=True, progress=False)
    assert again.n_objects == result.n_objects
    other = make_preset(tmp_path / "other", forest_model_file)
    with pytest.raises(EmsegValueError, match="another preset"):
        segment(image, other, tmp_path / "out", spacing=SPACING, resume=True, progress=False)
    with pytest.raises(EmsegValueError, match="exclude"):
        segment(image, preset, tmp_path / "out", spacing=SPACING, resume=True, overwrite=True)
    segment(image, other, tmp_path / "out", spacing=SPACING, overwrite=True, progress=False)
    assert json.loads((tmp_path / "out" / STATE).read_text())["preset"] == "other"


def test_spacing_mismatch_is_refused_unless_rescale(tmp_path, blob_data, forest_model_file):
    image, _ = blob_data
    preset = make_preset(tmp_path / "p", forest_model_file)
    with pytest.raises(EmsegValueError, match=r"differs from the spacing preset 'p'.*--rescale"):
        segment(image, preset, tmp_path / "out", spacing=(20.0, 10.0, 10.0))
    assert not (tmp_path / "out").exists()  # refused before any work
    with pytest.raises(EmsegValueError, match="`spacing` is required"):
        segment(image, preset, tmp_path / "out")
    result = segment(
        image, preset, tmp_path / "out", spacing=(10.005, 10.0, 10.0), progress=False
    )  # fmt: skip  (within 1e-3)
    assert result.n_objects == 3
    result = segment(image, preset, tmp_path / "out2", spacing=(12.0, 12.0, 12.0), rescale=True,
                     progress=False)  # fmt: skip
    assert open_image(result.labels).spacing == (12.0, 12.0, 12.0)


def test_image_from_a_file_with_its_spacing(tmp_path, blob_data, forest_model_file):
    from emseg.io import write_image

    image, _ = blob_data
    write_image(image, tmp_path / "img.ome.zarr", spacing=SPACING)
    preset = make_preset(tmp_path / "p", forest_model_file)
    result = segment(str(tmp_path / "img.ome.zarr"), preset, tmp_path / "out", progress=False)
    assert result.n_objects == 3
    assert result.spacing == SPACING
    assert open_image(result.labels).attrs["emseg"]["image"] == str(tmp_path / "img.ome.zarr")


def test_deep_preset_equals_in_memory_prediction(tmp_path, blob_data):
    from emseg.instance import threshold_components
    from emseg.presets import write_preset
    from emseg.semantic.deep import Intensity, Model, load_config, predict_image
    from emseg.semantic.forest import quantize

    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny network: threads only add overhead on a busy machine
    image = blob_data[0][8:14]  # six sections through the blobs
    cfg = load_config({
        "data": {"class_names": ["background", "blob"], "patch_shape": [1, 32, 32]},
        "network": {"channels": [4, 8]},
    })  # fmt: skip
    model = Model.create(cfg, spacing=SPACING, intensity=Intensity(128.0, 60.0), seed=0)
    model.network.eval()
    folder = tmp_path / "deep"
    model.save(folder / "net")
    write_preset({
        "spacing": list(SPACING),
        "prediction": {"kind": "deep", "model": "net", "class": "blob"},
        "instances": {"method": "components", "components": {"threshold": 0.5}},
    }, folder)  # fmt: skip
    try:
        result = segment(
            image, folder, tmp_path / "out", spacing=SPACING, progress=False, device="cpu"
        )
        probs = predict_image(model, image)[1]
        # a GPU that is not there is refused before the output folder is touched
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.cuda, "is_available", lambda: False)
            with pytest.raises(EmsegValueError, match="sees no CUDA GPU"):
                segment(image, folder, tmp_path / "gpu", spacing=SPACING, device="cuda")
        assert not (tmp_path / "gpu").exists()
    finally:
        torch.set_num_threads(threads)
    expected = threshold_components(
        quantize(probs).astype(np.float32) / 255, threshold=0.5, spacing=SPACING
    )
    labels = open_image(result.labels)[:]
    assert expected.max() > 0
    # float rounding of the blended tiles may move a voxel across a quantisation step
    assert np.mean((labels > 0) != (expected > 0)) < 1e-3
    assert abs(result.n_objects - int(expected.max())) <= max(1, expected.max() // 20)


def test_unknown_preset_and_missing_model(tmp_path, blob_data, forest_model_file):
    from emseg.presets import write_preset

    image, _ = blob_data
    with pytest.raises(DatasetNotFoundError, match=r"shipped:"):
        load_preset("no-such-preset")
    folder = tmp_path / "needs-model"
    write_preset({
        "spacing": list(SPACING),
        "prediction": {"kind": "deep", "model": "not-a-shipped-model", "class": "x"},
        "instances": {"method": "components", "components": {"threshold": 0.5}},
    }, folder)  # fmt: skip
    with pytest.raises(DatasetNotFoundError, match="'not-a-shipped-model', which is not installed"):
        segment(image, folder, tmp_path / "out", spacing=SPACING)
    assert not (tmp_path / "out").exists()
    preset = make_preset(tmp_path / "wrong-class", forest_model_file)
    doc = dict(preset.document)
    doc["prediction"] = {**doc["prediction"], "class": "nucleus"}
    write_preset(doc, preset.path)
    with pytest.raises(EmsegValueError, match=r"class 'nucleus'.*\['background', 'blob'\]"):
        segment(image, preset.path, tmp_path / "out", spacing=SPACING)


def test_preset_format_is_checked(tmp_path, forest_model_file):
    preset = make_preset(tmp_path / "p", forest_model_file)
    doc = json.loads((preset.path / "preset.json").read_text())
    assert doc["files"]["blob.safetensors"]
    assert len(doc["files"]["blob.safetensors"]) == 64
    assert load_preset(preset.path / "preset.json").name == "p"
    with open(preset.path / "blob.safetensors", "ab") as f:
        f.write(b"x")
    with pytest.raises(FormatError, match="SHA-256"):
        load_preset(preset.path)
    for change, message in [
        ({"format_version": 2}, "format_version=2"),
        ({"instances": {"method": "mws"}}, "instances.method"),
        ({"instances": {"method": "watershed"}}, "`watershed` is missing"),
        ({"prediction": {"kind": "svm", "model": "m", "class": "c"}}, "prediction.kind"),
        ({"spacing": [0, 1, 1]}, "`spacing` must be"),
    ]:
        (preset.path / "preset.json").write_text(json.dumps({**doc, **change}))
        with pytest.raises(FormatError, match=message):
            load_preset(preset.path, verify=False)
    (preset.path / "preset.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        load_preset(preset.path)


def test_list_presets_of_a_folder_and_the_shipped_ones(tmp_path, forest_model_file):
    make_preset(tmp_path / "b-blobs", forest_model_file)
    make_preset(tmp_path / "a-blobs", forest_model_file, method="watershed")
    (tmp_path / "not-a-preset").mkdir()
    found = list_presets(tmp_path)
    assert [p.name for p in found] == ["a-blobs", "b-blobs"]
    assert found[0].method == "watershed"
    assert found[0].scores == {"ap50": 1.0, "pq": 0.9}
    for p in list_presets():  # every shipped preset parses and names an existing forest file
        assert load_preset(p.name).name == p.name == p.path.name
        if p.kind == "forest":
            assert p.model_path().is_file()


def test_agglomerate_preset_equals_the_block_function_in_memory(tmp_path, blob_data,
                                                                forest_model_file):  # fmt: skip
    from emseg.instance import agglomerate
    from emseg.instance import supervoxels as make_supervoxels
    from emseg.presets import write_preset
    from emseg.semantic.forest import load_model, quantize

    image, _ = blob_data
    preset = make_preset(tmp_path / "agg", forest_model_file)
    doc = dict(preset.document)
    supervoxels = {"seeds": "distance", "threshold": 0.5, "min_seed_distance_nm": 40.0}
    doc["prediction"] = {**doc["prediction"], "class": "background"}  # high between blobs
    doc["instances"] = {
        "method": "agglomerate",
        "supervoxels": supervoxels,
        "agglomeration": {"edges": "mean", "threshold": 0.4, "edge_classifier": None},
        "min_size_nm3": 0.0,
        "halo_nm": [240.0, 480.0, 480.0],  # one block with the whole volume as context
    }
    write_preset(doc, preset.path)
    result = segment(image, preset.path, tmp_path / "out", spacing=SPACING, progress=False)
    boundary = quantize(load_model(forest_model_file).predict_proba(image, spacing=SPACING))[0]
    bnd = boundary.astype(np.float32) / 255  # the in-memory chain on the stored map
    expected = agglomerate(make_supervoxels(bnd, spacing=SPACING, **supervoxels), bnd,
                           threshold=0.4)  # fmt: skip
    labels = open_image(result.labels)[:]
    assert 1 < result.n_objects == len(np.unique(expected))
    _same_partition(labels, expected)


def test_a_multichannel_image_is_refused(tmp_path, blob_data, forest_model_file):
    from emseg.io import write_image

    image, _ = blob_data
    preset = make_preset(tmp_path / "p", forest_model_file)
    write_image(np.stack([image[0], image[1]]), tmp_path / "c.ome.zarr", spacing=SPACING[1:],
                axes="cyx")  # fmt: skip
    with pytest.raises(EmsegValueError, match="grey-level"):
        segment(open_image(tmp_path / "c.ome.zarr"), preset, tmp_path / "out")
