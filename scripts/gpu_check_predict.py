"""On a CUDA machine: prediction on the GPU against the CPU, in memory and blockwise.

For the shipped FlyEM boundary nets (3D stage 2, and the 2D net tri-planar) on z 60-79 of
FlyEM (``.gpudata/image.tif`` on the device machine, see scripts/gpu_train.sh): the largest
probability difference GPU vs CPU, blockwise-on-GPU vs in-memory-on-GPU, and the times of each
(the CPU is the device machine's, all its cores). cuDNN runs float32 convolutions in TF32
(PyTorch's default), so GPU and CPU probabilities differ by up to a few 1e-3 (measured on the
lent H100: 2.7e-3 for the 3D net, 7.8e-4 for the 2D net; blockwise equals in memory exactly).
Exits 1 when no GPU is seen, the GPU differs from the CPU by more than 1e-2, or blockwise
differs from in memory by more than 1e-5.

    python scripts/gpu_check_predict.py [IMAGE]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from emseg.semantic.deep import load_model, predict_blockwise, predict_image


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = np.asarray(fn(*args, **kwargs))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU seen")
        return 1
    import tifffile

    path = sys.argv[1] if len(sys.argv) > 1 else ".gpudata/image.tif"
    image = tifffile.imread(path)[60:80]
    worst = 0.0
    print(f"threads {torch.get_num_threads()}, image {image.shape}")
    for name, planes in (("boundaries-fibsem-3d-stage2", 1), ("boundaries-fibsem", 3)):
        model = load_model(name)
        kw = {"planes": planes, "tta": True}
        predict_image(model, image[:8], device="cuda", **kw)  # warm-up (cuDNN, CUDA context)
        gpu, t_gpu = _timed(predict_image, model, image, device="cuda", **kw)
        cpu, t_cpu = _timed(predict_image, model, image, device="cpu", **kw)
        blk, t_blk = _timed(
            predict_blockwise, model, image, device="cuda", dtype="float32", progress=False, **kw
        )
        d_cpu = float(np.abs(gpu - cpu).max())
        d_blk = float(np.abs(blk - gpu).max())
        worst = max(worst, d_cpu / 1e-2, d_blk / 1e-5)  # each over its bound
        print(
            f"{name} planes {planes} flips: GPU {t_gpu:.2f} s, CPU {t_cpu:.2f} s "
            f"(CPU/GPU {t_cpu / t_gpu:.1f}x), blockwise GPU {t_blk:.2f} s; "
            f"max |GPU - CPU| {d_cpu:.2e}, max |blockwise - in memory| {d_blk:.2e}"
        )
    ok = worst <= 1.0
    print("OK" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
