"""The same jobs on a real distributed.LocalCluster (2 processes) give identical outputs."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from emseg.blockwise import count_overlaps, gaussian_filter, label, map_blocks, median_filter
from emseg.errors import EmsegValueError, SchedulerError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(11)
    return (rng.random((16, 24, 20)) * 255).astype(np.uint8)


def test_filters_identical_on_cluster(tmp_path, cluster, volume):
    kw = {"sigma": 1.5, "unit": "voxel", "block_shape": 8, "chunks": 8, "progress": False}
    local = gaussian_filter(volume, out=tmp_path / "a.zarr", **kw)
    dist = gaussian_filter(
        volume, out=tmp_path / "b.zarr", scheduler=cluster.scheduler_address, **kw
    )
    np.testing.assert_array_equal(local[:], dist[:])
    med = median_filter(
        volume,
        size=3,
        unit="voxel",
        out=tmp_path / "m.zarr",
        block_shape=8,
        chunks=8,
        scheduler=cluster.scheduler_address,
        progress=False,
    )
    from scipy import ndimage

    np.testing.assert_array_equal(med[:], ndimage.median_filter(volume, 3))


def test_label_identical_on_cluster(tmp_path, cluster, volume):
    img = volume > 150
    kw = {"connectivity": 26, "block_shape": (8, 8, 10), "chunks": (8, 8, 10), "progress": False}
    local = label(img, out=tmp_path / "a.zarr", **kw)
    dist = label(img, out=tmp_path / "b.zarr", scheduler=cluster.scheduler_address, **kw)
    np.testing.assert_array_equal(local[:], dist[:])


def test_reduce_on_cluster(cluster, volume):
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        table = count_overlaps(volume // 64, block_shape=8, scheduler=client, progress=False)
    ids, counts = np.unique(volume // 64, return_counts=True)
    np.testing.assert_array_equal(table.keys[:, 0], ids)
    np.testing.assert_array_equal(table.counts, counts)


def test_in_memory_output_refused_on_cluster(cluster, volume):
    with pytest.raises(EmsegValueError, match="on disk"):
        map_blocks(np.negative, volume, scheduler=cluster.scheduler_address, progress=False)


def test_unreachable_scheduler_fails_fast(volume):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the connect timeout is CONNECT_TIMEOUT (5 s), so this returns quickly
    with pytest.raises(SchedulerError, match="cannot reach the Dask scheduler"):
        gaussian_filter(volume, sigma=1, scheduler=f"tcp://127.0.0.1:{port}", progress=False)


def _malloc_trim() -> str | None:
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_cluster_workers_keep_glibc_mmap_threshold_dynamic():
    from emseg.blockwise import open_backend

    with open_backend("local", 1) as backend:
        assert backend.kind == "distributed"
        env = backend.client.run(_malloc_trim)
        omp = backend.client.run(lambda: __import__("os").environ.get("OMP_NUM_THREADS"))
    assert list(env.values()) == [None]
    assert list(omp.values()) == ["1"]  # distributed's other settings are kept
