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


def isotropic_pair(tiny_config, spacing=(10.0, 10.0, 10.0)):
    """An untrained 2D model (seed 0) and 3D model (seed 1) at isotropic `spacing`, same outputs:
    the members of the ensemble tests."""
    m2 = eval_model(tiny_config, spacing=spacing, data__patch_shape=[1, 16, 16])
    m3 = eval_model(
        tiny_config,
        seed=1,
        spacing=spacing,
        network={"dim": 3, "channels": [4, 8]},
        data__patch_shape=[8, 16, 16],
    )
    return m2, m3
