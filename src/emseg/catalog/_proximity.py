"""Proximity queries: objects within a distance (nm) of an object or a class, in a direction.

Distances are **surface-to-surface**: the smallest distance between the
stored surface points (up to a few hundred per object, subsampled from the
marching-cubes mesh, so the distance is exact for those points and within
about the sampling gap of the true surface distance). An object stored
without points is represented by its centroid (then the distance is
centroid-to-surface, or centroid-to-centroid if both lack points); the
``distance_kind`` column says which. Candidates come from the spatial index
(the target's box grown by the distance); the exact distance
(``scipy.spatial.cKDTree``) runs on the candidates only. An object inside a
target (a mitochondrion in a cell) has the distance between the two
surfaces, not 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from emseg.catalog._catalog import Catalog
from emseg.catalog._query import Compare
from emseg.errors import EmsegValueError

if TYPE_CHECKING:
    import pandas as pd

#: Named directions (z, y, x). "above" is toward smaller z (earlier sections).
DIRECTIONS = {
    "above": (-1.0, 0.0, 0.0),
    "below": (1.0, 0.0, 0.0),
    "-y": (0.0, -1.0, 0.0),
    "+y": (0.0, 1.0, 0.0),
    "-x": (0.0, 0.0, -1.0),
    "+x": (0.0, 0.0, 1.0),
}


def target_ids(catalog: Catalog, target: int | str) -> np.ndarray:
    """Ids of `target`: one object id, or every object of a class name."""
    if isinstance(target, int | np.integer):
        ids = catalog.ids(Compare("id", "=", float(target)))
    elif isinstance(target, str):
        ids = catalog.ids(Compare("class", "=", target))
    else:
        raise EmsegValueError(f"`target` must be an object id or a class name; got {target!r}.")
    if len(ids) == 0:
        raise EmsegValueError(f"`target` {target!r} matches no object in the catalog.")
    return ids


def _clouds(catalog: Catalog, ids: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, bool]]:
    pts = catalog.points(ids.tolist())
    missing = [int(i) for i in ids if int(i) not in pts]
    has = {int(i): int(i) in pts for i in ids}
    for oid, c in catalog.centroids(missing).items():
        pts[oid] = c[None, :].astype(np.float32)
    return {k: v.astype(np.float64) for k, v in pts.items()}, has


def near(
    catalog: Catalog,
    target: int | str,
    *,
    within: float,
    where: str = "",
    direction: str | Sequence[float] | None = None,
    toward: int | None = None,
    max_angle: float = 45.0,
) -> pd.DataFrame:
    """Objects whose surface is within `within` nm of a target object or class.

    Parameters
    ----------
    catalog : Catalog
    target : int or str
        An object id, or a class name (every object of that class).
    within : float
        Distance in nm (>= 0).
    where : str
        A label query the results must also match.
    direction : str or (3,) sequence, optional
        Keep objects whose centroid lies in this direction from the nearest
        target's centroid (named: see :data:`DIRECTIONS`, or a z-y-x vector),
        within `max_angle` degrees.
    toward : int, optional
        Direction from the nearest target's centroid toward this object's centroid.
    max_angle : float
        Half-angle of the direction cone, degrees.

    Returns
    -------
    pandas.DataFrame
        Object rows plus ``distance_nm``, ``nearest_target`` and
        ``distance_kind``, sorted by distance. Targets themselves are excluded.
    """
    import pandas as pd

    within = float(within)
    if not within >= 0:
        raise EmsegValueError(f"`within` must be a distance >= 0 in nm; got {within}.")
    tids = target_ids(catalog, target)
    tset = set(tids.tolist())
    tboxes = catalog.boxes(tids.tolist())
    cand_of: dict[int, np.ndarray] = {}
    for t in tids.tolist():
        b = tboxes[t] + np.array([-1, 1] * 3) * within
        c = catalog.box_candidates(b)
        cand_of[t] = np.array([i for i in c.tolist() if i not in tset], np.int64)
    if where:  # the label filter runs on the candidates only
        pool = np.unique(np.concatenate([np.zeros(0, np.int64), *cand_of.values()]))
        allowed = catalog.ids(where, among=pool.tolist())
        cand_of = {t: c[np.isin(c, allowed)] for t, c in cand_of.items()}
    union = np.unique(np.concatenate([tids, *cand_of.values()]))
    clouds, has = _clouds(catalog, union)
    best: dict[int, tuple[float, int]] = {}
    for t, cands in cand_of.items():
        if len(cands) == 0:
            continue
        tree = cKDTree(clouds[t])
        for c in cands.tolist():
            d, _ = tree.query(clouds[c], k=1, distance_upper_bound=within + 1e-9)
            dmin = float(np.min(d))
            if dmin <= within and (c not in best or dmin < best[c][0]):
                best[c] = (dmin, t)
    dvec = None
    if direction is not None or toward is not None:
        cents = catalog.centroids(
            list(best) + tids.tolist() + ([toward] if toward is not None else [])
        )
        if toward is not None and int(toward) not in cents:
            raise EmsegValueError(f"`toward` must be an object id in the catalog; got {toward!r}.")
        if isinstance(direction, str):
            if direction not in DIRECTIONS:
                raise EmsegValueError(
                    f"`direction` must be one of {', '.join(DIRECTIONS)} or a z-y-x vector; got {direction!r}."
                )
            dvec = np.array(DIRECTIONS[direction])
        elif direction is not None:
            dvec = np.asarray(direction, np.float64)
        cos_max = np.cos(np.deg2rad(max_angle))
        keep: dict[int, tuple[float, int]] = {}
        for oid, (d, t) in best.items():
            ref = dvec if toward is None else cents[int(toward)] - cents[t]
            assert ref is not None
            v = cents[oid] - cents[t]
            nv, nr = np.linalg.norm(v), np.linalg.norm(ref)
            if nv > 0 and nr > 0 and float(v @ ref) / (nv * nr) >= cos_max:
                keep[oid] = (d, t)
        best = keep
    df = catalog.query(ids=list(best))
    df["distance_nm"] = [best[int(i)][0] for i in df["id"]]
    df["nearest_target"] = [best[int(i)][1] for i in df["id"]]
    kinds = {(True, True): "surface-surface", (False, False): "centroid-centroid"}
    df["distance_kind"] = [
        kinds.get((has[int(i)], has[best[int(i)][1]]), "centroid-surface") for i in df["id"]
    ]
    return pd.DataFrame(df.sort_values(["distance_nm", "id"]).reset_index(drop=True))


def contacts(catalog: Catalog, *, where: str = "", tolerance: float = 0.0) -> pd.DataFrame:
    """Pairs of objects whose surfaces come within `tolerance` nm (touching: about one voxel).

    Returns
    -------
    pandas.DataFrame
        Columns ``a``, ``b`` (object ids, a < b) and ``distance_nm``.
    """
    import pandas as pd

    ids = catalog.ids(where)
    idset = set(ids.tolist())
    boxes = catalog.boxes(ids.tolist())
    pairs = []
    for a in ids.tolist():
        found = catalog.box_candidates(boxes[a] + np.array([-1, 1] * 3) * tolerance)
        pairs += [(a, b) for b in found.tolist() if b > a and b in idset]
    clouds, _ = _clouds(
        catalog, np.unique(np.array([p for ab in pairs for p in ab] or [0], np.int64))
    )
    rows = []
    trees: dict[int, cKDTree] = {}
    for a, b in pairs:
        tree = trees.setdefault(a, cKDTree(clouds[a]))
        d = float(np.min(tree.query(clouds[b], k=1)[0]))
        if d <= tolerance:
            rows.append((a, b, d))
    return pd.DataFrame(rows, columns=["a", "b", "distance_nm"])
