"""Models that ship with emseg: ``src/emseg/models/<name>/`` package data.

Each shipped model is a folder with ``model.safetensors``, ``config.json``
(see :class:`Model`) and ``card.json`` (training data, licence notes of the
data, validation scores, the command that trained it). Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emseg.errors import DatasetNotFoundError
from emseg.semantic.deep._model import CONFIG, WEIGHTS, Model


def models_dir() -> Path:
    """The folder of shipped models inside the installed package."""
    import emseg

    return Path(emseg.__file__).parent / "models"


@dataclass(frozen=True)
class ModelCard:
    """What a shipped model is: name, path, and its card (a dict from ``card.json``)."""

    name: str
    path: Path
    card: dict[str, Any]


def list_models(folder: str | os.PathLike[str] | None = None) -> list[ModelCard]:
    """Shipped models (folders holding weights, config and card), sorted by name."""
    root = Path(folder) if folder is not None else models_dir()
    out = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if (p / WEIGHTS).is_file() and (p / CONFIG).is_file():
                card_p = p / "card.json"
                card = json.loads(card_p.read_text()) if card_p.is_file() else {}
                out.append(ModelCard(p.name, p, card))
    return out


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """The folder of a shipped model name, or of a model path.

    Raises
    ------
    DatasetNotFoundError
        Neither a model folder / file nor a shipped name; lists the shipped names.
    """
    p = Path(name_or_path)
    if p.is_dir() and (p / WEIGHTS).is_file():
        return p
    if p.is_file() and p.name == WEIGHTS:
        return p.parent
    shipped = {m.name: m.path for m in list_models()}
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    names = ", ".join(sorted(shipped)) or "none"
    raise DatasetNotFoundError(
        f"`model` {str(name_or_path)!r} is neither a model folder (with {WEIGHTS} and {CONFIG}) "
        f"nor a shipped model name (shipped: {names})."
    )


def load_model(name_or_path: str | os.PathLike[str]) -> Model:
    """Load a shipped model by name, or a model folder written by :meth:`Model.save`."""
    return Model.load(resolve_model(name_or_path))
