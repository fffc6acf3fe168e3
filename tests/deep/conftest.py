"""Shared tiny data and models for the deep-learning tests (small, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_em():
    """A small synthetic EM stack (4, 64, 64) with thick membranes (36 % of voxels)."""
    from emseg.data import synthetic_em

    s = synthetic_em(
        (4, 64, 64), spacing=(40, 8, 8), seed=1, membrane_thickness=30, cell_diameter=300
    )
    return s.image, (s.membranes > 0).astype(np.uint8)


def _tiny_config(**overrides):
    from emseg.semantic.deep import load_config

    cfg = {
        "data": {
            "class_names": ["background", "membrane"],
            "patch_shape": [1, 64, 64],
            "batch_size": 4,
            "foreground_fraction": 0.0,
        },
        "network": {"channels": [8, 16]},
        "schedule": {"steps": 40, "warmup_steps": 5},
        "optimiser": {"lr": 1e-2},
        "validation": {"every": 20},
        "checkpoint_every": 20,
        "augment": {"intensity_prob": 0.0, "noise_prob": 0.0, "blur_prob": 0.0},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[section] = value
    return load_config(cfg)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(section={...}, section__field=value)``: a small 2D training config."""
    return _tiny_config


@pytest.fixture(scope="module")
def models():
    """An untrained isotropic 2D and 3D model (the ensemble tests' members)."""
    from ._helpers import isotropic_pair

    return isotropic_pair(_tiny_config)
