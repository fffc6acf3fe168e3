"""Real EM data: FlyEM medulla oversegmentation and the SNEMI3D mini crop (published values)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.metrics import adapted_rand_error as sk_are
from skimage.metrics import variation_of_information as sk_voi

from emseg.metrics import adapted_rand_error, merge_tables, neuron_metrics, overlap_table, voi

pytestmark = pytest.mark.data


def _read(root, folder, name):
    return tifffile.imread(root / folder / name)


def test_flyem_oversegmentation_matches_skimage(data_root):
    gt = _read(data_root, "flyem_medulla_neuroproof", "groundtruth.tif")
    seg = _read(data_root, "flyem_medulla_neuroproof", "oversegmentation.tif")
    tab = overlap_table(gt, seg)
    ref = sk_are(gt, seg)  # ignores truth 0, as our "skimage" variant
    ours = adapted_rand_error(tab, variant="skimage")
    assert ours.error == pytest.approx(ref[0], rel=1e-12)
    assert (ours.recall, ours.precision) == pytest.approx((ref[1], ref[2]), rel=1e-12)
    ref_v = sk_voi(gt, seg, ignore_labels=(0,))
    v = voi(tab)
    assert (v.split, v.merge) == pytest.approx(tuple(ref_v), rel=1e-10)
    # an oversegmentation: many splits, few merges
    assert v.split > 5 * v.merge
    # blockwise along z (uneven blocks) gives exactly the same table and scores
    parts = [overlap_table(gt[a:b], seg[a:b]) for a, b in [(0, 17), (17, 64), (64, 125)]]
    merged = merge_tables(parts)
    np.testing.assert_array_equal(merged.counts, tab.counts)
    assert neuron_metrics(merged) == neuron_metrics(tab)


def test_snemi_mini_published_reference_values(data_root):
    labels = _read(data_root, "snemi3d_mini_gala", "labels.tif")
    frags = _read(data_root, "snemi3d_mini_gala", "fragments.tif")
    # README: "fragments vs labels (no label ignored) -> adapted Rand error 0.9374,
    # VI split 5.6565 bits, VI merge 0.5507 bits (scikit-image 0.26 agrees)"
    v = voi(labels, frags, ignore_truth=())
    assert round(v.split, 4) == 5.6565
    assert round(v.merge, 4) == 0.5507
    sk = adapted_rand_error(labels, frags, variant="skimage", ignore_truth=())
    assert round(sk.error, 4) == 0.9374
    # the labels have no 0, so CREMI and ISBI 2012 coincide (they differ from scikit-image
    # only by counting self-pairs) and also round to the published value
    cremi = adapted_rand_error(labels, frags, variant="cremi")
    isbi = adapted_rand_error(labels, frags, variant="isbi2012")
    assert cremi.error == isbi.error
    assert round(cremi.error, 4) == 0.9374
    assert cremi.error != sk.error
