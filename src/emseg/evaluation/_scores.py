"""Per-object confidence scores from a file (for COCO / MitoEM average precision)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from emseg.errors import EmsegValueError

__all__ = ["read_scores"]


def _entry(label: object, score: object, where: str) -> tuple[int, float]:
    try:
        lab = int(str(label).strip())
        val = float(str(score).strip())
    except ValueError:
        raise EmsegValueError(
            f"{where}: expected an integer label and a number; got {label!r}, {score!r}."
        ) from None
    if lab <= 0:
        raise EmsegValueError(f"{where}: label {lab} is not an object (labels are > 0).")
    if not math.isfinite(val):
        raise EmsegValueError(f"{where}: the score of label {lab} is {val}; scores must be finite.")
    return lab, val


def read_scores(path: str | os.PathLike[str]) -> dict[int, float]:
    """Read one confidence score per predicted object.

    Parameters
    ----------
    path : str or path
        A ``.json`` file holding an object ``{"label": score, ...}``, or a
        CSV / TSV / whitespace-separated text file with two columns, label
        and score, one object per line (an optional header line whose first
        field is not a number is skipped).

    Returns
    -------
    dict of int to float
        Label -> score.

    Raises
    ------
    EmsegValueError
        A line or entry that is not (positive integer label, finite number),
        a label given twice, or an empty file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "scores.csv"
    >>> _ = f.write_text("label,score\\n5,0.9\\n7,0.25\\n")
    >>> read_scores(f)
    {5: 0.9, 7: 0.25}
    """
    p = Path(path)
    text = p.read_text()
    out: dict[int, float] = {}
    entries: list[tuple[int, float]] = []
    if p.suffix.lower() == ".json":
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise EmsegValueError(
                f'`scores` file {str(p)!r} must hold a JSON object {{"label": score}}; '
                f"got {type(doc).__name__}."
            )
        entries = [_entry(k, v, f"{p.name} key {k!r}") for k, v in doc.items()]
    else:
        dialect = "excel-tab" if "\t" in text else "excel"
        rows = list(csv.reader(text.splitlines(), dialect=dialect))
        for i, row in enumerate(rows, start=1):
            fields = [f for f in row if f.strip()]
            if len(fields) == 1 and dialect == "excel":
                fields = fields[0].split()
            if not fields:
                continue
            if i == 1 and not fields[0].strip().lstrip("+-").isdigit():
                continue  # header
            if len(fields) != 2:
                raise EmsegValueError(
                    f"{p.name} line {i}: expected two columns (label, score); got {row!r}."
                )
            entries.append(_entry(fields[0], fields[1], f"{p.name} line {i}"))
    for lab, val in entries:
        if lab in out:
            raise EmsegValueError(f"{p.name}: label {lab} has two scores; give each label once.")
        out[lab] = val
    if not out:
        raise EmsegValueError(f"`scores` file {str(p)!r} holds no (label, score) entry.")
    return out
