"""``emseg segment --list`` shows how a deep preset predicts (``prediction.planes`` / ``tta``)."""

from __future__ import annotations

import pytest

from emseg.cli import main


def _write(folder, *, kind="deep", **prediction):
    from emseg.presets import write_preset

    model = "net" if kind == "deep" else "blob.safetensors"
    doc = {
        "name": folder.name,
        "description": f"{folder.name} (test)",
        "target": "blobs",
        "spacing": [10.0, 10.0, 10.0],
        "prediction": {"kind": kind, "model": model, "class": "blob", **prediction},
        "instances": {"method": "components", "components": {"threshold": 0.5}},
        "validation": {"dataset": "test"},
    }
    return write_preset(doc, folder)


@pytest.fixture
def presets(tmp_path, monkeypatch):
    """Four test presets (no model files needed to list them) as the shipped ones."""
    from emseg.presets import _preset

    _write(tmp_path / "a-plain")  # planes and tta left out: their defaults
    _write(tmp_path / "b-triplanar", planes=3, tta=True)
    _write(tmp_path / "c-flips", planes=1, tta=True)
    _write(tmp_path / "d-forest", kind="forest")
    monkeypatch.setattr(_preset, "presets_dir", lambda: tmp_path)


def _block(lines: list[str], name: str) -> list[str]:
    """The lines of preset `name` (its header up to the next header)."""
    start = next(i for i, x in enumerate(lines) if x.startswith(f"{name}: "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), None)
    return lines[start:end]


def test_list_shows_planes_and_tta(presets, capsys):
    assert main(["segment", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    predicts = {
        name: [x for x in _block(lines, name) if x.startswith("  predicts ")]
        for name in ("a-plain", "b-triplanar", "c-flips", "d-forest")
    }
    assert predicts == {
        "a-plain": ["  predicts    planes 1 (as trained), tta off"],
        "b-triplanar": [
            "  predicts    planes 3 (xy, zx and zy planes, averaged), tta on (test-time flips)"
        ],
        "c-flips": ["  predicts    planes 1 (as trained), tta on (test-time flips)"],
        "d-forest": [],  # a forest has neither option
    }
    # after the model line, before the instances line
    block = _block(lines, "b-triplanar")
    assert [x.split()[0] for x in block[1:]] == [
        "segments",
        "model",
        "predicts",
        "instances",
        "validation",
    ]


def test_shipped_presets_list_their_own_settings():
    """Each shipped deep preset's line says what its preset.json says."""
    from emseg.cli._segment import list_lines
    from emseg.presets import list_presets

    lines = list_lines()
    deep = [p for p in list_presets() if p.kind == "deep"]
    if not deep:
        pytest.skip("no deep preset shipped")
    for p in deep:
        block = _block(lines, p.name)
        if p.is_ensemble:  # one "member i" line per member, in order
            got = [x for x in block if x.startswith("  member ")]
        else:
            got = [x for x in block if x.startswith("  predicts ")]
        assert len(got) == len(p.members)
        for line, m in zip(got, p.members, strict=True):
            assert f"planes {m['planes']} " in line
            assert line.endswith("tta on (test-time flips)") == bool(m["tta"])
            if p.is_ensemble:
                assert f" {m['model']}: " in line
