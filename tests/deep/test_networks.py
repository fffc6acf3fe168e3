"""Shapes and receptive fields of every U-Net variant (analytic vs gradient)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emseg.errors import EmsegValueError
from emseg.semantic.deep import (
    UNet,
    anisotropic_plan,
    isotropic_plan,
    receptive_field,
    receptive_interval,
)

VARIANTS = [
    ("2d", 2, isotropic_plan(2, 3)),
    ("3d", 3, isotropic_plan(3, 3)),
    ("aniso", 3, anisotropic_plan((40.0, 4.0, 4.0), 3)),
    ("aniso-mixed", 3, anisotropic_plan((16.0, 4.0, 4.0), 4)),
]


def test_anisotropic_plan_switches_to_3d_when_isotropic():
    plan = anisotropic_plan((16.0, 4.0, 4.0), 4)
    # 16/4 = 4 -> flat; 16/8 = 2 -> flat; 16/16 = 1 -> isotropic
    assert plan.kernels == ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3))
    assert plan.pools == ((1, 2, 2), (1, 2, 2), (2, 2, 2))
    assert plan.divisor == (2, 8, 8)


def test_receptive_field_hand_computed():
    # depth 2, 3x3: 1 + 2*2 (enc0) + 1 (pool) = 6; + 2*2*2 (bottom, jump 2) = 14; + 2*2 (dec0) = 18
    assert receptive_field(isotropic_plan(2, 2)) == (18, 18)
    assert receptive_field(anisotropic_plan((40.0, 4.0, 4.0), 2)) == (1, 18, 18)


@pytest.mark.parametrize(
    ("name", "ndim", "plan", "norm", "residual"),
    [(*v, "batch", r) for v in VARIANTS for r in (False, True)]
    + [(*VARIANTS[2], n, True) for n in ("instance", "group", "none")],
)
def test_shapes(name, ndim, plan, norm, residual):
    torch.manual_seed(0)
    chans = (4, 8, 8, 16)[: len(plan.kernels)]
    net = UNet(ndim, 1, 3, chans, plan=plan, norm=norm, residual=residual, deep_supervision=True)
    div = plan.divisor
    shape = tuple(2 * d for d in div)
    x = torch.randn(2, 1, *shape)
    y = net(x)
    assert y.shape == (2, 3, *shape)
    deep = net.forward_deep(x)
    assert len(deep) == len(chans) - 1
    assert torch.equal(deep[0], y) or torch.allclose(deep[0], y, atol=1e-6)
    for level, o in enumerate(deep[1:], 1):
        scale = [int(np.prod([p[a] for p in plan.pools[:level]])) for a in range(ndim)]
        assert o.shape == (2, 3, *(s // f for s, f in zip(shape, scale, strict=True)))


@pytest.mark.parametrize(
    ("name", "ndim", "plan", "residual"),
    [
        ("2d", 2, isotropic_plan(2, 3), False),
        ("2d-res", 2, isotropic_plan(2, 4), True),
        ("3d", 3, isotropic_plan(3, 2), False),
        ("aniso", 3, anisotropic_plan((40.0, 4.0, 4.0), 3), False),
        ("aniso-mixed", 3, anisotropic_plan((8.0, 4.0, 4.0), 3), True),
    ],
)
def test_receptive_field_equals_gradient_support(name, ndim, plan, residual):
    """Input voxels with a nonzero gradient of one output voxel = the analytic interval."""
    torch.manual_seed(1)
    chans = (2, 3, 3, 3)[: len(plan.kernels)]
    net = UNet(ndim, 1, 1, chans, plan=plan, norm="batch", residual=residual).double().eval()
    rf = receptive_field(plan)
    div = plan.divisor
    shape = [max(8, ((r + 2 * d + 8) // d + 1) * d) for r, d in zip(rf, div, strict=True)]
    for shift in (0, 3):
        x = torch.randn(1, 1, *shape, dtype=torch.float64, requires_grad=True)
        index = tuple(s // 2 + shift % max(1, s // 4) for s in shape)
        net(x)[(0, 0, *index)].backward()
        support = x.grad[0, 0].abs() > 0
        for a in range(ndim):
            other = tuple(i for i in range(ndim) if i != a)
            idx = torch.nonzero(support.any(dim=other) if other else support)
            first, last = receptive_interval(plan, index[a], axis=a)
            assert (int(idx.min()), int(idx.max())) == (first, last)
            assert last - first + 1 <= rf[a]
            assert first > 0
            assert last < shape[a] - 1
    # the maximum over positions is reached somewhere
    for a in range(ndim):
        widths = [
            np.subtract(*receptive_interval(plan, i, axis=a)[::-1]) + 1 for i in range(div[a])
        ]
        assert max(widths) == rf[a]


def test_errors_name_the_parameter():
    with pytest.raises(EmsegValueError, match="`norm`"):
        UNet(2, 1, 2, (4, 8), norm="layer")
    with pytest.raises(EmsegValueError, match="`ndim`"):
        UNet(4, 1, 2, (4, 8))
    with pytest.raises(EmsegValueError, match="`plan`"):
        UNet(2, 1, 2, (4, 8), plan=isotropic_plan(2, 3))
