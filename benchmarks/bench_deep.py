"""Deep inference throughput: 3D U-Net (16, 32, 64, 128) against MONAI, in memory and zarr -> zarr.

One run, same network and weights, methods alternated (``--rounds`` rounds,
best time per method, so that a load change hits all methods alike):

- ``monai``: ``monai.inferers.sliding_window_inference`` (roi 64^3, overlap
  0.25, sw_batch_size 4, ``mode="gaussian"``) on the model's network as it
  is (channels-first), fp32 and bf16 autocast;
- ``emseg``: :func:`emseg.semantic.deep.predict_image` with the same tile,
  overlap and batch, then with a 128^3 tile (the whole in-memory volume:
  nothing recomputed), fp32 and bf16;
- ``emseg zarr``: :func:`predict_blockwise` zarr -> OME-Zarr (float16
  probabilities) on an N^3 uint8 volume (``--size``, default 512), 128^3
  tiles, overlap 0.25, default blocks, 1 worker.

Throughput is input voxels per second (Mvox/s). GFLOP/s counts the network's
FLOPs (``torch.utils.flop_counter``: 2 x multiply-adds of every convolution)
over every voxel the network actually computed, overlap included
(``recompute`` = computed / input voxels). The conv peak is measured in the
same run (oneDNN 3x3x3 convolution 64 -> 64 channels, channels-last, bf16
weights, 48^3), so "% of peak now" is load-independent; "% of 370" is against
the figure the issue gives for a quiet machine. Writes ``bench_output/deep.json``.

Run ``python benchmarks/bench_deep.py [--size N] [--memory-size N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

CHANNELS = (16, 32, 64, 128)
QUIET_PEAK = 370.0  # GFLOP/s, oneDNN conv3d channels-last on 2 threads (the figure)


def make_model():
    from emseg.semantic.deep import Intensity, Model, load_config

    cfg = load_config(
        {
            "data": {"class_names": ["background", "foreground"], "patch_shape": [64, 64, 64]},
            "network": {"dim": 3, "channels": list(CHANNELS), "norm": "batch"},
        }
    )
    model = Model.create(cfg, spacing=(5.0, 5.0, 5.0), intensity=Intensity(128.0, 50.0), seed=0)
    # trained-looking batch-norm statistics (the fresh ones are 0 / 1)
    g = torch.Generator().manual_seed(1)
    for mod in model.network.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    model.network.eval()
    return model


def network_flops(net: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass of one (1, 1, *shape) tile (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.zeros(1, 1, *shape))
    return float(counter.get_total_flops())


def conv_peak() -> float:
    """GFLOP/s of a 64 -> 64 channel 3x3x3 convolution (bf16, channels-last), now."""
    fmt = torch.channels_last_3d
    conv = torch.nn.Conv3d(64, 64, 3, padding=1).eval().to(torch.bfloat16).to(memory_format=fmt)
    x = torch.randn(1, 64, 48, 48, 48).to(torch.bfloat16).contiguous(memory_format=fmt)
    flops = 2.0 * x.numel() * 64 * 27
    best = math.inf
    with torch.inference_mode():
        conv(x)
        for _ in range(3):
            t0 = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def monai_predict(model, image: np.ndarray, *, roi: int, overlap: float, sw_batch: int, bf16: bool):
    """MONAI sliding_window_inference (gaussian); returns (probabilities, computed voxels)."""
    from monai.inferers import sliding_window_inference

    net = model.network.eval()
    x = torch.from_numpy(model.intensity.apply(image))[None, None]
    computed = [0]

    def run(batch: torch.Tensor) -> torch.Tensor:
        computed[0] += batch.shape[0] * math.prod(batch.shape[2:])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.softmax(net(batch).float(), 1)

    with torch.inference_mode():
        out = sliding_window_inference(
            x, (roi,) * 3, sw_batch, run, overlap=overlap, mode="gaussian", sigma_scale=0.125
        )
    return out[0].numpy(), computed[0]


def emseg_computed(shape, tile, overlap, block_shape=None) -> int:
    """Voxels the network computes: tiles of the global grid touching each block."""
    from emseg.semantic.deep._tiling import tile_grid, tiles_for_region

    grid = tile_grid(shape, tile, overlap)
    if block_shape is None:
        return math.prod(len(g) for g in grid) * math.prod(tile)
    n = 0
    ranges = [range(0, s, b) for s, b in zip(shape, block_shape, strict=True)]
    for begin in itertools.product(*ranges):
        end = [min(b + bs, s) for b, bs, s in zip(begin, block_shape, shape, strict=True)]
        n += len(tiles_for_region(grid, tile, begin, end))
    return n * math.prod(tile)


class NetClock:
    """Seconds spent inside the network (Predictor.__call__), to split compute from the rest."""

    def __init__(self) -> None:
        from emseg.semantic.deep import _infer

        self.mod, self.seconds = _infer, 0.0
        self.orig = _infer.Predictor.__call__

    def __enter__(self) -> NetClock:
        clock, orig = self, self.orig

        def timed(pred, tiles):
            t0 = time.perf_counter()
            try:
                return orig(pred, tiles)
            finally:
                clock.seconds += time.perf_counter() - t0

        self.mod.Predictor.__call__ = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc) -> None:
        self.mod.Predictor.__call__ = self.orig  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="side of the zarr -> zarr volume")
    ap.add_argument(
        "--memory-size", type=int, default=128, help="side of the in-memory volume (0: skip)"
    )
    ap.add_argument("--rounds", type=int, default=2, help="alternated rounds (best time kept)")
    ap.add_argument("--tile", type=int, default=128, help="emseg's large tile (and zarr tile)")
    ap.add_argument("--only", default="", help="comma-separated in-memory method names")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument(
        "--zarr-precisions", default="bf16,fp32", help="comma-separated; empty: no zarr run"
    )
    ap.add_argument("--out", default="bench_output/deep.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from emseg.semantic.deep import predict_blockwise, predict_image
    from emseg.semantic.deep._infer import prediction_block_shape

    model = make_model()
    rng = np.random.default_rng(0)
    n = args.memory_size
    vol = rng.integers(0, 255, (n, n, n), dtype=np.uint8)
    big_tile = min(args.tile, n)
    flop_per_voxel = network_flops(model.network, (64, 64, 64)) / 64**3
    rows: list[dict] = []
    load0 = os.getloadavg()
    result: dict = {
        "network": {
            "dim": 3,
            "channels": list(CHANNELS),
            "norm": "batch",
            "kflop_per_voxel": round(flop_per_voxel / 1e3, 2),
        },
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load0,
        "memory_size": n,
        "zarr_size": args.size,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    import monai.inferers  # noqa: F401  (import before timing: it takes seconds)

    def write() -> None:
        Path(args.out).write_text(json.dumps(result, indent=2))

    def add(name: str, seconds: float, voxels: int, computed: int, peak: float, note: str = ""):
        gflops = computed * flop_per_voxel / seconds / 1e9
        row = {
            "method": name,
            "voxels": voxels,
            "seconds": round(seconds, 3),
            "mvox_s": round(voxels / seconds / 1e6, 3),
            "recompute": round(computed / voxels, 2),
            "gflop_s": round(gflops, 1),
            "pct_peak_now": round(100 * gflops / peak, 1),
            "pct_of_370": round(100 * gflops / QUIET_PEAK, 1),
            "note": note,
        }
        rows.append(row)
        print(
            f"{name:<30} {seconds:8.2f} s {row['mvox_s']:7.3f} Mvox/s  x{row['recompute']:<5} "
            f"{gflops:6.1f} GFLOP/s {row['pct_peak_now']:5.1f}% peak-now "
            f"{row['pct_of_370']:5.1f}% of 370  {note}",
            flush=True,
        )
        write()

    # ---- in memory: alternate the methods, keep each one's best time ----------------------
    methods: dict[str, Callable[[], tuple[np.ndarray, int]]] = {}
    for bf16 in (False, True):
        methods[f"monai roi64 sw4 {'bf16' if bf16 else 'fp32'}"] = lambda b=bf16: monai_predict(
            model, vol, roi=64, overlap=0.25, sw_batch=4, bf16=b
        )
    for tile in (64, big_tile):
        for prec in ("fp32", "bf16"):
            methods[f"emseg tile{tile} b4 {prec}"] = lambda t=tile, p=prec: (
                predict_image(model, vol, tile_shape=(t,) * 3, overlap=0.25, precision=p),
                emseg_computed(vol.shape, (t,) * 3, 0.25),
            )
    if n == 0:  # --memory-size 0: zarr rows only
        methods = {}
    if args.only:
        keep = [k.strip() for k in args.only.split(",")]
        methods = {k: v for k, v in methods.items() if k in keep}
    best = dict.fromkeys(methods, math.inf)
    outputs: dict[str, np.ndarray] = {}
    computed: dict[str, int] = {}
    peaks = []
    for _ in range(args.rounds if methods else 0):
        peaks.append(conv_peak())
        for name, fn in methods.items():
            t0 = time.perf_counter()
            probs, comp = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            outputs[name], computed[name] = probs, comp
    peak = max(peaks) if peaks else conv_peak()
    result["conv_peak_now_gflop_s"] = round(peak, 1)
    print(f"conv peak now (64->64 3^3 bf16 channels-last): {peak:.1f} GFLOP/s", flush=True)
    for name in methods:
        p = outputs[name]
        ref = outputs.get("monai roi64 sw4 fp32")
        fp32 = outputs.get(name.replace("bf16", "fp32"))
        note = "" if ref is None else f"max|p - monai fp32| {np.abs(p - ref).max():.1e}"
        if "bf16" in name and fp32 is not None:
            agree = float(np.mean(np.argmax(p, 0) == np.argmax(fp32, 0)))
            note += (
                f"; bf16 vs fp32: max|dp| {np.abs(p - fp32).max():.1e}, argmax agree {agree:.5f}"
            )
        add(name, best[name], vol.size, computed[name], peak, note)

    # ---- zarr -> zarr ----------------------------------------------------------------------
    zarr_precisions = [p for p in args.zarr_precisions.split(",") if p]
    if zarr_precisions:
        import zarr

        big = args.size
        tile = (min(args.tile, big),) * 3
        with tempfile.TemporaryDirectory() as d:
            src = zarr.open_array(
                os.path.join(d, "in.zarr"), mode="w", shape=(big,) * 3, chunks=(64,) * 3, dtype="u1"
            )
            for z in range(0, big, 64):
                src[z : z + 64] = rng.integers(0, 255, (min(64, big - z), big, big), dtype=np.uint8)
            blocks = prediction_block_shape((big,) * 3, tile, 0.25, (64, 64, 64))
            comp = emseg_computed((big,) * 3, tile, 0.25, blocks)
            for prec in zarr_precisions:
                with NetClock() as clock:
                    t0 = time.perf_counter()
                    predict_blockwise(
                        model,
                        src,
                        out=Path(d) / f"out_{prec}.ome.zarr",
                        dtype="float16",
                        tile_shape=tile,
                        overlap=0.25,
                        precision=prec,
                        chunks=(64, 64, 64),
                        n_workers=1,
                        progress=False,
                    )
                    t = time.perf_counter() - t0
                add(
                    f"emseg zarr {big}^3 tile{tile[0]} {prec}",
                    t,
                    big**3,
                    comp,
                    peak,
                    f"blocks {blocks}, 1 worker, float16 out; network "
                    f"{100 * clock.seconds / t:.0f}% of the time",
                )
    result["loadavg_end"] = os.getloadavg()
    write()
    return result


if __name__ == "__main__":
    main()
