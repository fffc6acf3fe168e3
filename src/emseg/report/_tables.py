"""Per-object tables as CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_object_tables"]


def write_object_tables(
    result: Any, folder: str | Path, *, stem: str = "objects"
) -> dict[str, Path]:
    """Write ``<stem>_truth.csv`` and ``<stem>_prediction.csv`` into `folder`.

    Parameters
    ----------
    result : EvaluationResult
        Computed with ``objects=True``.
    folder : path
        Created if missing (e.g. the report's folder).
    stem : str

    Returns
    -------
    dict of str to Path
        ``{"truth": path, "prediction": path}``; empty when the result has
        no object tables.
    """
    if result.truth_objects is None or result.prediction_objects is None:
        return {}
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"truth": out / f"{stem}_truth.csv", "prediction": out / f"{stem}_prediction.csv"}
    result.truth_objects.to_csv(paths["truth"], index=False)
    result.prediction_objects.to_csv(paths["prediction"], index=False)
    return paths
