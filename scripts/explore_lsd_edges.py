"""Session 10, addendum 2 (exploration only): the LSD head's predictions as boundary evidence.

A net trained with local shape descriptors (`network.lsd_sigma_nm`) predicts, beside its
boundaries, each voxel's descriptors of its own object; across a boundary between two objects
they jump (offsets point to different centres, volumes and covariances differ). This driver
predicts the descriptors of ``runs/boundaries-fibsem-3d-stage3-lsd`` on the whole FlyEM volume
(one pass, no flips), turns them into a jump map ``g`` (per voxel, the largest Euclidean
distance between its descriptors and a face neighbour's, divided by the 99th percentile and
clipped to [0, 1]), mixes it into the shipped chain's map as ``(1 - alpha) * map + alpha * g``
(quantised to 1/255 as a stored map is) and runs the chooser on that map. Only z 60-79 is
scored; nothing ships from here (a preset cannot compute ``g``).

    python scripts/explore_lsd_edges.py 0.25 --smooth --perturb 4 --jobs 2 \\
        --out bench_output/choose_flyem_chain_s10g25.json \\
        --candidate M=boundaries-fibsem:3+boundaries-fibsem-3d-stage2:1#multicut
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import choose_flyem_chain
import instance_results

from emseg.data import open_dataset_file
from emseg.semantic.deep import Model

LSD_MODEL = "runs/boundaries-fibsem-3d-stage3-lsd"
CACHE = Path("bench_output/cache/flyem_lsd_jump_stage3-lsd.npy")


def descriptors(model: Model, image: np.ndarray) -> np.ndarray:
    """Sigmoid of the auxiliary head on the whole volume, one pass (padded to the divisor)."""
    net = model.network.eval()
    div = net.plan.divisor
    pad = [(0, (-n) % d) for n, d in zip(image.shape, div, strict=True)]
    x = np.pad(model.intensity.apply(image.astype(np.float32)), pad, mode="reflect")
    with torch.no_grad():
        _, aux = net.forward_aux(torch.from_numpy(np.ascontiguousarray(x))[None, None])
    out = torch.sigmoid(aux[0]).numpy()
    return out[(slice(None), *(slice(0, n) for n in image.shape))]


def jump_map(desc: np.ndarray) -> np.ndarray:
    """Per voxel, the largest distance between its descriptors and a face neighbour's."""
    g = np.zeros(desc.shape[1:], dtype=np.float32)
    for ax in range(3):
        d = np.sqrt((np.diff(desc, axis=ax + 1) ** 2).sum(0))
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        g[tuple(lo)] = np.maximum(g[tuple(lo)], d)
        g[tuple(hi)] = np.maximum(g[tuple(hi)], d)
    return np.clip(g / np.percentile(g, 99), 0.0, 1.0)


def main() -> None:
    alpha = float(sys.argv[1])
    if CACHE.exists():
        g = np.load(CACHE)
    else:
        torch.set_num_threads(2)
        image = np.asarray(open_dataset_file("flyem_medulla", "image")[:])
        g = jump_map(descriptors(Model.load(LSD_MODEL), image))
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        np.save(CACHE, g)
    plain = instance_results.cached_deep_map

    def mixed(*args, **kwargs):
        bnd = plain(*args, **kwargs)
        m = (1.0 - alpha) * bnd + alpha * g
        return (np.rint(np.clip(m, 0, 1) * 255) / 255).astype(np.float32)

    choose_flyem_chain.cached_deep_map = mixed  # type: ignore[assignment]
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    choose_flyem_chain.main()


if __name__ == "__main__":
    main()
