"""Helpers shared by the deep-learning tests (fixtures live in conftest.py)."""

from __future__ import annotations

from emseg.semantic.deep import Intensity, Model


def eval_model(tiny_config, *, seed=0, spacing=(40.0, 8.0, 8.0), **overrides):
    """An untrained model of ``tiny_config(**overrides)`` in eval mode (seeded weights).

    `spacing` (nm, z-y-x) is the model's training spacing; intensity statistics
    are fixed (mean 128, std 40).
    """
    cfg = tiny_config(**overrides)
    m = Model.create(cfg, spacing=spacing, intensity=Intensity(128.0, 40.0), seed=seed)
    return m.__class__(m.network.eval(), m.config, m.spacing, m.intensity, m.provenance)
