"""``emseg info`` on an OME-Zarr written by emseg, and --help of every command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from emseg.cli import build_parser, main
from emseg.cli._main import COMMANDS
from emseg.io import write_image


@pytest.fixture
def zarr_path(tmp_path, rng):
    data = rng.integers(0, 255, (16, 128, 96), dtype=np.uint16)
    path = tmp_path / "img.ome.zarr"
    write_image(data, path, spacing=(50, 5, 5), chunks=(8, 32, 32))
    return path


def test_info_json(zarr_path, capsys):
    assert main(["info", str(zarr_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [16, 128, 96]
    assert info["dtype"] == "uint16"
    assert info["spacing"] == [50.0, 5.0, 5.0]
    assert info["spacing_known"] is True
    assert info["chunks"] == [8, 32, 32]
    assert info["format"] == "ome-zarr"
    assert info["axes"] == "zyx"
    assert info["n_levels"] == 3
    assert [lv["shape"] for lv in info["levels"]] == [[16, 128, 96], [16, 64, 48], [16, 32, 24]]
    assert [lv["spacing"] for lv in info["levels"]] == [
        [50.0, 5.0, 5.0],
        [50.0, 10.0, 10.0],
        [50.0, 20.0, 20.0],
    ]
    assert info["size_bytes"] == 16 * 128 * 96 * 2
    assert info["disk_bytes"] > 0


def test_info_text(zarr_path, capsys):
    assert main(["info", str(zarr_path)]) == 0
    out = capsys.readouterr().out
    assert "format    ome-zarr" in out
    assert "shape     (16, 128, 96)  axes zyx" in out
    assert "spacing   50 x 5 x 5 nm" in out
    assert "levels    3" in out
    assert "level 2: shape (16, 32, 24), spacing 50 x 20 x 20 nm" in out


def test_every_command_help_shows_defaults(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(COMMANDS) <= set(sub.choices)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert text.startswith(f"usage: emseg {name}")
        for action in sub.choices[name]._actions:
            if not action.option_strings or action.help in (None, argparse.SUPPRESS):
                continue
            if action.default in (None, argparse.SUPPRESS) or isinstance(
                action, argparse._HelpAction
            ):
                continue
            assert f"(default: {action.default})" in text, (name, action.dest)
