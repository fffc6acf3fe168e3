"""Replace one member of a deep preset by its refit and score the result (session 5).

A refit is a model retrained with the same recipe on training + validation
data after the preset's settings were tuned with the original member (e.g.
``boundaries-fibsem`` on FlyEM z 0-59 -> ``boundaries-fibsem-refit`` on
z 0-79). Nothing is tuned here: the preset's settings are kept, the new chain
is run end to end (``emseg segment``) on the FlyEM volume and gala's test
volume, and the preset is written with the new member and its scores
(FlyEM z 80-124 held out; z 60-79, now training data of the refit, reported
for reference).

    scripts/train_shipped_models.sh boundaries-fibsem-refit
    python scripts/refit_preset.py neurons-fibsem boundaries-fibsem boundaries-fibsem-refit \\
        --out src/emseg/presets/neurons-fibsem

Takes about 7 minutes on 2 cores (prediction with flips dominates).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from instance_results import scores

from emseg.data import DATASETS, dataset_path, open_dataset_file
from emseg.io import open_image
from emseg.presets import load_preset, segment
from emseg.semantic.deep import load_model


def _run(preset_dir: Path, dataset: str, key: str, out: Path) -> np.ndarray:
    spacing = DATASETS[dataset].spacing
    result = segment(dataset_path(dataset, key), preset_dir, out, spacing=spacing,
                     n_workers=1, progress=False)  # fmt: skip
    return np.asarray(open_image(result.labels)[:])


def score_preset(meta: dict) -> dict[str, dict[str, float]]:
    """Run preset `meta` end to end (``emseg segment``) on FlyEM and gala's test volume; scores.

    Keys: ``test`` (FlyEM z 80-124), ``tune`` (FlyEM z 60-79), ``gala`` (gala's test volume).
    """
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "preset").mkdir()
        (work / "preset" / "preset.json").write_text(json.dumps(meta, indent=2) + "\n")
        fly = _run(work / "preset", "flyem_medulla", "image", work / "flyem")
        gala = _run(work / "preset", "gala_fibsem", "test_image", work / "gala")
    truth = np.asarray(open_dataset_file("flyem_medulla", "groundtruth")[:])
    gala_truth = np.asarray(open_dataset_file("gala_fibsem", "test_groundtruth")[:])
    return {"test": scores(truth[80:125], fly[80:125]), "tune": scores(truth[60:80], fly[60:80]),
            "gala": scores(gala_truth, gala)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("preset", help="shipped preset name or preset directory")
    parser.add_argument("old", help="the member's model to replace")
    parser.add_argument("new", help="its refit (a shipped model name)")
    parser.add_argument("--out", required=True, help="folder to write preset.json into")
    args = parser.parse_args()
    preset = load_preset(args.preset)
    meta = json.loads((Path(preset.path) / "preset.json").read_text())
    members = meta["prediction"]["members"]
    hit = [m for m in members if m["model"] == args.old]
    if len(hit) != 1:
        parser.error(f"preset {preset.name!r} has no single member {args.old!r}: {members}")
    hit[0]["model"] = args.new
    meta["description"] = meta["description"].replace(args.old + " ", args.new + " ")
    got = score_preset(meta)
    val = meta["validation"]
    val["trained_on"] = f"{val['trained_on']}; {args.new} refit on training + validation data"
    val["tuned_on"] = f"{val['tuned_on']}, with {args.old}"
    val["scores"] = got["test"]
    val["other"] = {
        "gala_fibsem test volume (this preset as is: FlyEM-trained, FlyEM-tuned)": got["gala"],
        "flyem_medulla z 60-79 (tuning crop of the settings; training data of the refit)":
            got["tune"],
    }  # fmt: skip
    train = meta["training"]
    train["command"] = (f"{train['command']}; then python scripts/refit_preset.py "
                        f"{preset.name} {args.old} {args.new} (settings unchanged)")  # fmt: skip
    train["date"] = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    for rec in train.get("boundary", {}).get("members", []):
        if rec.get("model") == args.old:
            model = load_model(args.new)
            rec.update(model=args.new, refit_of=args.old, validation=None,
                       train_seconds=round(float(model.provenance.get("train_seconds", 0)), 1))  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "preset.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(val, indent=1))


if __name__ == "__main__":
    main()
