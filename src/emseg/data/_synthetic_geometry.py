"""Global geometry of synthetic EM: cells, membranes, organelles, all in nm.

Everything here is drawn once from the seed (seed points, a warp field made of
a few low-frequency sinusoids, lists of mitochondria, vesicles, somata and
nuclei) and evaluated *pointwise* afterwards, so any box of the volume can be
rendered on its own and equals the same box of the whole volume.

Geometry lives in *warped space*: a voxel at physical position ``x`` (nm,
``index * spacing``) is looked up at ``w = x + D(x)``, where ``D`` is a sum of
sinusoids whose gradient is bounded by ``warp`` (so ``x -> w`` is a smooth
bijection and boundaries look organic). Cells are the (generalised) Voronoi
regions of seed points in warped space; a neurite is one label shared by a
chain of seeds, which gives an elongated, tube-like region.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

#: Neighbours looked up per voxel near boundaries (chains share labels, so >2).
K_RENDER = 10
#: Neighbours looked up when placing organelles (a few points, so be generous).
K_PLACE = 24
#: Sinusoids in the warp field.
N_WARP = 8


@dataclass(frozen=True)
class SyntheticParams:
    """Physical parameters of synthetic EM (lengths in nm, intensities in 0..1)."""

    cell_diameter: float = 500.0
    membrane_thickness: float = 14.0
    neurite_fraction: float = 0.3
    mitochondria_fraction: float = 0.4
    vesicle_fraction: float = 0.3
    nucleus: bool = True
    warp: float = 0.25
    psf_sigma: tuple[float, ...] = (6.0, 6.0, 6.0)
    photons: float = 150.0
    read_noise: float = 0.03
    drift: float = 0.06

    def as_dict(self) -> dict[str, Any]:
        return {
            "cell_diameter": self.cell_diameter,
            "membrane_thickness": self.membrane_thickness,
            "neurite_fraction": self.neurite_fraction,
            "mitochondria_fraction": self.mitochondria_fraction,
            "vesicle_fraction": self.vesicle_fraction,
            "nucleus": self.nucleus,
            "warp": self.warp,
            "psf_sigma": list(self.psf_sigma),
            "photons": self.photons,
            "read_noise": self.read_noise,
            "drift": self.drift,
        }


@dataclass(frozen=True, eq=False)
class Geometry:
    """Every global random choice of one synthetic volume (internal)."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    seed: int
    params: SyntheticParams
    seeds: np.ndarray  # (N, ndim) nm, warped space
    seed_labels: np.ndarray  # (N,) uint32
    tree: cKDTree
    warp_freq: np.ndarray  # (K, ndim) cycles / nm
    warp_amp: np.ndarray  # (K, ndim) nm (amplitude times direction)
    warp_phase: np.ndarray  # (K,)
    warp_max: float  # bound of |D| (nm)
    soma_centres: np.ndarray  # (S, ndim)
    soma_radii: np.ndarray  # (S,)
    soma_labels: np.ndarray  # (S,) uint32
    nucleus_centres: np.ndarray  # (S, ndim) (only somata with a nucleus)
    nucleus_radii: np.ndarray  # (S, ndim) semi-axes in the nucleus frame
    nucleus_rot: np.ndarray  # (S, ndim, ndim) columns = nucleus axes
    chromatin_freq: np.ndarray  # (C, ndim)
    chromatin_phase: np.ndarray  # (C,)
    mito_a: np.ndarray  # (M, ndim) axis end points
    mito_b: np.ndarray  # (M, ndim)
    mito_radius: np.ndarray  # (M,)
    mito_period: np.ndarray  # (M,) cristae period (nm)
    mito_phase: np.ndarray  # (M,)
    vesicle_centres: np.ndarray  # (V, ndim)
    vesicle_radii: np.ndarray  # (V,)
    texture_freq: np.ndarray  # (T, ndim) low-frequency cytoplasm shading
    texture_phase: np.ndarray  # (T,)
    section_gain: np.ndarray  # (shape[0],) per-section contrast (3D) or empty
    section_offset: np.ndarray  # (shape[0],) per-section brightness (3D) or empty
    n_cells: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def half(self) -> np.ndarray:
        """Half a voxel (nm) per axis."""
        return np.asarray(self.spacing) / 2.0

    @property
    def box_reach(self) -> float:
        """Largest margin :func:`box_margin` gives (nm)."""
        return float((1.0 + self.params.warp) * self.half.max())

    @property
    def membrane_reach(self) -> float:
        """No voxel farther than this from a cell boundary is membrane."""
        return self.params.membrane_thickness / 2.0 + self.box_reach


# --------------------------------------------------------------------------- warp


def warp_points(geom: Geometry, x: np.ndarray) -> np.ndarray:
    """Map physical points ``x`` (N, ndim) nm to warped space ``x + D(x)``."""
    from emseg.data._synthetic_kernel import sinusoids

    return np.asarray(x + sinusoids(x, geom.warp_freq, geom.warp_phase, geom.warp_amp))


def grid_warp(geom: Geometry, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Physical and warped positions (prod(shape), ndim) of the voxels of `region`."""
    x = grid_points(geom, region)
    return x, warp_points(geom, x)


def grid_points(geom: Geometry, region: tuple[slice, ...]) -> np.ndarray:
    """Physical positions (prod(shape), ndim) of the voxels of `region` (C order)."""
    axes = [np.arange(s.start, s.stop) * sp for s, sp in zip(region, geom.spacing, strict=True)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def index_box(
    geom: Geometry, lo: np.ndarray, hi: np.ndarray, region: tuple[slice, ...]
) -> tuple[slice, ...] | None:
    """Voxels of `region` whose warped position can fall in the warped box [lo, hi].

    Exact culling: ``|D| <= warp_max`` so ``x`` lies in ``[lo - warp_max, hi + warp_max]``.
    Returned slices are relative to `region`; ``None`` when empty.
    """
    out = []
    for axis, s in enumerate(region):
        sp = geom.spacing[axis]
        a = math.floor((lo[axis] - geom.warp_max) / sp)
        b = math.ceil((hi[axis] + geom.warp_max) / sp) + 1
        a, b = max(a, s.start), min(b, s.stop)
        if a >= b:
            return None
        out.append(slice(a - s.start, b - s.start))
    return tuple(out)


# --------------------------------------------------------------------------- cells


def box_margin(normals: np.ndarray, geom: Geometry) -> np.ndarray:
    """How far (nm) from a boundary with unit `normals` a voxel still counts as on it.

    ``max_i (|n_i| + warp) * spacing_i / 2``: for two face-adjacent voxels on
    either side of a boundary, the boundary crosses the half of the segment
    between them that belongs to one of them, so that voxel lies within this
    margin (the warp's gradient bound covers the bending of the segment).
    """
    return np.asarray(((np.abs(normals) + geom.params.warp) * geom.half).max(axis=1))


def projected_darkness(f: np.ndarray, nz: np.ndarray | None, geom: Geometry) -> np.ndarray:
    """Fraction of a voxel's column covered by a membrane sheet at distance `f`.

    In 3D the sheet (thickness t) is integrated over the section's z-extent:
    an oblique membrane looks wider and fainter, as in serial-section TEM.
    """
    t = geom.params.membrane_thickness
    if nz is None:
        return (np.abs(f) < t / 2).astype(np.float32)
    length = np.abs(nz) * geom.spacing[0]
    lo = np.maximum(f - length / 2, -t / 2)
    hi = np.minimum(f + length / 2, t / 2)
    cover = np.clip(hi - lo, 0.0, None)
    thin = length < 1e-6
    safe = np.where(thin, 1.0, length)
    return np.where(thin, np.abs(f) < t / 2, cover / safe).astype(np.float32)


def cell_field(
    geom: Geometry, w: np.ndarray, *, render: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Cell labels of warped points `w` and their distance to the cell boundary.

    Returns ``(labels, distance, membrane, darkness)``. ``distance`` is a lower
    bound of the distance (nm) to the own cell's boundary (``inf`` when far).
    With ``render``, ``membrane`` is the ground-truth mask (the voxel's box,
    enlarged by the warp's gradient bound, meets the membrane sheet) and
    ``darkness`` the membrane's covered fraction (0..1) for the image.
    """
    n = len(w)
    k = min(K_RENDER if render else K_PLACE, len(geom.seeds))
    t = geom.params.membrane_thickness
    d2, i2 = geom.tree.query(w, k=min(2, k), workers=-1)
    d2 = d2.reshape(n, -1)
    i2 = i2.reshape(n, -1)
    labels = geom.seed_labels[i2[:, 0]]
    dist = np.full(n, np.inf)
    membrane = np.zeros(n, bool) if render else None
    dark = np.zeros(n, np.float32) if render else None
    reach = geom.membrane_reach if render else np.inf
    if d2.shape[1] > 1:
        near = np.flatnonzero((d2[:, 1] - d2[:, 0]) * 0.5 < reach)
    else:
        near = np.zeros(0, np.intp)
    if len(near):
        dk, ik = geom.tree.query(w[near], k=k, workers=-1)
        s0 = geom.seeds[ik[:, 0]]
        lab0 = labels[near]
        fmin = np.full(len(near), np.inf)
        mem = np.zeros(len(near), bool) if render else None
        dk_ = np.zeros(len(near), np.float32) if render else None
        for j in range(1, k):
            other = geom.seed_labels[ik[:, j]] != lab0
            diff = geom.seeds[ik[:, j]] - s0
            length = np.sqrt((diff**2).sum(axis=1))
            f = (dk[:, j] ** 2 - dk[:, 0] ** 2) / (2 * length)
            f = np.where(other, f, np.inf)
            fmin = np.minimum(fmin, f)
            if render:
                nrm = diff / length[:, None]
                rbox = box_margin(nrm, geom)
                mem |= f <= t / 2 + rbox  # type: ignore[operator]
                nz = nrm[:, 0] if geom.ndim == 3 else None
                dk_ = np.maximum(dk_, projected_darkness(f, nz, geom))  # type: ignore[arg-type]
        dist[near] = fmin
        if render:
            membrane[near] = mem  # type: ignore[index]
            dark[near] = dk_  # type: ignore[index]
    return apply_somata(geom, w, labels, dist, membrane, dark)


def apply_somata(
    geom: Geometry,
    w: np.ndarray,
    labels: np.ndarray,
    dist: np.ndarray,
    membrane: np.ndarray | None,
    dark: np.ndarray | None,
    *,
    only: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Overlay the somata (spheres in warped space, or soma `only`) on the Voronoi cells."""
    h = geom.half
    t = geom.params.membrane_thickness
    render = membrane is not None
    for i, (c, r, lab) in enumerate(
        zip(geom.soma_centres, geom.soma_radii, geom.soma_labels, strict=True)
    ):
        if only is not None and i != only:
            continue
        v = w - c
        rho = np.sqrt((v**2).sum(axis=1))
        ds = rho - r
        inside = ds < 0
        labels = np.where(inside, lab, labels)
        dist = np.where(inside, -ds, np.minimum(dist, ds))
        if render:
            nrm = v / np.maximum(rho, 1e-9)[:, None]
            rbox = box_margin(nrm, geom)
            curv = h.max() ** 2 / r
            on = np.abs(ds) <= t / 2 + rbox + curv
            membrane = np.where(inside, False, membrane) | on  # type: ignore[arg-type]
            nz = nrm[:, 0] if geom.ndim == 3 else None
            dsoma = projected_darkness(np.abs(ds), nz, geom)
            dark = np.maximum(np.where(inside, 0.0, dark), dsoma).astype(np.float32)  # type: ignore[arg-type]
    return labels.astype(np.uint32), dist, membrane, dark


def cell_grid(
    geom: Geometry, region: tuple[slice, ...], w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, membrane mask and membrane darkness of the voxels of `region` (flat)."""
    from emseg.data._synthetic_kernel import voronoi_grid

    labels, membrane, dark = voronoi_grid(geom, region, w)
    shape = tuple(s.stop - s.start for s in region)
    grids = [a.reshape(shape) for a in (labels, membrane, dark)]
    wg = w.reshape(*shape, geom.ndim)
    reach = geom.membrane_reach + geom.half.max()
    for i, (c, r) in enumerate(zip(geom.soma_centres, geom.soma_radii, strict=True)):
        rel = index_box(geom, c - r - reach, c + r + reach, region)
        if rel is None:
            continue
        sub = [g[rel] for g in grids]
        lab, _, mem, dk = apply_somata(
            geom,
            wg[rel].reshape(-1, geom.ndim),
            sub[0].ravel(),
            np.zeros(sub[0].size),
            sub[1].ravel(),
            sub[2].ravel(),
            only=i,
        )
        for g, v in zip(grids, (lab, mem, dk), strict=True):
            g[rel] = v.reshape(g[rel].shape)  # type: ignore[union-attr]
    return labels, membrane, dark


# --------------------------------------------------------------------------- build


def _unit_vectors(rng: np.random.Generator, n: int, ndim: int) -> np.ndarray:
    v = rng.normal(size=(n, ndim))
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True))


def _random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    return np.asarray(q * np.sign(np.diag(r)))


def build_geometry(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed: int, params: SyntheticParams
) -> Geometry:
    """Draw every global random choice of a synthetic volume (cheap: no voxels)."""
    ndim = len(shape)
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, float)
    extent = (np.asarray(shape) - 1) * sp
    d = params.cell_diameter
    t = params.membrane_thickness

    # warp field: N_WARP sinusoids whose summed gradient is at most params.warp
    wavelength = rng.uniform(2.0, 5.0, N_WARP) * d
    freq = _unit_vectors(rng, N_WARP, ndim) / wavelength[:, None]
    weights = rng.uniform(0.5, 1.0, N_WARP)
    amp = weights * wavelength / (2 * np.pi) * params.warp / weights.sum()
    warp_amp = _unit_vectors(rng, N_WARP, ndim) * amp[:, None]
    warp_phase = rng.uniform(0, 2 * np.pi, N_WARP)
    warp_max = float(amp.sum())

    # seeds: Poisson points plus neurite chains, in a box with a margin
    margin = 1.5 * d + warp_max
    lo, hi = -margin * np.ones(ndim), extent + margin
    box_volume = float(np.prod(hi - lo))
    cell_volume = math.pi / 6 * d**3 if ndim == 3 else math.pi / 4 * d**2
    n_labels = max(2, int(rng.poisson(box_volume / cell_volume)))
    n_chains = int(rng.binomial(n_labels, params.neurite_fraction))
    n_points = n_labels - n_chains
    points = rng.uniform(lo, hi, size=(n_points, ndim))
    chains = []
    for _ in range(n_chains):
        m = int(rng.integers(4, 9))
        p = rng.uniform(lo, hi)
        direction = _unit_vectors(rng, 1, ndim)[0]
        chain = [p]
        for _ in range(m - 1):
            direction = direction + rng.normal(0, 0.25, ndim)
            direction /= np.linalg.norm(direction)
            p = p + 0.5 * d * direction
            chain.append(p)
        chains.append(np.asarray(chain))
    seeds = [points, *chains]
    labels = [np.arange(1, n_points + 1)] + [
        np.full(len(c), n_points + 1 + i) for i, c in enumerate(chains)
    ]
    all_seeds = np.concatenate(seeds).reshape(-1, ndim)
    all_labels = np.concatenate(labels).astype(np.uint32)

    # somata (cell bodies, spheres) with a nucleus each
    h_max = float(sp.max()) / 2
    box_reach = float((1.0 + params.warp) * h_max)
    soma_c: list[np.ndarray] = []
    soma_r: list[float] = []
    if params.nucleus:
        r_soma = float(np.clip(0.45 * extent[-2:].min(), 0.6 * d, 3000.0))
        area = float(np.prod(extent[-2:] + 1))
        n_somata = max(1, round(area / (6 * r_soma) ** 2))
        for _ in range(50 * n_somata):
            if len(soma_c) == n_somata:
                break
            c = rng.uniform(0, 1, ndim) * extent
            if all(np.linalg.norm(c - o) > 2 * r_soma + d for o in soma_c):
                soma_c.append(c)
                soma_r.append(r_soma * float(rng.uniform(0.9, 1.1)))
    soma_centres = np.asarray(soma_c, float).reshape(-1, ndim)
    soma_radii = np.asarray(soma_r, float)
    if len(soma_centres):
        keep = np.ones(len(all_seeds), bool)
        for c, r in zip(soma_centres, soma_radii, strict=True):
            keep &= np.linalg.norm(all_seeds - c, axis=1) > r + 0.25 * d
        all_seeds, all_labels = all_seeds[keep], all_labels[keep]
    if len(all_seeds) < 2:  # a tiny volume inside a soma: keep two far points
        all_seeds = np.concatenate([all_seeds, hi[None] + d, lo[None] - d])
        all_labels = np.concatenate([all_labels, [n_labels + 1, n_labels + 2]]).astype(np.uint32)
    n_cells = int(all_labels.max())
    soma_labels = np.arange(n_cells + 1, n_cells + 1 + len(soma_centres), dtype=np.uint32)

    nuc_c, nuc_r, nuc_rot = [], [], []
    need = t / 2 + box_reach + 60.0  # envelope and soma membrane never touch
    for c, r in zip(soma_centres, soma_radii, strict=True):
        offset = _unit_vectors(rng, 1, ndim)[0] * rng.uniform(0, 0.08) * r
        radii = r * rng.uniform([0.5] + [0.6] * (ndim - 1), 0.62)
        radii = np.minimum(radii, r - np.linalg.norm(offset) - need)
        rot = _random_rotation(rng, ndim)
        if radii.min() >= 40.0:
            nuc_c.append(c + offset)
            nuc_r.append(radii)
            nuc_rot.append(rot)
    n_chrom = 10
    chrom_freq = _unit_vectors(rng, n_chrom, ndim) / rng.uniform(120, 400, n_chrom)[:, None]
    chrom_phase = rng.uniform(0, 2 * np.pi, n_chrom)
    n_tex = 6
    tex_freq = _unit_vectors(rng, n_tex, ndim) / rng.uniform(0.4, 2.0, n_tex)[:, None] / d
    tex_phase = rng.uniform(0, 2 * np.pi, n_tex)

    # per-section drift: always drawn (so `drift` does not change the geometry), then scaled
    n_z = shape[0] if ndim == 3 else 0
    period = rng.uniform(8, 24)
    slow = np.sin(2 * np.pi * np.arange(n_z) / period + rng.uniform(0, 2 * np.pi))
    offset_z = params.drift * (0.6 * rng.normal(size=n_z) + 0.8 * slow)
    gain_z = 1.0 + params.drift * 1.5 * rng.normal(size=n_z)

    geom = Geometry(
        shape=shape,
        spacing=tuple(float(s) for s in sp),
        seed=seed,
        params=params,
        seeds=all_seeds,
        seed_labels=all_labels,
        tree=cKDTree(all_seeds),
        warp_freq=freq,
        warp_amp=warp_amp,
        warp_phase=warp_phase,
        warp_max=warp_max,
        soma_centres=soma_centres,
        soma_radii=soma_radii,
        soma_labels=soma_labels,
        nucleus_centres=np.asarray(nuc_c, float).reshape(-1, ndim),
        nucleus_radii=np.asarray(nuc_r, float).reshape(-1, ndim),
        nucleus_rot=np.asarray(nuc_rot, float).reshape(-1, ndim, ndim),
        chromatin_freq=chrom_freq,
        chromatin_phase=chrom_phase,
        mito_a=np.zeros((0, ndim)),
        mito_b=np.zeros((0, ndim)),
        mito_radius=np.zeros(0),
        mito_period=np.zeros(0),
        mito_phase=np.zeros(0),
        vesicle_centres=np.zeros((0, ndim)),
        vesicle_radii=np.zeros(0),
        texture_freq=tex_freq,
        texture_phase=tex_phase,
        section_gain=gain_z,
        section_offset=offset_z,
        n_cells=n_cells + len(soma_centres),
    )
    from emseg.data._synthetic_objects import place_mitochondria, place_vesicles

    mitos = place_mitochondria(geom, rng, lo=np.full(ndim, -warp_max), hi=extent + warp_max)
    vesicles = place_vesicles(geom, rng, mitos, lo=np.full(ndim, -warp_max), hi=extent + warp_max)
    return dataclasses.replace(geom, **mitos, **vesicles)
