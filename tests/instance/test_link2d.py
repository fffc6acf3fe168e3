"""2D -> 3D linking on a synthetic stack of drifting ellipses."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.instance import link_sections
from emseg.metrics import voi


def test_links_ellipses_into_3d_objects(rng, ellipse_stack):
    truth, sections = ellipse_stack(rng)
    lab = link_sections(sections, min_iou=0.5)
    assert lab.dtype == np.uint32
    assert lab.max() == 3
    assert voi(truth, lab.astype(np.int64)).total == 0.0


def test_min_iou_cuts_weak_links(rng, ellipse_stack):
    truth, sections = ellipse_stack(rng)
    ious = []  # IoU of each object between consecutive sections (brute force)
    for k in (1, 2, 3):
        for z in range(truth.shape[0] - 1):
            a, b = truth[z] == k, truth[z + 1] == k
            if a.any() and b.any():
                ious.append((a & b).sum() / (a | b).sum())
    ious = np.sort(ious)
    cut = (ious[2] + ious[3]) / 2  # the three weakest links break
    lab = link_sections(sections, min_iou=cut)
    assert lab.max() == 3 + 3


def test_hungarian_is_one_to_one():
    s = np.zeros((2, 1, 8), np.uint8)
    s[0, 0, 0:8] = 1  # one long object above ...
    s[1, 0, 0:4] = 1  # ... two halves below, each IoU 0.5
    s[1, 0, 4:8] = 2
    lab = link_sections(s, min_iou=0.5)
    assert lab.max() == 2  # only one half continues the object
    assert lab[0, 0, 0] in (lab[1, 0, 0], lab[1, 0, 5])


def test_probability_input_segments_each_section(rng, ellipse_stack):
    truth, sections = ellipse_stack(rng)
    prob = (sections > 0).astype(np.float32) * 0.9
    lab = link_sections(prob, threshold=0.5, min_iou=0.5)
    assert voi(truth, lab.astype(np.int64)).total == 0.0


def test_bad_input():
    with pytest.raises(EmsegValueError, match="min_iou"):
        link_sections(np.zeros((2, 3, 3), np.uint8), min_iou=0)
    with pytest.raises(EmsegTypeError, match="integer label"):
        link_sections(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(EmsegValueError, match="axes"):
        link_sections(np.zeros((3, 3), np.uint8))
