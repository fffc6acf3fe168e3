"""Shipped-model registry: listing, name resolution, and (per shipped model) its score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emseg.semantic.deep import Intensity, Model, _registry, list_models, load_model, resolve_model


def test_registry_lists_and_resolves_names(tiny_config, tmp_path, monkeypatch):
    root = tmp_path / "models"
    m = Model.create(tiny_config(), spacing=(40.0, 8.0, 8.0), intensity=Intensity(0.0, 1.0), seed=0)
    m.save(root / "tiny")
    (root / "tiny" / "card.json").write_text(json.dumps({"validation": {"iou": 0.5}}))
    (root / "not-a-model").mkdir()
    monkeypatch.setattr(_registry, "models_dir", lambda: root)
    cards = list_models()
    assert [c.name for c in cards] == ["tiny"]
    assert cards[0].card["validation"]["iou"] == 0.5
    assert resolve_model("tiny") == root / "tiny"
    assert resolve_model(root / "tiny" / "model.safetensors") == root / "tiny"
    x = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    from emseg.semantic.deep import predict_image

    np.testing.assert_array_equal(
        predict_image(load_model("tiny"), x), predict_image(m.__class__.load(root / "tiny"), x)
    )


@pytest.mark.data
def test_shipped_models_are_listed_and_reach_their_documented_scores(data_root):
    """Every model folder in the package is listed, and each reaches the scores on its card.

    Each shipped model's card records ``crop_validation`` (scores on a fixed crop
    of its validation split); the model must reproduce them within 0.01.
    """
    from emseg.io import open_image
    from emseg.semantic.deep import evaluate

    root = _registry.models_dir()
    folders = (
        sorted(p.name for p in root.iterdir() if (p / "model.safetensors").exists())
        if root.is_dir()
        else []
    )
    shipped = list_models()
    assert [c.name for c in shipped] == folders
    for card in shipped:
        crop = card.card["crop_validation"]
        model = load_model(card.name)
        cfg = model.config
        sl = tuple(slice(a, b) for a, b in crop["box"])
        root_then, root_now = crop["data_root_at_training"], str(data_root)
        sp = cfg.data.spacing
        img = open_image(cfg.data.image.replace(root_then, root_now), spacing=sp)[sl]
        lab = open_image(cfg.data.labels.replace(root_then, root_now), spacing=sp)[sl]
        scores = evaluate(model, img, lab)
        for key, value in crop["scores"].items():
            assert scores[key] == pytest.approx(value, abs=0.01), (card.name, key)
