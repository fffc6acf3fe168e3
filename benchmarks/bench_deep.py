"""Deep inference throughput: a 3D U-Net (16, 32, 64, 128) on 128^3 in memory and N^3 zarr -> zarr.

Side by side in one run, on the same network and weights:

- ``monai-like``: a reimplementation of MONAI's ``sliding_window_inference``
  semantics (MONAI is not installed): roi 64^3, overlap 0.25 (scan interval
  48), sw_batch_size 4, Gaussian importance map (sigma_scale 0.125),
  channels-first tensors, fp32 and bf16 autocast;
- ``emseg``: :func:`emseg.semantic.deep.predict_image` with the same tile and
  overlap (global grid, channels_last), and with larger tiles (96^3), fp32 and bf16;
- ``emseg blockwise``: :func:`predict_blockwise` zarr -> zarr (float16 output)
  on an N^3 uint8 volume (``--size``, default 512; use a smaller N on a shared CPU).

Throughput is input voxels per second (Mvox/s); GFLOP/s counts the
convolutions' multiply-adds x 2 actually computed (including overlap).
The CPU is shared, so the numbers are indicative. Writes
``bench_output/deep.json``. Run ``python benchmarks/bench_deep.py [--size N]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CHANNELS = (16, 32, 64, 128)


def make_model():
    from emseg.semantic.deep import Intensity, Model, load_config

    cfg = load_config(
        {
            "data": {"class_names": ["background", "foreground"], "patch_shape": [64, 64, 64]},
            "network": {"dim": 3, "channels": list(CHANNELS), "norm": "batch"},
        }
    )
    model = Model.create(cfg, spacing=(5.0, 5.0, 5.0), intensity=Intensity(128.0, 50.0), seed=0)
    model.network.eval()
    return model


def conv_flops(net: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs (2 x multiply-adds) of the convolutions of one forward pass on `shape`."""
    total = [0.0]

    def hook(mod, inp, out):
        k = math.prod(mod.kernel_size)
        if isinstance(mod, torch.nn.ConvTranspose3d | torch.nn.ConvTranspose2d):
            total[0] += 2.0 * inp[0].numel() * mod.out_channels * k
        else:
            total[0] += 2.0 * out.numel() * (mod.in_channels // mod.groups) * k

    hooks = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)
    ]
    with torch.inference_mode():
        net(torch.zeros(1, 1, *shape))
    for h in hooks:
        h.remove()
    return total[0]


def monai_like_sliding_window(
    model,
    image: np.ndarray,
    *,
    roi: int = 64,
    overlap: float = 0.25,
    sw_batch: int = 4,
    bf16: bool = False,
) -> tuple[np.ndarray, int]:
    """MONAI ``sliding_window_inference`` semantics (gaussian mode); returns probs and windows."""
    from emseg.semantic.deep import gaussian_importance

    x = torch.from_numpy(model.intensity.apply(image))[None, None]
    shape = image.shape
    interval = int(roi * (1 - overlap))
    starts = []
    for s in shape:
        n = math.ceil((s - roi) / interval) + 1 if s > roi else 1
        starts.append(sorted({min(i * interval, max(0, s - roi)) for i in range(n)}))
    windows = list(itertools.product(*starts))
    imp = torch.from_numpy(gaussian_importance((roi,) * 3))
    out = torch.zeros(2, *shape)
    cnt = torch.zeros(shape)
    net = model.network
    with torch.inference_mode():
        for i in range(0, len(windows), sw_batch):
            ws = windows[i : i + sw_batch]
            batch = torch.cat([x[(0, 0, *[slice(a, a + roi) for a in w])][None, None] for w in ws])
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = net(batch)
            else:
                logits = net(batch)
            probs = torch.softmax(logits.float(), 1)
            for w, p in zip(ws, probs, strict=True):
                sl = tuple(slice(a, a + roi) for a in w)
                out[(slice(None), *sl)] += p * imp
                cnt[sl] += imp
    return (out / cnt).numpy(), len(windows)


def _time(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="side of the zarr -> zarr volume")
    ap.add_argument("--memory-size", type=int, default=128, help="side of the in-memory volume")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--out", default="bench_output/deep.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from emseg.semantic.deep import predict_blockwise, predict_image

    model = make_model()
    rng = np.random.default_rng(0)
    n = args.memory_size
    vol = rng.integers(0, 255, (n, n, n), dtype=np.uint8)
    flops64 = conv_flops(model.network, (64, 64, 64))
    flops96 = conv_flops(model.network, (96, 96, 96))
    rows: list[dict] = []
    result = {
        "network": {
            "dim": 3,
            "channels": list(CHANNELS),
            "norm": "batch",
            "gflop_per_64cube": flops64 / 1e9,
            "gflop_per_96cube": flops96 / 1e9,
        },
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "memory_size": n,
        "zarr_size": args.size,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def add(name, seconds, voxels, flops, note=""):
        rows.append(
            {
                "method": name,
                "voxels": voxels,
                "seconds": round(seconds, 3),
                "mvox_s": round(voxels / seconds / 1e6, 3),
                "gflop_s": round(flops / seconds / 1e9, 1),
                "note": note,
            }
        )
        print(
            f"{name:<34} {voxels / 1e6:8.2f} Mvox {seconds:8.2f} s "
            f"{voxels / seconds / 1e6:8.3f} Mvox/s {flops / seconds / 1e9:8.1f} GFLOP/s  {note}",
            flush=True,
        )
        Path(args.out).write_text(json.dumps(result, indent=2))  # after every row

    ref = None
    for bf16 in (False, True):
        res = {}
        t = _time(
            lambda b=bf16, res=res: res.update(out=monai_like_sliding_window(model, vol, bf16=b)),
            args.repeats,
        )
        probs, nwin = res["out"]
        ref = probs if ref is None else ref
        add(
            f"monai-like roi64 sw4 {'bf16' if bf16 else 'fp32'}",
            t,
            vol.size,
            nwin * flops64,
            f"{nwin} windows",
        )
    from emseg.semantic.deep._tiling import tile_grid

    for tile, prec in (
        ((64,) * 3, "fp32"),
        ((64,) * 3, "bf16"),
        ((96,) * 3, "fp32"),
        ((96,) * 3, "bf16"),
    ):
        res = {}
        t = _time(
            lambda tl=tile, p=prec, res=res: res.update(
                p=predict_image(model, vol, tile_shape=tl, overlap=0.25, batch_size=4, precision=p)
            ),
            args.repeats,
        )
        ntiles = math.prod(len(g) for g in tile_grid(vol.shape, tile, 0.25))
        f = ntiles * (flops64 if tile[0] == 64 else flops96)
        diff = float(np.abs(res["p"] - ref).max()) if tile[0] == 64 else float("nan")
        add(
            f"emseg tile{tile[0]} batch4 {prec}",
            t,
            vol.size,
            f,
            f"{ntiles} tiles; max |p - monai-like fp32| = {diff:.2e}",
        )

    big = args.size
    with tempfile.TemporaryDirectory() as d:
        import zarr

        src = zarr.open_array(
            os.path.join(d, "in.zarr"), mode="w", shape=(big,) * 3, chunks=(64,) * 3, dtype="uint8"
        )
        for z in range(0, big, 64):
            src[z : z + 64] = rng.integers(0, 255, (min(64, big - z), big, big), dtype=np.uint8)
        for prec in ("fp32", "bf16"):
            t0 = time.perf_counter()
            predict_blockwise(
                model,
                src,
                out=Path(d) / f"out_{prec}.ome.zarr",
                dtype="float16",
                tile_shape=(96, 96, 96),
                overlap=0.25,
                precision=prec,
                block_shape=(128, 128, 128),
                chunks=(64, 64, 64),
                n_workers=1,
                progress=False,
            )
            t = time.perf_counter() - t0
            add(
                f"emseg blockwise zarr {big}^3 {prec}",
                t,
                big**3,
                float("nan"),
                "tile 96, blocks 128^3, 1 worker, float16 out",
            )
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
