"""``emseg info PATH``: format, shape, dtype, chunks, spacing, pyramid levels, size on disk."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from emseg.cli._common import add_command, add_spacing


def register(sub: Any) -> None:
    p = add_command(sub, "info", help="describe an image file (any supported format)")
    p.add_argument("path", help="file or folder; HDF5 datasets as file.h5:/path/to/dataset")
    p.add_argument("--dataset", default=None, help="dataset inside a container (HDF5, Zarr, N5)")
    add_spacing(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def run(args: argparse.Namespace) -> int:
    from emseg.io import describe

    info = describe(args.path, spacing=args.spacing, dataset=args.dataset)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    spacing = " x ".join(f"{s:g}" for s in info["spacing"])
    known = "" if info["spacing_known"] else "  (not in the file: pass --spacing)"
    lines = [
        f"path      {info['path']}",
        f"format    {info['format']}",
        f"shape     {tuple(info['shape'])}  axes {info['axes']}",
        f"dtype     {info['dtype']}",
        f"chunks    {tuple(info['chunks'])}",
        f"spacing   {spacing} nm{known}",
    ]
    if info["channel_names"]:
        lines.append(f"channels  {', '.join(info['channel_names'])}")
    lines.append(f"levels    {info['n_levels']}")
    for lvl in info["levels"][1:]:
        sp = " x ".join(f"{s:g}" for s in lvl["spacing"])
        lines.append(f"  level {lvl['level']}: shape {tuple(lvl['shape'])}, spacing {sp} nm")
    lines.append(
        f"size      {_human(info['size_bytes'])} uncompressed, {_human(info['disk_bytes'])} on disk"
    )
    print("\n".join(lines))
    return 0
