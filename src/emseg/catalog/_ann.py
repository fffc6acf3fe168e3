"""Approximate nearest-neighbour index over the catalog's embeddings (faiss IVF-Flat).

Image-based queries (:func:`~emseg.catalog.like`) on a catalog of at least
:data:`ANN_MIN_OBJECTS` objects search this index instead of scanning every
stored descriptor; smaller catalogs (and ``exact=True``) keep the exact scan.

The index
    ``faiss.IndexIVFFlat``: the standardised descriptors (z-scored with the
    mean and standard deviation of the whole catalog, the same metric as the
    exact scan) are split into ``nlist = round(sqrt(N))`` k-means cells
    (trained on at most 64 vectors per cell, seed 0; ``nlist <= N / 39`` so
    every cell has enough training points), and each vector is stored whole
    (float32, no compression; about ``N * (4 * D + 8)`` bytes: 112 MB for
    10^6 objects of 26 numbers). A query scans the ``nprobe`` nearest cells.
``nprobe`` is calibrated at build time
    100 stored vectors (seed 0) are searched exactly (``faiss.knn``) and
    with ``nprobe`` = 1, 2, 3, 4, 6, 9, ... (x1.5) cells; the index keeps the smallest
    ``nprobe`` whose recall@10 (self excluded) reaches :data:`TARGET_RECALL`
    (0.97, so the recall on other queries stays above 0.95). Descriptors with
    few effective dimensions need few cells; 26 independent Gaussian numbers
    (the benchmark's worst case) needed 162 of 1000 at 10^6 objects (recall@10 0.975).
    With a ``where`` filter that keeps a fraction ``f`` of the objects
    (counted in SQL), ``nprobe / f`` cells are scanned (capped at ``nlist``,
    where the search is exact). For ``f >= 0.05`` the ``2 k / f + 10``
    nearest are fetched and filtered in SQL (only those ids are looked up);
    if fewer than ``k`` pass, or for smaller ``f``, only the kept ids are
    ranked (``faiss.IDSelectorBatch``). Both give the same answer.
Built lazily, invalidated by any change
    The first image query on a large catalog builds the index (one read of
    every descriptor, inside one read snapshot) and stores it: next to a
    SQLite catalog as ``<catalog file>.ann``, in a PostgreSQL catalog in the
    table ``emseg_ann`` (BYTEA parts of 64 MB). Every ``add_dataset`` bumps the
    catalog's ``objects_generation`` (in ``emseg_meta``, in the same
    transaction); the index records the generation and the largest object
    id it was built from and is rebuilt when either differs.
Never trusted blindly
    The stored bytes are ``MAGIC | header length | JSON header | HMAC |
    faiss payload`` (faiss's own serialisation, not a pickle). The HMAC-SHA256
    covers the header and the payload with a random key kept in the
    catalog's ``emseg_meta`` (``ann_key``): a file from another catalog, a
    truncated or edited file, or any stale index is ignored (logged) and
    rebuilt; the payload is handed to faiss only after the HMAC matches, and
    the deserialised index must be an ``IndexIVFFlat`` of the recorded size.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from emseg.errors import EmsegValueError

if TYPE_CHECKING:
    from emseg.catalog._catalog import Catalog

log = logging.getLogger(__name__)

#: Catalogs with at least this many objects answer image queries from the ANN index.
ANN_MIN_OBJECTS = 20_000
#: Recall@10 that the calibrated ``nprobe`` reaches on the calibration queries.
TARGET_RECALL = 0.97
#: Stored vectors used to calibrate ``nprobe``.
CALIBRATION_QUERIES = 100
#: First bytes of a stored index.
MAGIC = b"EMSEG-ANN-INDEX\n"
FORMAT_VERSION = 1
MAX_HEADER = 1 << 20
ADD_BATCH = 50_000


@dataclass(frozen=True)
class Fingerprint:
    """What an index was built from: the catalog's write generation and largest object id."""

    generation: int
    max_id: int


@dataclass(frozen=True)
class AnnIndexInfo:
    """Description of an ANN index (stored in its header).

    Attributes
    ----------
    kind : str
        faiss factory string, e.g. ``"IVF1000,Flat"``.
    n_vectors, dim : int
        Indexed descriptors and their length.
    nlist, nprobe : int
        k-means cells, and cells scanned per query.
    calibration_recall : float
        Recall@10 at `nprobe` on the calibration queries.
    build_seconds : float
        Time to read the descriptors, train, add and calibrate.
    generation, max_id : int
        The catalog state it was built from (see :class:`Fingerprint`).
    """

    kind: str
    n_vectors: int
    dim: int
    nlist: int
    nprobe: int
    calibration_recall: float
    build_seconds: float
    generation: int
    max_id: int


@dataclass(frozen=True)
class AnnHits:
    """Neighbours of one query: object ids (int64) and distances (float64, standard deviations)."""

    ids: np.ndarray
    distances: np.ndarray


class AnnIndex:
    """An IVF-Flat index with the standardisation it was built with.

    ``origin`` says whether this process ``"built"`` it or ``"loaded"`` it
    from storage.
    """

    def __init__(
        self,
        index: Any,
        mean: np.ndarray,
        std: np.ndarray,
        info: AnnIndexInfo,
        origin: Literal["built", "loaded"],
    ) -> None:
        self.index = index
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        self.info = info
        self.origin = origin

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.info.generation, self.info.max_id)

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        fraction: float | None = None,
    ) -> AnnHits:
        """The `k` nearest stored descriptors to raw descriptor `vector` ((D,) array).

        `allowed` (int64 ids) restricts the answer; fewer than `k` hits come
        back only when fewer objects are allowed. `fraction` (without
        `allowed`) scans the cells a filter keeping that fraction would scan
        (``nprobe / fraction``), for callers that filter the hits themselves.
        """
        import faiss

        vector = np.asarray(vector, np.float64).ravel()
        if vector.shape[0] != self.info.dim:
            raise EmsegValueError(
                f"`example` must have {self.info.dim} numbers (the catalog's descriptor length); "
                f"got {vector.shape[0]}."
            )
        q = ((vector - self.mean) / self.std).astype(np.float32)[None, :]
        nprobe = self.info.nprobe
        sel = None
        if fraction is not None and allowed is None:
            nprobe = math.ceil(nprobe / min(max(fraction, 1e-9), 1.0))
        if allowed is not None:
            allowed = np.unique(np.asarray(allowed, np.int64))
            if len(allowed) == 0:
                return AnnHits(np.zeros(0, np.int64), np.zeros(0))
            frac = len(allowed) / max(self.info.n_vectors, 1)
            nprobe = math.ceil(nprobe / min(frac, 1.0))
            sel = faiss.IDSelectorBatch(allowed)
        params = _ivf_params(min(nprobe, self.info.nlist))
        if sel is not None:
            params.sel = sel
        d2, ids = self.index.search(q, int(k), params=params)
        keep = ids[0] >= 0
        return AnnHits(
            ids[0][keep].astype(np.int64), np.sqrt(np.maximum(d2[0][keep], 0)).astype(np.float64)
        )


def _ivf_params(nprobe: int) -> Any:
    import faiss

    params = faiss.SearchParametersIVF()
    params.nprobe = int(nprobe)
    return params


def build_index(catalog: Catalog) -> AnnIndex:
    """Read every descriptor of `catalog` (one snapshot) and build a calibrated IVF-Flat index.

    Memory: the descriptors twice (the standardised matrix and the index,
    about ``2 * N * D * 4`` bytes) while building.

    Raises
    ------
    EmsegValueError
        When the catalog holds no descriptors, or descriptors of different lengths.
    """
    import faiss

    t0 = time.perf_counter()
    with catalog._snapshot():
        fp = catalog._fingerprint()
        upper = len(catalog)
        x: np.ndarray | None = None
        ids = np.empty(upper, np.int64)
        n = 0
        for bid, e in catalog.iter_embeddings():
            if x is None:
                x = np.empty((upper, e.shape[1]), np.float32)
            if e.shape[1] != x.shape[1] or n + len(e) > upper:
                raise EmsegValueError(
                    f"the catalog's descriptors differ in length ({x.shape[1]} and {e.shape[1]}); "
                    "an index needs one descriptor length: re-add the datasets with one descriptor."
                )
            x[n : n + len(e)] = e
            ids[n : n + len(e)] = bid
            n += len(e)
    if x is None or n == 0:
        raise EmsegValueError("the catalog holds no embeddings; add datasets with --image.")
    x = x[:n]
    ids = ids[:n]
    mean = x.mean(0, dtype=np.float64)
    std = np.sqrt(np.maximum((x.astype(np.float64) ** 2).mean(0) - mean**2, 0)) + 1e-9
    x -= mean.astype(np.float32)
    x /= std.astype(np.float32)
    dim = x.shape[1]
    nlist = max(1, min(round(math.sqrt(n)), n // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
    index.cp.seed = 0
    rng = np.random.default_rng(0)
    train = x[np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))]
    index.train(train)
    del train
    for s in range(0, n, ADD_BATCH):
        index.add_with_ids(x[s : s + ADD_BATCH], ids[s : s + ADD_BATCH])
    nprobe, recall = _calibrate(index, x, ids, nlist, rng)
    del x
    info = AnnIndexInfo(
        kind=f"IVF{nlist},Flat",
        n_vectors=n,
        dim=dim,
        nlist=nlist,
        nprobe=nprobe,
        calibration_recall=recall,
        build_seconds=time.perf_counter() - t0,
        generation=fp.generation,
        max_id=fp.max_id,
    )
    log.info(
        "catalog: built ANN index %s over %d descriptors in %.1f s (nprobe %d, recall@10 %.3f)",
        info.kind,
        n,
        info.build_seconds,
        nprobe,
        recall,
    )
    return AnnIndex(index, mean, std, info, "built")


def _calibrate(
    index: Any, x: np.ndarray, ids: np.ndarray, nlist: int, rng: np.random.Generator
) -> tuple[int, float]:
    """Smallest nprobe (1, 2, 3, 4, 6, 9, ... x1.5, nlist) with recall@10 >= TARGET_RECALL."""
    import faiss

    n = len(x)
    k = min(11, n)
    if k < 2:
        return nlist, 1.0
    qi = np.sort(rng.choice(n, min(CALIBRATION_QUERIES, n), replace=False))
    q = np.ascontiguousarray(x[qi])
    _, truth_pos = faiss.knn(q, x, k)
    truth = [set(ids[row].tolist()) - {int(ids[i])} for row, i in zip(truth_pos, qi, strict=True)]
    nprobe = 1
    while True:
        nprobe = min(nprobe, nlist)
        _, got = index.search(q, k, params=_ivf_params(nprobe))
        hits = sum(len(t & set(g.tolist())) for t, g in zip(truth, got, strict=True))
        recall = hits / max(sum(len(t) for t in truth), 1)
        if recall >= TARGET_RECALL or nprobe >= nlist:
            return nprobe, float(recall)
        nprobe = max(nprobe + 1, round(nprobe * 1.5))


def to_parts(ann: AnnIndex, key: bytes) -> Iterator[bytes | memoryview]:
    """The stored form of `ann`: header block, then the faiss payload (not a pickle)."""
    import faiss

    payload = faiss.serialize_index(ann.index).data
    header = json.dumps(
        {
            "format": FORMAT_VERSION,
            **asdict(ann.info),
            "mean": ann.mean.tolist(),
            "std": ann.std.tolist(),
        }
    ).encode()
    head = MAGIC + len(header).to_bytes(8, "little") + header
    mac = hmac.new(key, head, hashlib.sha256)
    mac.update(payload)
    yield head + mac.digest()
    yield payload


def from_bytes(blob: bytes, key: bytes, expected: Fingerprint) -> AnnIndex | None:
    """The index stored in `blob`, or ``None`` (logged) when it is foreign, damaged or stale."""
    import faiss

    view = memoryview(blob)
    start = len(MAGIC) + 8
    if len(view) < start or bytes(view[: len(MAGIC)]) != MAGIC:
        log.warning("catalog: the stored ANN index is not an emseg index; rebuilding it")
        return None
    n_head = int.from_bytes(view[len(MAGIC) : start], "little")
    if n_head > MAX_HEADER or len(view) < start + n_head + 32:
        log.warning("catalog: the stored ANN index is truncated; rebuilding it")
        return None
    mac = hmac.new(key, view[: start + n_head], hashlib.sha256)
    mac.update(view[start + n_head + 32 :])
    if not hmac.compare_digest(mac.digest(), bytes(view[start + n_head : start + n_head + 32])):
        log.warning(
            "catalog: the stored ANN index was not written for this catalog or was changed "
            "(HMAC mismatch); rebuilding it"
        )
        return None
    try:
        header = json.loads(bytes(view[start : start + n_head]))
        info = AnnIndexInfo(**{f: header[f] for f in AnnIndexInfo.__dataclass_fields__})
        mean = np.asarray(header["mean"], np.float64)
        std = np.asarray(header["std"], np.float64)
        version = header["format"]
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("catalog: unreadable ANN index header (%s); rebuilding it", exc)
        return None
    if version != FORMAT_VERSION:
        log.info("catalog: ANN index format %s, this emseg writes %s; rebuilding", version, 1)
        return None
    if Fingerprint(info.generation, info.max_id) != expected:
        log.info("catalog: the ANN index is stale (objects changed since it was built); rebuilding")
        return None
    payload = np.frombuffer(view[start + n_head + 32 :], np.uint8)
    index = faiss.deserialize_index(payload)  # already the concrete class
    if (
        not isinstance(index, faiss.IndexIVFFlat)
        or index.d != info.dim
        or index.ntotal != info.n_vectors
        or index.nlist != info.nlist
        or mean.shape != (info.dim,)
        or std.shape != (info.dim,)
    ):
        log.warning("catalog: the stored ANN index does not match its header; rebuilding it")
        return None
    return AnnIndex(index, mean, std, info, "loaded")
