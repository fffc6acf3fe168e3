"""CLI: emseg measure / catalog add / query on a small synthetic volume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emseg.cli._main import main
from emseg.io import write_image


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from emseg.data import synthetic_em

    d = tmp_path_factory.mktemp("cli")
    em = synthetic_em((8, 96, 96), seed=1)
    write_image(em.image, d / "img.ome.zarr", spacing=em.spacing)
    write_image(em.cells, d / "mito.ome.zarr", spacing=em.spacing, labels=True)
    write_image(em.image[:, :50], d / "small.ome.zarr", spacing=em.spacing)
    return d, em


def test_measure_catalog_query(files, capsys):
    d, em = files
    assert (
        main(
            [
                "measure",
                str(d / "mito.ome.zarr"),
                str(d / "m.csv"),
                "--image",
                str(d / "img.ome.zarr"),
            ]
        )
        == 0
    )
    n = len(np.unique(em.cells))
    assert n > 3
    assert f"{n} objects" in capsys.readouterr().out
    cat = str(d / "c.sqlite")
    assert (
        main(
            [
                "catalog",
                "add",
                cat,
                "--image",
                str(d / "img.ome.zarr"),
                "--labels",
                str(d / "mito.ome.zarr"),
                "--name",
                "x'y",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(["query", cat, "volume_nm3 > 0", "--format", "json", "--sort", "volume_nm3", "--desc"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == n
    assert rows[0]["volume_nm3"] >= rows[-1]["volume_nm3"]
    assert main(["query", cat, "--like", str(rows[0]["id"]), "--top", "2"]) == 0
    assert "2 objects" in capsys.readouterr().out
    assert main(["query", cat, "--near", str(rows[0]["id"]), "--within", "5000"]) == 0
    assert "distance_nm" in capsys.readouterr().out


def test_errors_are_one_line(files, capsys):
    d, _ = files
    bad = d / "notacatalog.sqlite"
    bad.write_text("x" * 2000)
    assert main(["query", str(bad), "volume_nm3 > 1"]) == 2
    assert "not an emseg catalog" in capsys.readouterr().err
    assert (
        main(
            [
                "catalog",
                "add",
                str(d / "c2.sqlite"),
                "--image",
                str(d / "small.ome.zarr"),
                "--labels",
                str(d / "mito.ome.zarr"),
            ]
        )
        == 2
    )
    assert "same shape" in capsys.readouterr().err
    cat = str(d / "c3.sqlite")
    main(
        [
            "catalog",
            "add",
            cat,
            "--image",
            str(d / "img.ome.zarr"),
            "--labels",
            str(d / "mito.ome.zarr"),
        ]
    )
    assert main(["query", cat, "class = x; DROP TABLE objects"]) == 2
    assert "query" in capsys.readouterr().err
