"""Image-based queries: a hand-crafted descriptor per object and nearest-neighbour search.

No trained encoder ships with emseg yet, so each object gets a **hand-crafted
descriptor** (:data:`FEATURES`, 26 numbers) from the image around it: an
8-bin intensity histogram inside the mask; mean and std inside and in a ring
around it (the mask dilated by about 3 voxels, minus the mask) and their
contrast; Gaussian gradient magnitude and Laplacian-of-Gaussian means inside
and on the ring at two scales (8 and 24 nm); and shape descriptors from the
morphometry row (log volume, elongation, flatness, solidity, sphericity).
Vectors are standardised (z-score over the whole catalog) at query time and
compared by Euclidean distance.

Search: below ``catalog.ann_min_objects`` objects (20,000 by default), or
with ``exact=True``, it is exact: two streamed numpy scans (batches of
50 000; the first for the standardisation, the second for the distances),
time and I/O linear in the catalog, memory one batch. From that size on it
uses the catalog's faiss IVF-Flat index (:mod:`emseg.catalog._ann`: built
on first use, stored with the catalog, rebuilt when objects change, recall@10
calibrated to 0.97). See ``docs/catalog.md`` for measured latency and recall.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from emseg.catalog._ann import AnnHits
from emseg.errors import EmsegValueError

if TYPE_CHECKING:
    import pandas as pd

    from emseg.catalog._catalog import Catalog

SCALES_NM = (8.0, 24.0)
SHAPE_COLUMNS = ("volume_nm3", "elongation", "flatness", "solidity", "sphericity")
FEATURES: tuple[str, ...] = (
    *(f"hist_{i}" for i in range(8)),
    "mean_in",
    "std_in",
    "mean_ring",
    "std_ring",
    "contrast",
    *(f"{k}_{w}_{int(s)}nm" for s in SCALES_NM for k in ("grad", "log") for w in ("in", "ring")),
    "log_volume",
    "elongation",
    "flatness",
    "solidity",
    "sphericity",
)


def _describe(
    crop: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...], lo: float, hi: float
) -> np.ndarray:
    img = (crop.astype(np.float32) - lo) / max(hi - lo, 1e-12)
    ring = ndi.binary_dilation(mask, iterations=3) & ~mask
    if not ring.any():
        ring = ~mask if (~mask).any() else mask
    inside = img[mask]
    h = np.histogram(np.clip(inside, 0, 1), bins=8, range=(0, 1))[0] / max(len(inside), 1)
    f = [
        *h,
        inside.mean(),
        inside.std(),
        img[ring].mean(),
        img[ring].std(),
        inside.mean() - img[ring].mean(),
    ]
    for s in SCALES_NM:
        sig = [s / sp if s / sp >= 0.3 else 0.0 for sp in spacing]
        g = ndi.gaussian_gradient_magnitude(img, sig) if any(sig) else img * 0
        lap = ndi.gaussian_laplace(img, sig) if any(sig) else img * 0
        f += [g[mask].mean(), g[ring].mean(), lap[mask].mean(), lap[ring].mean()]
    return np.asarray(f, np.float32)


def describe_objects(
    image: Any,
    labels: Any,
    table: pd.DataFrame,
    *,
    spacing: tuple[float, ...],
    intensity_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Descriptor of every object of a morphometry `table`, from its bounding-box crop.

    Parameters
    ----------
    image, labels : (Z, Y, X) or (Y, X) arrays
        Raw image and the labels the table was measured on.
    table : pandas.DataFrame
        From :func:`emseg.morphometry.measure` (``label`` and ``bbox_*_vx``).
    spacing : tuple of float
        Voxel size in nm.
    intensity_range : (float, float), optional
        Maps intensities to 0..1 (default: the dtype's range for integers, 0..1 for floats).

    Returns
    -------
    (N, len(FEATURES)) ndarray of float32
    """
    dt = np.dtype(image.dtype)
    if intensity_range is None:
        intensity_range = (
            (float(np.iinfo(dt).min), float(np.iinfo(dt).max)) if dt.kind in "ui" else (0.0, 1.0)
        )
    lo, hi = intensity_range
    d = labels.ndim
    names = "zyx"[3 - d :]
    out = np.zeros((len(table), len(FEATURES)), np.float32)
    shape = labels.shape
    for i, row in enumerate(table.itertuples(index=False)):
        r = row._asdict()
        b0 = [int(r[f"bbox_{a}0_vx"]) for a in names]
        b1 = [int(r[f"bbox_{a}1_vx"]) for a in names]
        sl = tuple(
            slice(max(0, a - 3), min(n, b + 3)) for a, b, n in zip(b0, b1, shape, strict=True)
        )
        mask = np.asarray(labels[sl]) == int(r["label"])
        crop = np.asarray(image[sl])
        f = _describe(crop, mask, spacing, lo, hi)
        vol = r.get("volume_nm3", r.get("area_nm2", 0.0))
        shape_f = [np.log1p(float(vol))] + [float(r.get(c, 0.0) or 0.0) for c in SHAPE_COLUMNS[1:]]
        out[i] = np.nan_to_num(np.concatenate([f, np.asarray(shape_f, np.float32)]), posinf=0.0)
    return out


def describe_patch(
    patch: np.ndarray,
    *,
    spacing: tuple[float, ...],
    intensity_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Descriptor of the structure at the centre of an image patch.

    The mask is the connected region of the patch's Otsu class that holds the
    central pixel (dark structures on light cytoplasm, or the reverse).

    Returns
    -------
    (len(FEATURES),) ndarray of float32
    """
    from skimage.filters import threshold_otsu

    from emseg.morphometry import measure

    patch = np.asarray(patch)
    if patch.ndim not in (2, 3) or min(patch.shape) < 3:
        raise EmsegValueError(
            f"`patch` must be a 2D or 3D image of at least 3 pixels per axis; got {patch.shape}."
        )
    t = threshold_otsu(patch.astype(np.float64))
    centre = tuple(s // 2 for s in patch.shape)
    side = patch >= t if patch[centre] >= t else patch < t
    comp, _ = ndi.label(side)
    mask = (comp == comp[centre]).astype(np.uint8)
    table = measure(mask, image=patch, spacing=spacing, n_workers=1)
    return describe_objects(
        patch, mask, table.table, spacing=spacing, intensity_range=intensity_range
    )[0]


def like(
    catalog: Catalog,
    example: int | np.ndarray,
    *,
    top: int = 10,
    where: str = "",
    exact: bool = False,
) -> pd.DataFrame:
    """The `top` objects most similar to `example` (an object id or a descriptor vector).

    Parameters
    ----------
    catalog : Catalog
        An open catalog.
    example : int or (D,) ndarray
        An object id (the object itself is left out of the answer) or a
        descriptor, e.g. from :func:`describe_patch`.
    top : int
        Number of neighbours.
    where : str
        A label query the neighbours must match.
    exact : bool
        Scan every descriptor even when the catalog is large enough for the
        ANN index (``len(catalog) >= catalog.ann_min_objects``).

    Returns
    -------
    pandas.DataFrame
        Object rows plus ``distance`` (Euclidean, on descriptors z-scored over
        the whole catalog, in standard deviations), nearest first.
        ``df.attrs["search"]`` is ``"exact"`` or ``"ann"`` (the path taken).
    """
    if int(top) < 1:
        raise EmsegValueError(f"`top` must be >= 1; got {top}.")
    exclude = None
    if isinstance(example, int | np.integer):
        emb = catalog.embeddings([int(example)])
        if int(example) not in emb:
            raise EmsegValueError(
                f"object {example} has no embedding (add the dataset with its image)."
            )
        vec = emb[int(example)].astype(np.float64)
        exclude = int(example)
    else:
        vec = np.asarray(example, np.float64).ravel()
    if exact or len(catalog) < catalog.ann_min_objects:
        allowed = catalog.ids(where) if where else None
        best = _exact(catalog, vec, top=int(top), exclude=exclude, allowed=allowed)
        method = "exact"
    else:
        hits = _ann_hits(catalog, vec, int(top) + (exclude is not None), where)
        best = [
            (float(d), int(o))
            for d, o in zip(hits.distances, hits.ids, strict=True)
            if int(o) != exclude
        ][: int(top)]
        method = "ann"
    df = catalog.query(ids=[o for _, o in best])
    order = {o: d for d, o in best}
    df["distance"] = [order[int(i)] for i in df["id"]]
    df = df.sort_values(["distance", "id"]).reset_index(drop=True)
    df.attrs["search"] = method
    return df


#: Filters keeping at least this fraction of the objects are applied to over-fetched ANN hits.
OVERFETCH_MIN_FRACTION = 0.05


def _ann_hits(catalog: Catalog, vec: np.ndarray, want: int, where: str) -> AnnHits:
    """`want` nearest objects matching `where` from the catalog's ANN index."""
    ann = catalog.ann_index()
    if not where:
        return ann.search(vec, want)
    frac = min(catalog.count(where) / max(ann.info.n_vectors, 1), 1.0)
    if frac >= OVERFETCH_MIN_FRACTION:
        # the nearest 2 want / f among the cells a filtered search would scan, filtered in SQL:
        # the first `want` that pass are the filtered search's answer (no need to read every id)
        kk = min(ann.info.n_vectors, math.ceil(2 * want / frac) + 10)
        cand = ann.search(vec, kk, fraction=frac)
        keep = np.isin(cand.ids, catalog.ids(where, among=cand.ids.tolist()))
        if keep.sum() >= want:
            return AnnHits(cand.ids[keep][:want], cand.distances[keep][:want])
    return ann.search(vec, want, allowed=catalog.ids(where))


def _exact(
    catalog: Catalog,
    vec: np.ndarray,
    *,
    top: int,
    exclude: int | None,
    allowed: np.ndarray | None,
) -> list[tuple[float, int]]:
    """(distance, id) of the `top` nearest descriptors by two streamed scans, nearest first."""
    n = 0
    s1 = np.zeros_like(vec)
    s2 = np.zeros_like(vec)
    for _ids, e in catalog.iter_embeddings():
        if e.shape[1] != len(vec):
            raise EmsegValueError(
                f"`example` must have {e.shape[1]} numbers (the catalog's descriptor length); "
                f"got {len(vec)}."
            )
        n += len(e)
        s1 += e.sum(0)
        s2 += (e.astype(np.float64) ** 2).sum(0)
    if n == 0:
        raise EmsegValueError("the catalog holds no embeddings; add datasets with --image.")
    mu = s1 / n
    sd = np.sqrt(np.maximum(s2 / n - mu**2, 0)) + 1e-9
    q = (vec - mu) / sd
    heap: list[tuple[float, int]] = []
    for ids, e in catalog.iter_embeddings():
        keep = ids != (exclude if exclude is not None else -1)
        if allowed is not None:
            keep &= np.isin(ids, allowed, assume_unique=True)
        ids = ids[keep]
        dist = np.sqrt((((e[keep] - mu) / sd - q) ** 2).sum(1))
        k = min(len(dist), top)
        if k == 0:
            continue
        for j in np.argpartition(dist, k - 1)[:k]:
            heapq.heappush(heap, (-float(dist[j]), -int(ids[j])))
            if len(heap) > top:
                heapq.heappop(heap)
    return sorted((-d, -o) for d, o in heap)
