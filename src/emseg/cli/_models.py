"""``emseg models``: the models that ship with emseg."""

from __future__ import annotations

import argparse
import json
from typing import Any

from emseg.cli._common import add_command


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "models",
        help="list the shipped deep-learning models",
        description="The models that ship inside emseg (no download), with their training data, "
        "licence notes of the data and validation scores. Use a name with `emseg predict`.",
    )
    p.add_argument("--json", action="store_true", help="print the model cards as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emseg.semantic.deep import list_models, models_dir

    models = list_models()
    if args.json:
        print(
            json.dumps([{"name": m.name, "path": str(m.path), **m.card} for m in models], indent=2)
        )
        return 0
    if not models:
        print(f"no shipped models in {models_dir()} (train your own with `emseg train`)")
        return 0
    for m in models:
        c = m.card
        scores = ", ".join(
            f"{k}={v:.4f}"
            for k, v in (c.get("validation") or {}).items()
            if isinstance(v, int | float)
        )
        if not scores and str(c.get("validation_split", "")).startswith("none"):
            scores = c["validation_split"]  # a refit on training + validation data
        print(f"{m.name}: {c.get('description', '')}")
        print(f"  data: {c.get('training_data', '?')}")
        print(f"  licence: {c.get('data_licence', '?')}")
        print(f"  validation: {scores or '?'}")
    return 0
