"""``describe``: what is in a file (format, geometry, pyramid, size on disk)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from emseg._checks import SpacingLike
from emseg.errors import SpacingWarning
from emseg.io._open import PathLike, open_image, split_dataset_path


def disk_size(path: PathLike) -> int:
    """Bytes used by a file or by every file below a folder."""
    p = Path(split_dataset_path(path)[0])
    if p.is_file():
        return p.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(p):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                continue
    return total


def describe(
    path: PathLike, *, spacing: SpacingLike = None, dataset: str | None = None
) -> dict[str, Any]:
    """Return a JSON-ready description of an image file.

    Keys: ``path``, ``format``, ``shape``, ``dtype``, ``chunks``, ``axes``,
    ``spacing`` (nm, z-y-x), ``spacing_known``, ``unit``, ``channel_names``,
    ``levels`` (one entry per pyramid level with its ``shape``, ``spacing``
    and ``chunks``), ``n_levels``, ``size_bytes`` (uncompressed) and
    ``disk_bytes``.
    """
    img = open_image(path, spacing=spacing, dataset=dataset)
    levels: list[dict[str, Any]] = []
    for lvl in range(img.levels):
        if lvl == 0:
            li = img
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpacingWarning)
                li = open_image(path, level=lvl, dataset=dataset)
        levels.append(
            {
                "level": lvl,
                "shape": list(li.shape),
                "spacing": list(li.spacing),
                "chunks": list(li.chunks),
            }
        )
    return {
        "path": img.source,
        "format": img.format,
        "shape": list(img.shape),
        "dtype": str(img.dtype),
        "chunks": list(img.chunks),
        "axes": img.axes,
        "spacing": list(img.spacing),
        "spacing_known": img.spacing_known,
        "unit": img.unit,
        "channel_names": list(img.channel_names) if img.channel_names else None,
        "levels": levels,
        "n_levels": img.levels,
        "size_bytes": img.nbytes,
        "disk_bytes": disk_size(path),
    }
