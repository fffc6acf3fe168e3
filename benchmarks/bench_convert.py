"""Benchmark: TIFF -> OME-Zarr with a pyramid (write_image) vs a plain zarr copy.

Run ``python benchmarks/bench_convert.py [size]`` (default 512, i.e. a
512^3 uint8 volume of 128 MiB): writes an *uncompressed* 3D OME-TIFF of
smooth, noisy synthetic content (8 nm isotropic), then, each in its own
fresh child process (``spawn``) so that peak memory is its own:

1. ``write_image(open_image(tif), "out.ome.zarr")`` — OME-Zarr v3 with the
   default chunks (64 x 128 x 128), zstd level 3, the full pyramid, 2 threads;
2. the same without the pyramid (``pyramid=False``);
3. the baseline: ``zarr.create_array`` with the same chunks and codec, filled
   slab by slab (one chunk deep, whole sections: every TIFF page read once)
   from the same lazy TIFF by 2 threads.

It prints a table (seconds, MB/s of input, peak RSS and peak RSS above the
child's RSS after imports and after loading the numba kernels, ~60 MB that
every child pays once whatever the volume) and writes
``bench_output/convert.json``. The
ratio write_image / baseline throughput is the figure of merit (goal >= 0.8);
peak memory should be a few block buffers, far below the volume. Numbers are
indicative: the machine's CPUs are shared.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import peak_rss_bytes

OUT = Path("bench_output")
CHUNKS = (64, 128, 128)


def make_tiff(path: Path, n: int, seed: int = 0) -> None:
    """An uncompressed (n, n, n) uint8 OME-TIFF, written page by page."""
    import tifffile

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)

    def pages():  # type: ignore[no-untyped-def]
        for z in range(n):
            smooth = 60 * np.sin(x / 17 + z / 23) * np.cos(y / 29 - z / 31)
            blobs = 30 * np.sin((x + 2 * y) / 7 + z / 11)
            page = 128 + smooth + blobs + rng.normal(0, 8, (n, n)).astype(np.float32)
            yield np.clip(page, 0, 255).astype(np.uint8)

    meta = {"axes": "ZYX"}
    for a in "ZYX":
        meta[f"PhysicalSize{a}"] = 8.0
        meta[f"PhysicalSize{a}Unit"] = "nm"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(pages(), shape=(n, n, n), dtype=np.uint8, metadata=meta, photometric="minisblack")


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _child(method: str, tif: str, out: str, queue: Any) -> None:
    import concurrent.futures as cf

    import zarr
    from zarr.codecs import ZstdCodec

    from emseg.io import open_image, write_image

    img = open_image(tif)
    imported = _rss_mb()
    # numba's JIT (the pyramid kernels) costs ~60 MB once per process, whatever the
    # volume: load it before taking the base so that "above base" is the data's share
    from emseg.io import downsample_mean, downsample_mode

    t_jit = time.perf_counter()
    downsample_mean(np.zeros((2, 2, 2), np.uint8), (2, 2, 2))
    downsample_mode(np.zeros((2, 2, 2), np.uint8), (2, 2, 2))
    jit_seconds = time.perf_counter() - t_jit
    base = _rss_mb()
    t0 = time.perf_counter()
    if method == "write_image":
        res = write_image(img, out, chunks=CHUNKS, workers=2)
        levels = res.levels
    elif method == "write_image_no_pyramid":
        res = write_image(img, out, chunks=CHUNKS, workers=2, pyramid=False)
        levels = res.levels
    else:
        arr = zarr.create_array(
            out,
            shape=img.shape,
            chunks=CHUNKS,
            dtype=img.dtype,
            compressors=[ZstdCodec(level=3)],
            fill_value=0,
            zarr_format=3,
        )
        # the fastest plain copy with bounded memory: whole z-slabs of one chunk depth
        # (each TIFF page read once; zarr splits the slab into chunks and encodes them)
        depth = CHUNKS[0]
        regions = [(slice(z, min(z + depth, img.shape[0])),) for z in range(0, img.shape[0], depth)]

        def copy(region: tuple[slice, ...]) -> None:
            arr[region] = img[region]

        with cf.ThreadPoolExecutor(2) as pool:
            list(pool.map(copy, regions))
        levels = 1
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes() / 2**20  # VmHWM: ru_maxrss keeps the parent's peak
    queue.put(
        {
            "seconds": seconds,
            "peak_rss_mb": peak,
            "base_rss_mb": base,
            "jit_rss_mb": base - imported,
            "jit_seconds": jit_seconds,
            "levels": levels,
        }
    )


def run(method: str, tif: Path, out: Path) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(method, str(tif), str(out), queue))
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(n: int = 512) -> dict[str, Any]:
    import zarr

    work = OUT / "convert_tmp"
    work.mkdir(parents=True, exist_ok=True)
    tif = work / "volume.ome.tif"
    t0 = time.perf_counter()
    make_tiff(tif, n)
    made = time.perf_counter() - t0
    mb = n**3 / 1e6
    rows = {}
    outs = {
        "write_image": work / "pyramid.ome.zarr",
        "write_image_no_pyramid": work / "flat.ome.zarr",
        "plain_zarr": work / "plain.zarr",
    }
    for method, out in outs.items():
        r = run(method, tif, out)
        r["mb_per_s"] = mb / r["seconds"]
        r["disk_mb"] = _disk(out) / 1e6
        rows[method] = r
    # the outputs hold the same voxels
    a = zarr.open_array(str(outs["write_image"] / "0"), mode="r")
    b = zarr.open_array(str(outs["plain_zarr"]), mode="r")
    same = all(np.array_equal(a[z : z + 64], b[z : z + 64]) for z in range(0, n, 64))
    ratio = rows["write_image"]["mb_per_s"] / rows["plain_zarr"]["mb_per_s"]
    wi = rows["write_image"]
    ratio_jit = rows["plain_zarr"]["seconds"] / (wi["seconds"] + wi["jit_seconds"])
    report = {
        "volume": {"shape": [n, n, n], "dtype": "uint8", "mb": mb, "tiff": "uncompressed"},
        "chunks": list(CHUNKS),
        "codec": "zstd level 3",
        "threads": 2,
        "tiff_seconds": made,
        "methods": rows,
        "throughput_ratio_write_image_vs_plain": ratio,
        "throughput_ratio_including_jit_load": ratio_jit,
        "goal_ratio": 0.8,
        "level0_identical": bool(same),
    }
    print(f"TIFF -> Zarr, {n}^3 uint8 ({mb:.0f} MB, uncompressed TIFF), chunks {CHUNKS}, zstd-3")
    print(
        f"{'method':<24}{'levels':>7}{'seconds':>9}{'MB/s':>8}{'disk MB':>9}"
        f"{'peak RSS':>10}{'above base':>12}"
    )
    for method, r in rows.items():
        print(
            f"{method:<24}{r['levels']:>7}{r['seconds']:>9.2f}{r['mb_per_s']:>8.1f}"
            f"{r['disk_mb']:>9.1f}{r['peak_rss_mb']:>9.0f}M{r['peak_rss_mb'] - r['base_rss_mb']:>11.0f}M"
        )
    print(f"throughput ratio write_image (with pyramid) / plain zarr: {ratio:.2f} (goal >= 0.8)")
    print(
        f"  including the one-time kernel load ({wi['jit_seconds']:.2f} s, "
        f"{wi['jit_rss_mb']:.0f} MB): {ratio_jit:.2f}"
    )
    print(f"level 0 identical to the plain copy: {same}")
    OUT.mkdir(exist_ok=True)
    (OUT / "convert.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(work)
    return report


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512)
