"""The ANN path of image queries: recall against brute force, filters, stale / foreign indexes."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from emseg.catalog import ANN_MIN_OBJECTS, like, open_catalog
from emseg.catalog._ann import TARGET_RECALL

BACKENDS = ("sqlite", "postgresql")
N = 4000
DIM = 16


def objects(rng, n, *, first_label=1):
    """A small morphometry-like table (classes, volumes, boxes) without surface points."""
    c = rng.uniform(0, 20000.0, size=(n, 3))
    r = rng.uniform(20, 300, size=n)
    table = pd.DataFrame({"label": np.arange(first_label, first_label + n)})
    table["class"] = rng.choice(["mitochondrion", "vesicle", "er"], size=n)
    table["volume_nm3"] = 4 / 3 * np.pi * r**3
    for k, a in enumerate("zyx"):
        table[f"centroid_{a}_nm"] = c[:, k]
        table[f"bbox_{a}min_nm"] = c[:, k] - r
        table[f"bbox_{a}max_nm"] = c[:, k] + r
    return table


def brute(emb, query, *, exclude=None, allowed=None, k=10):
    """Exact top-k (ids 1-based, distances) on descriptors z-scored over the whole catalog."""
    mu = emb.astype(np.float64).mean(0)
    sd = emb.astype(np.float64).std(0) + 1e-9
    d = np.linalg.norm((emb - mu) / sd - (np.asarray(query, np.float64) - mu) / sd, axis=1)
    if exclude is not None:
        d[exclude - 1] = np.inf
    if allowed is not None:
        mask = np.ones(len(d), bool)
        mask[np.asarray(allowed) - 1] = False
        d[mask] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    order = order[np.isfinite(d[order])]
    return order + 1, d[order]


@pytest.fixture(scope="module", params=BACKENDS)
def ann_cat(request, new_location):
    """4000 objects with 16 independent Gaussian numbers each (hard for any ANN index)."""
    rng = np.random.default_rng(11)
    table = objects(rng, N)
    emb = rng.normal(size=(N, DIM)).astype(np.float32)
    cat = open_catalog(new_location(request.param))
    cat.add_dataset("random", table, embeddings=emb)
    cat.ann_min_objects = 1000  # lowered, so that the ANN path runs on a small catalog
    yield cat, table, emb
    cat.close()


def test_default_threshold_keeps_small_catalogs_exact(ann_cat):
    cat, _, emb = ann_cat
    assert ANN_MIN_OBJECTS == 20_000
    saved = cat.ann_min_objects
    cat.ann_min_objects = ANN_MIN_OBJECTS
    try:
        got = like(cat, 3, top=5)
    finally:
        cat.ann_min_objects = saved
    assert got.attrs["search"] == "exact"
    ref_ids, ref_d = brute(emb, emb[2], exclude=3, k=5)
    assert list(got["id"]) == list(ref_ids)
    np.testing.assert_allclose(got["distance"], ref_d, rtol=1e-4)


def test_ann_recall_against_brute_force(ann_cat):
    cat, _, emb = ann_cat
    info = cat.ann_index().info
    assert info.n_vectors == N
    assert info.dim == DIM
    assert info.kind == f"IVF{info.nlist},Flat"
    assert 1 <= info.nprobe <= info.nlist
    assert info.calibration_recall >= TARGET_RECALL
    queries = np.random.default_rng(5).choice(N, 40, replace=False) + 1
    hits = total = 0
    for q in queries:
        got = like(cat, int(q), top=10)
        assert got.attrs["search"] == "ann"
        assert len(got) == 10
        assert int(q) not in set(got["id"])
        ref_ids, ref_d = brute(emb, emb[q - 1], exclude=int(q))
        hits += len(set(got["id"]) & set(ref_ids))
        total += 10
        # the distances are the exact metric for the ids returned, nearest first
        full = dict(zip(*brute(emb, emb[q - 1], k=N), strict=True))
        np.testing.assert_allclose(got["distance"], [full[i] for i in got["id"]], rtol=1e-4)
        assert np.all(np.diff(got["distance"]) >= 0)
        assert got["distance"].iloc[0] >= ref_d[0] - 1e-4
    assert hits / total >= 0.95
    # exact=True on the same catalog scans and returns the brute-force answer
    exact = like(cat, int(queries[0]), top=10, exact=True)
    assert exact.attrs["search"] == "exact"
    ref_ids, _ = brute(emb, emb[queries[0] - 1], exclude=int(queries[0]))
    assert list(exact["id"]) == list(ref_ids)


def test_ann_with_a_vector_example(ann_cat):
    cat, _, emb = ann_cat
    vec = emb[99] + 0.01
    got = like(cat, vec, top=3)
    assert got.attrs["search"] == "ann"
    assert got["id"].iloc[0] == 100  # the object itself is the nearest to a nudged copy
    with pytest.raises(ValueError, match="16 numbers"):
        like(cat, np.zeros(5), top=3)


def test_ann_with_where_filters(ann_cat):
    cat, table, emb = ann_cat
    vesicles = table.index[table["class"] == "vesicle"].to_numpy() + 1
    hits = 0
    for q in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10):
        got = like(cat, q, top=10, where="class = vesicle")
        assert got.attrs["search"] == "ann"
        assert set(got["class"]) == {"vesicle"}
        assert len(got) == 10
        ref_ids, _ = brute(emb, emb[q - 1], exclude=q, allowed=vesicles)
        hits += len(set(got["id"]) & set(ref_ids))
    assert hits / 100 >= 0.95
    assert cat.count("class = vesicle") == len(vesicles)
    # over-fetching and filtering in SQL gives the answer of a search restricted to the ids
    ann = cat.ann_index()
    for q in (11, 12, 13):
        got = like(cat, q, top=10, where="class = vesicle")
        ref = ann.search(emb[q - 1], 11, allowed=vesicles)
        assert list(got["id"]) == [i for i in ref.ids.tolist() if i != q][:10]
    # a selective filter (about 40 objects) scans every cell: exactly the brute-force answer
    cut = float(np.sort(table["volume_nm3"])[-40])
    few = table.index[table["volume_nm3"] >= cut].to_numpy() + 1
    got = like(cat, 1, top=10, where=f"volume_nm3 >= {cut!r}")
    ref_ids, ref_d = brute(emb, emb[0], exclude=1, allowed=few)
    assert list(got["id"]) == list(ref_ids)
    np.testing.assert_allclose(got["distance"], ref_d, rtol=1e-4)
    assert like(cat, 1, top=10, where="volume_nm3 < 0").empty


def _small(rng, n=1500, first_label=1):
    return objects(rng, n, first_label=first_label), rng.normal(size=(n, 8)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_is_stored_reused_and_rebuilt_when_objects_change(backend, new_location, rng):
    loc = new_location(backend)
    t1, e1 = _small(rng)
    with open_catalog(loc) as cat:
        cat.add_dataset("one", t1, embeddings=e1)
        cat.ann_min_objects = 1000
        first = cat.ann_index()
        assert first.origin == "built"
        assert cat.ann_index() is first  # held in memory while nothing changes
        gen = first.info.generation
    with open_catalog(loc) as cat:  # another process: reads the stored index
        cat.ann_min_objects = 1000
        again = cat.ann_index()
        assert again.origin == "loaded"
        assert again.info == first.info
        t2, e2 = _small(rng, 700, first_label=1501)
        cat.add_dataset("two", t2, embeddings=e2)
        fresh = cat.ann_index()  # stale: generation and max id moved on
        assert fresh.origin == "built"
        assert fresh.info.generation == gen + 1
        assert fresh.info.n_vectors == 2200
        assert fresh.info.max_id == 2200
        got = like(cat, e2[10], top=1)  # a new object is found by its own descriptor
        assert got.attrs["search"] == "ann"
        assert int(got["id"].iloc[0]) == 1500 + 11
        assert got["distance"].iloc[0] == pytest.approx(0.0, abs=1e-3)
    with open_catalog(loc) as cat:
        assert cat.ann_index().origin == "loaded"


def _two_sqlite_catalogs(tmp_path, rng):
    """Two catalogs of the same size and history (same fingerprint), different descriptors."""
    paths = []
    for name in ("a", "b"):
        t, e = _small(rng)
        path = tmp_path / f"{name}.sqlite"
        with open_catalog(path) as cat:
            cat.add_dataset("only", t, embeddings=e)
            cat.ann_index()
        paths.append(path)
    return paths


def _rebuilt(path, caplog, message):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emseg.catalog"), open_catalog(path) as cat:
        ann = cat.ann_index()
        assert ann.origin == "built"
        assert ann.info.n_vectors == 1500
    assert message in caplog.text
    with open_catalog(path) as cat:  # the rebuilt index was stored and is valid
        assert cat.ann_index().origin == "loaded"


def test_foreign_or_damaged_index_file_is_rebuilt(tmp_path, rng, caplog):
    a, b = _two_sqlite_catalogs(tmp_path, rng)
    a_ann, b_ann = (p.with_name(p.name + ".ann") for p in (a, b))
    assert b_ann.exists()
    assert a_ann.exists()
    with open_catalog(b) as cat:
        own = cat.ann_index()
        assert own.origin == "loaded"
    # another catalog's index, with the same generation and max id
    b_ann.write_bytes(a_ann.read_bytes())
    _rebuilt(b, caplog, "HMAC")
    # one flipped byte in the faiss payload
    data = bytearray(b_ann.read_bytes())
    data[-100] ^= 0xFF
    b_ann.write_bytes(bytes(data))
    _rebuilt(b, caplog, "HMAC")
    # truncated
    b_ann.write_bytes(b_ann.read_bytes()[:200])
    _rebuilt(b, caplog, "truncated")
    b_ann.write_bytes(b_ann.read_bytes()[:-1000])
    _rebuilt(b, caplog, "HMAC")
    # not an index at all (e.g. a pickle put there)
    import pickle

    b_ann.write_bytes(pickle.dumps({"index": "evil"}))
    _rebuilt(b, caplog, "not an emseg index")
    # the index was rebuilt from b's own descriptors: a query gives b's answer
    with open_catalog(b) as cat:
        cat.ann_min_objects = 1000
        e = cat.embeddings([7])[7]
        got = like(cat, e, top=1)
        assert got.attrs["search"] == "ann"
        assert int(got["id"].iloc[0]) == 7


def test_tampered_postgres_index_is_rebuilt(new_location, rng, caplog):
    import psycopg

    loc = new_location("postgresql")
    t, e = _small(rng)
    with open_catalog(loc) as cat:
        cat.add_dataset("only", t, embeddings=e)
        cat.ann_index()
    with psycopg.connect(loc, autocommit=True) as conn:
        n_parts = conn.execute("SELECT COUNT(*) FROM emseg_ann").fetchone()[0]
        assert n_parts >= 2  # header block, then the payload
        conn.execute(
            "UPDATE emseg_ann SET data = overlay(data placing '\\xdeadbeef'::bytea from 50) "
            "WHERE part = (SELECT MAX(part) FROM emseg_ann)"
        )
    _rebuilt(loc, caplog, "HMAC")


def test_cli_index_and_exact_like(tmp_path, rng, capsys):
    import json

    from emseg.cli._main import main

    t, e = _small(rng)
    path = tmp_path / "cli.sqlite"
    with open_catalog(path) as cat:
        cat.add_dataset("only", t, embeddings=e)
    assert main(["catalog", "index", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ANN index IVF38,Flat (built): 1500 descriptors of 8" in out
    assert "scan exactly" in out  # 1500 objects: below the default threshold
    assert main(["catalog", "index", str(path)]) == 0
    assert "(loaded)" in capsys.readouterr().out
    assert (
        main(["query", str(path), "--like", "5", "--top", "3", "--exact", "--format", "json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    ref_ids, _ = brute(e, e[4], exclude=5, k=3)
    assert [r["id"] for r in rows] == list(ref_ids)


def test_read_only_catalog_builds_in_memory(tmp_path, rng, caplog):
    t, e = _small(rng)
    path = tmp_path / "ro.sqlite"
    with open_catalog(path) as cat:
        cat.add_dataset("only", t, embeddings=e)
    with open_catalog(path) as cat:
        cat.conn.execute("PRAGMA query_only = ON")  # every write now fails
        cat.ann_min_objects = 1000
        with caplog.at_level(logging.WARNING, logger="emseg.catalog"):
            got = like(cat, e[20], top=1)
        assert got.attrs["search"] == "ann"
        assert int(got["id"].iloc[0]) == 21
        assert "read-only" in caplog.text
        assert cat.ann_index().origin == "built"
    assert not path.with_name(path.name + ".ann").exists()


def test_filter_far_from_the_query_falls_back_to_restricted_search(tmp_path, rng, monkeypatch):
    from emseg.catalog._ann import AnnIndex

    calls = []
    search = AnnIndex.search

    def spy(self, vector, k, *, allowed=None, fraction=None):
        calls.append("restricted" if allowed is not None else "over-fetch")
        return search(self, vector, k, allowed=allowed, fraction=fraction)

    monkeypatch.setattr(AnnIndex, "search", spy)
    t, e = _small(rng, 3000)
    big = t["volume_nm3"].to_numpy() >= np.quantile(t["volume_nm3"], 0.9)  # 10 % of the objects
    e[big, 0] += 25.0  # the filtered objects are far from every small one
    with open_catalog(tmp_path / "far.sqlite") as cat:
        cat.add_dataset("only", t, embeddings=e)
        cat.ann_min_objects = 1000
        q = int(np.flatnonzero(~big)[0]) + 1
        cut = float(np.quantile(t["volume_nm3"], 0.9))
        got = like(cat, q, top=10, where=f"volume_nm3 >= {cut!r}")
        assert got.attrs["search"] == "ann"
        assert len(got) == 10
        assert (got["volume_nm3"] >= cut).all()
        ref_ids, _ = brute(e, e[q - 1], exclude=q, allowed=np.flatnonzero(big) + 1)
        assert len(set(got["id"]) & set(ref_ids)) >= 9
        assert calls == ["over-fetch", "restricted"]  # too few passed the filter: fell back
        calls.clear()
        like(cat, q, top=10, where=f"volume_nm3 < {cut!r}")  # near ones pass: no fallback
        assert calls == ["over-fetch"]
