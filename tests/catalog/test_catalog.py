"""Catalog: round trip, label / proximity / image queries vs brute force, injection, concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from emseg.catalog import (
    PostgresCatalog,
    SQLiteCatalog,
    contacts,
    describe_objects,
    like,
    near,
    open_catalog,
    parse_query,
)
from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError

BACKENDS = ("sqlite", "postgresql")
CLASSES = ("mitochondrion", "vesicle", "nucleus", 'it\'s "odd"')


def random_objects(rng, n, *, extent=20000.0, name_offset=0):
    """A morphometry-like table with n random objects, each with a small point cloud."""
    c = rng.uniform(0, extent, size=(n, 3))
    r = rng.uniform(20, 300, size=n)
    pts = {}
    for i in range(n):
        u = rng.normal(size=(40, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        pts[i + 1 + name_offset] = (c[i] + r[i] * u).astype(np.float32)
    table = pd.DataFrame({"label": np.arange(1, n + 1) + name_offset})
    table["class"] = rng.choice(CLASSES, size=n)
    table["volume_nm3"] = 4 / 3 * np.pi * r**3
    table["elongation"] = rng.uniform(1, 6, size=n)
    table["touches_border"] = rng.random(n) < 0.2
    for k, a in enumerate("zyx"):
        table[f"centroid_{a}_nm"] = c[:, k]
        lo = np.array([p[:, k].min() for p in pts.values()])
        hi = np.array([p[:, k].max() for p in pts.values()])
        table[f"bbox_{a}min_nm"] = lo
        table[f"bbox_{a}max_nm"] = hi
    return table, pts


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request, new_location):
    """One catalog per backend with 3000 random objects (same content on both)."""
    rng = np.random.default_rng(7)
    table, pts = random_objects(rng, 3000)
    emb = rng.normal(size=(3000, 6)).astype(np.float32)
    cat = open_catalog(new_location(request.param))
    cat.add_dataset(
        "ds'; DROP TABLE objects; --",
        table,
        points=pts,
        embeddings=emb,
        spacing=(40, 4, 4),
        shape=(10, 10, 10),
    )
    yield cat, table, pts, emb
    cat.close()


def test_round_trip(filled):
    cat, table, _, _ = filled
    got = cat.query()
    assert len(got) == len(table) == len(cat)
    np.testing.assert_allclose(got["volume_nm3"], table["volume_nm3"])
    assert list(got["class"]) == list(table["class"])
    assert cat.datasets()["name"].tolist() == ["ds'; DROP TABLE objects; --"]
    assert cat.datasets()["spacing"][0] == [40.0, 4.0, 4.0]
    np.testing.assert_array_equal(cat.points([5])[5], filled[2][5])


@pytest.mark.parametrize(
    ("expr", "mask"),
    [
        (
            "class = mitochondrion AND volume_nm3 > 1e7 AND elongation > 3",
            lambda t: (t["class"] == "mitochondrion") & (t.volume_nm3 > 1e7) & (t.elongation > 3),
        ),
        (
            "(class = 'vesicle' OR class = \"nucleus\") AND NOT touches_border = true",
            lambda t: t["class"].isin(["vesicle", "nucleus"]) & ~t.touches_border,
        ),
        ("class = 'it''s \"odd\"'", lambda t: t["class"] == CLASSES[3]),
        (
            "elongation <= 2 OR volume_nm3 >= 5e7",
            lambda t: (t.elongation <= 2) | (t.volume_nm3 >= 5e7),
        ),
        ("class != mitochondrion", lambda t: t["class"] != "mitochondrion"),
    ],
)
def test_label_queries_match_brute_force(filled, expr, mask):
    cat, table, _, _ = filled
    got = cat.query(expr)
    assert sorted(got["label"]) == sorted(table.loc[mask(table), "label"])


def test_sort_and_limit(filled):
    cat, table, _, _ = filled
    got = cat.query("class = vesicle", sort="volume_nm3", descending=True, limit=5)
    ref = table[table["class"] == "vesicle"].sort_values("volume_nm3", ascending=False)[:5]
    assert list(got["label"]) == list(ref["label"])


@pytest.mark.parametrize(
    "hostile",
    [
        "class = x; DROP TABLE objects",
        "volume_nm3 > 1 OR 1=1",
        "objects.id > 0",
        "class = 'x' UNION SELECT * FROM datasets",
        "sqlite_master = 1",
        "class = 'unterminated",
        "volume_nm3 > 'abc'",
        "(volume_nm3 > 1",
    ],
)
def test_injection_is_rejected(filled, hostile):
    cat, table, _, _ = filled
    with pytest.raises(EmsegValueError):
        cat.query(hostile)
    assert len(cat) == len(table)


def test_hostile_strings_are_data(filled):
    cat, _, _, _ = filled
    assert len(cat.query('class = "\'; DROP TABLE objects; --"')) == 0
    assert len(cat.query('dataset = "ds\'; DROP TABLE objects; --"')) == 3000
    with pytest.raises(EmsegValueError, match="sort"):
        cat.query(sort="volume_nm3; DROP TABLE objects")
    assert parse_query("") is None


def _stack(pts, ids):
    """All points of `ids` and the owner id of each (for an all-points KD-tree)."""
    allp = np.concatenate([pts[i] for i in ids])
    owner = np.repeat(np.asarray(ids), [len(pts[i]) for i in ids])
    return allp, owner


def _brute_distances(pts, t):
    from scipy.spatial.distance import cdist

    return {k: float(cdist(pts[t], v).min()) for k, v in pts.items() if k != t}


def test_near_object_matches_brute_force(filled):
    cat, _table, pts, _ = filled
    for t in (1, 17, 999):
        got = near(cat, t, within=600.0)
        ref = {k: d for k, d in _brute_distances(pts, t).items() if d <= 600.0}
        assert sorted(got["label"]) == sorted(ref)
        np.testing.assert_allclose(
            got.set_index("label")["distance_nm"].sort_index(),
            [ref[k] for k in sorted(ref)],
            rtol=1e-5,
        )
        assert set(got["distance_kind"]) <= {"surface-surface"}


def test_near_class_and_direction(filled):
    cat, table, pts, _ = filled
    got = near(cat, "nucleus", within=300.0, where="class = mitochondrion", direction="above")
    nuclei = table.loc[table["class"] == "nucleus", "label"].tolist()
    cent = table.set_index("label")[["centroid_z_nm", "centroid_y_nm", "centroid_x_nm"]]
    ref = set()
    allp, owner = _stack(pts, nuclei)
    tree = cKDTree(allp)
    for k in table.loc[table["class"] == "mitochondrion", "label"]:
        dd, jj = tree.query(pts[k], k=1)
        t = int(owner[jj[np.argmin(dd)]])
        ds = {t: dd.min()}
        if ds[t] <= 300.0:
            v = cent.loc[k].to_numpy() - cent.loc[t].to_numpy()
            if -v[0] / np.linalg.norm(v) >= np.cos(np.deg2rad(45)):
                ref.add(k)
    assert set(got["label"]) == ref
    assert len(ref) > 0


def test_contacts_match_brute_force(filled):
    cat, _table, pts, _ = filled
    where = "volume_nm3 > 5e7"
    got = contacts(cat, where=where, tolerance=50.0)
    ids = cat.ids(where).tolist()
    allp, owner = _stack(pts, ids)
    close = cKDTree(allp).query_pairs(50.0, output_type="ndarray")
    a, b = owner[close[:, 0]], owner[close[:, 1]]
    keep = a != b
    ref = {(int(min(x, y)), int(max(x, y))) for x, y in zip(a[keep], b[keep], strict=True)}
    assert set(zip(got["a"], got["b"], strict=True)) == ref


def test_like_matches_brute_force(filled):
    cat, _, _, emb = filled
    got = like(cat, 10, top=7)
    z = (emb - emb.mean(0)) / (emb.std(0) + 1e-9)
    d = np.linalg.norm(z - z[9], axis=1)
    d[9] = np.inf
    assert list(got["id"]) == list(np.argsort(d, kind="stable")[:7] + 1)
    np.testing.assert_allclose(got["distance"], np.sort(d)[:7], rtol=1e-4)
    sub = like(cat, 10, top=3, where="class = vesicle")
    assert set(sub["class"]) == {"vesicle"}


def test_not_a_catalog(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("hello, this is not a database at all" * 100)
    with pytest.raises(FormatError, match="not an emseg catalog"):
        open_catalog(bad)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    with pytest.raises(FormatError, match="not an emseg catalog"):
        open_catalog(other)
    with pytest.raises(DatasetNotFoundError):
        open_catalog(tmp_path / "missing.sqlite", create=False)


def test_not_a_catalog_postgres(new_location):
    import psycopg

    url = new_location("postgresql")
    with pytest.raises(FormatError, match="holds no emseg catalog"):
        open_catalog(url, create=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE objects (a integer)")
    with pytest.raises(FormatError, match="not an emseg catalog"):
        open_catalog(url)
    url2 = new_location("postgresql")
    with psycopg.connect(url2, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (a text)")
    with pytest.raises(FormatError, match="not an emseg catalog"):
        open_catalog(url2)
    url3 = new_location("postgresql")
    with psycopg.connect(url3, autocommit=True) as conn:
        conn.execute("CREATE TABLE emseg_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO emseg_meta VALUES ('schema_version', '999')")
    with pytest.raises(FormatError, match="schema"):
        open_catalog(url3)
    bad_url = url.rsplit(":", 1)[0] + ":1/postgres"  # nothing listens on port 1
    with pytest.raises(DatasetNotFoundError, match="cannot connect"):
        open_catalog(bad_url)


def test_open_catalog_picks_backend(backend, new_location):
    with open_catalog(new_location(backend)) as cat:
        kind = PostgresCatalog if backend == "postgresql" else SQLiteCatalog
        assert isinstance(cat, kind)
        assert len(cat) == 0
        assert cat.query().empty


def test_duplicate_dataset_and_rollback(backend, new_location, rng):
    table, pts = random_objects(rng, 20)
    loc = new_location(backend)
    with open_catalog(loc) as cat:
        cat.add_dataset("a", table, points=pts)
        with pytest.raises(EmsegValueError, match="already"):
            cat.add_dataset("a", table)
        with pytest.raises(EmsegValueError, match="embeddings"):
            cat.add_dataset("b", table, embeddings=np.zeros((3, 2)))
        bad = table.copy()  # fails inside the transaction, after the dataset row
        bad["bbox_zmin_nm"] = bad["bbox_zmin_nm"].astype(object)
        bad.loc[7, "bbox_zmin_nm"] = "not a number"
        with pytest.raises(ValueError):
            cat.add_dataset("c", bad)
        assert len(cat) == 20
        assert cat.datasets()["name"].tolist() == ["a"]
        # still writable after the rolled-back attempts
        cat.add_dataset("d", table)
        assert len(cat) == 40
        assert cat.ids().tolist() == list(range(1, 41))
    with open_catalog(loc, create=False) as cat:
        assert len(cat) == 40


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd
    sys.path.insert(0, {tests!r})
    from test_catalog import random_objects
    from emseg.catalog import open_catalog
    who = sys.argv[1]
    rng = np.random.default_rng(int(who == 'b'))
    for i in range(4):
        t, p = random_objects(rng, 250)
        with open_catalog(sys.argv[2], ) as cat:
            cat.add_dataset(f"{{who}}{{i}}", t, points=p)
    """
)


def test_concurrent_writers(backend, new_location):
    import pathlib

    loc = new_location(backend)
    open_catalog(loc).close()
    code = WRITER.format(tests=str(pathlib.Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, "-c", code, who, str(loc)]) for who in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with open_catalog(loc) as cat:
        assert sorted(cat.datasets()["name"]) == sorted(f"{w}{i}" for w in "ab" for i in range(4))
        assert len(cat) == 8 * 250
        ids = cat.ids().tolist()
        assert ids == list(range(1, 2001))
        # every dataset's objects are one contiguous block of ids (one transaction each)
        for did in cat.datasets()["id"]:
            got = cat.ids(f"dataset_id = {did}")
            assert len(got) == 250
            assert got[-1] - got[0] == 249
        if backend == "sqlite":
            assert cat.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            n_rtree = cat.conn.execute("SELECT COUNT(*) FROM objects_rtree").fetchone()[0]
            assert n_rtree == 2000
        # the spatial index answers like a scan of all boxes
        box = np.array([0, 10000, 0, 10000, 0, 10000.0])
        everything = cat.boxes(ids)
        ref = [
            i
            for i, b in everything.items()
            if all(b[2 * k + 1] >= box[2 * k] and b[2 * k] <= box[2 * k + 1] for k in range(3))
        ]
        assert cat.box_candidates(box).tolist() == sorted(ref)


@pytest.fixture(scope="module")
def measured():
    from emseg.data import synthetic_em
    from emseg.morphometry import measure

    em = synthetic_em((8, 96, 96), seed=3)
    m = measure(em.cells, image=em.image, spacing=em.spacing)
    emb = describe_objects(em.image, em.cells, m.table, spacing=em.spacing)
    return m, emb


def test_measured_volume_end_to_end(backend, new_location, measured):
    m, emb = measured
    assert len(m.table) > 3
    assert emb.shape == (len(m.table), 26)
    assert np.isfinite(emb).all()
    with open_catalog(new_location(backend)) as cat:
        cat.add_dataset("syn", m.table, points=m.points, embeddings=emb)
        got = cat.query("volume_nm3 > 0", sort="volume_nm3", descending=True)
        assert list(got["label"]) == list(
            m.table.sort_values("volume_nm3", ascending=False)["label"]
        )
