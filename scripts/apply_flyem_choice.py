"""Write the neurons-fibsem preset for a chain chosen by ``choose_flyem_chain.py`` and score it.

The chosen candidate's members (shipped model names, each with its test-time augmentation and
weight) and its settings (distance-seed supervoxels, agglomeration linkage and threshold,
clean-up size) replace those of the base preset; the new chain is run end to end with ``emseg segment`` on the whole FlyEM
volume and on gala's test volume, and the preset is written with its scores: FlyEM z 80-124
(held out), gala's test volume, and the tuning crop z 60-79 for reference. Nothing is tuned
here; run it once, after the choice (it is the look at the test split).

    python scripts/choose_flyem_chain.py ... --out bench_output/choose_flyem_chain.json
    python scripts/apply_flyem_choice.py bench_output/choose_flyem_chain.json \\
        --out src/emseg/presets/neurons-fibsem

Takes about 6 minutes on 2 cores (prediction with flips dominates).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from instance_results import ensemble_map_description, member_record
from refit_preset import score_preset

from emseg import __version__
from emseg.presets import load_preset
from emseg.semantic.deep import load_model


def preset_member(member: Any) -> dict[str, Any]:
    """A chooser member (``[model, planes]`` before session 8, else a dict with tta and weight)
    as a preset's ``prediction.members`` entry (``weight`` only where it is not 1)."""
    if not isinstance(member, dict):
        model, planes = member
        member = {"model": model, "planes": planes, "tta": True, "weight": 1.0}
    out = {"model": member["model"], "planes": int(member["planes"]), "tta": member["tta"]}
    if float(member.get("weight", 1.0)) != 1:
        out["weight"] = float(member["weight"])
    return out


def preset_meta(base: dict, choice: dict, command: str) -> dict:
    """The base preset's JSON with the chosen members and settings (scores still to come)."""
    meta = json.loads(json.dumps(base))
    members = [preset_member(m) for m in choice["members"]]
    meta["prediction"] = {"kind": "deep", "class": "boundary", "members": members}
    meta["description"] = (
        f"Neurons in isotropic FIB-SEM (~10 nm voxels): {ensemble_map_description(members, None)}, "
        f"watershed supervoxels, {choice.get('linkage', 'mean')} agglomeration (trained on FlyEM "
        "medulla)"
    )
    inst = meta["instances"]
    inst["supervoxels"] = dict(choice["supervoxels"])
    inst["agglomeration"] = {"edges": "mean", "threshold": float(choice["threshold"]),
                             "edge_classifier": None,
                             "merge_small_nm3": float(choice["merge_small_nm3"])}  # fmt: skip
    if choice.get("linkage", "mean") != "mean":  # absent: the mean linkage, as before session 8
        inst["agglomeration"]["linkage"] = choice["linkage"]
    records = [member_record(load_model(m["model"]), m["model"], m["planes"], m["tta"],
                             m.get("weight", 1.0)) for m in members]  # fmt: skip
    meta["training"] = {
        "command": command, "emseg": __version__,
        "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        "boundary": {"kind": "deep", "members": records},
    }  # fmt: skip
    return meta


def member_flag(member: Any) -> str:
    """``MODEL:PLANES[:ft][@W]``, the chooser's syntax for one member."""
    m = preset_member(member)
    ft = ":ft" if m["tta"] == "flips+transpose" else ""
    w = f"@{m['weight']:g}" if "weight" in m else ""
    return f"{m['model']}:{m['planes']}{ft}{w}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("choice", help="JSON written by choose_flyem_chain.py")
    parser.add_argument("--base", default="neurons-fibsem", help="preset whose other fields stay")
    parser.add_argument("--out", required=True, help="folder to write preset.json into")
    args = parser.parse_args()
    result = json.loads(Path(args.choice).read_text())
    name = result["chosen"]["candidate"]
    choice = {**result["chosen"], "members": result["candidates"][name]["members"]}
    base = json.loads((Path(load_preset(args.base).path) / "preset.json").read_text())
    flags = " ".join(
        f"--candidate {c}={'+'.join(member_flag(m) for m in v['members'])}"
        + (f"#{v['linkage']}" if v.get("linkage", "mean") != "mean" else "")
        for c, v in result["candidates"].items()
    )
    command = (
        f"python scripts/choose_flyem_chain.py {flags} --perturb {result['perturb']} "
        "--out CHOICE; python scripts/apply_flyem_choice.py CHOICE --out DIR"
    )
    meta = preset_meta(base, choice, command)
    got = score_preset(meta)
    meta["validation"] = {
        "dataset": "flyem_medulla",
        "trained_on": "z 0-59",
        "tuned_on": f"z 60-79 (objective averaged over {result['perturb']} perturbed maps)",
        "scored_on": "z 80-124",
        "scores": got["test"],
        "other": {
            "gala_fibsem test volume (this preset as is: FlyEM-trained, FlyEM-tuned)": got["gala"],
            "flyem_medulla z 60-79 (tuning crop)": got["tune"],
        },
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "preset.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["validation"], indent=1))


if __name__ == "__main__":
    main()
