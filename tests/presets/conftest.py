"""A tiny blob volume with exact truth and a forest preset trained on it (session-scoped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
SPACING = (10.0, 10.0, 10.0)
#: Sphere centres (voxels) and radii (nm); the first two touch.
SPHERES = [((12, 14, 14), 70.0), ((12, 14, 27), 70.0), ((10, 36, 34), 60.0), ((16, 34, 12), 50.0)]


def blobs(shape=(24, 48, 48), seed=0):
    """Dark spheres on a bright noisy background: (image uint8, truth uint32)."""
    z, y, x = np.indices(shape)
    truth = np.zeros(shape, np.uint32)
    for i, (c, r) in enumerate(SPHERES, start=1):
        d2 = sum(((a - ca) * s) ** 2 for a, ca, s in zip((z, y, x), c, SPACING, strict=True))
        truth[(d2 < r * r) & (truth == 0)] = i
    rng = np.random.default_rng(seed)
    image = np.where(truth > 0, 70.0, 190.0)
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 12, shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


@pytest.fixture(scope="session")
def blob_data():
    return blobs()


@pytest.fixture(scope="session")
def forest_model_file(blob_data, tmp_path_factory):
    """A small forest (background / blob) trained on scribbles of the blob truth."""
    from emseg.features import feature_spec
    from emseg.semantic.forest import save_model, train_forest

    image, truth = blob_data
    rng = np.random.default_rng(1)
    scribbles = np.zeros(image.shape, np.uint8)
    inside = ndimage.binary_erosion(truth > 0, iterations=2)
    outside = ~ndimage.binary_dilation(truth > 0, iterations=2)
    scribbles[outside & (rng.random(image.shape) < 0.02)] = 1
    scribbles[inside & (rng.random(image.shape) < 0.1)] = 2
    spec = feature_spec(spacing=SPACING, features=("gaussian", "gradient"), scales=(10.0, 20.0))
    model = train_forest(
        image, scribbles, spacing=SPACING, spec=spec, class_names=["background", "blob"],
        n_estimators=8, max_depth=8, n_jobs=1,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("forest") / "blob.safetensors"
    save_model(model, path)
    return path


def make_preset(folder, model_file, *, method="components", **instances):
    """Write a forest preset into `folder` (the model copied in) and return it."""
    import shutil

    from emseg.presets import write_preset

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, folder / "blob.safetensors")
    params = {
        "components": {"threshold": 0.5, "fill_all_holes": True},
        "watershed": {"threshold": 0.5, "min_seed_distance_nm": 60.0},
        "agglomerate": None,
    }[method]
    inst = {"method": method, "min_size_nm3": 20000.0, "halo_nm": [80.0, 80.0, 80.0]}
    if params is not None:
        inst[method] = params
    inst.update(instances)
    doc = {
        "name": folder.name,
        "description": "dark blobs (test)",
        "target": "blobs",
        "spacing": list(SPACING),
        "prediction": {"kind": "forest", "model": "blob.safetensors", "class": "blob"},
        "instances": inst,
        "validation": {"dataset": "test blobs", "scores": {"ap50": 1.0, "pq": 0.9}},
        "training": {"command": "pytest tests/presets"},
    }
    return write_preset(doc, folder)
