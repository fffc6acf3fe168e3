#!/usr/bin/env bash
# Train the models that ship with emseg and copy them into src/emseg/models/.
#
#   scripts/train_shipped_models.sh [membranes-2d] [mitochondria] [boundaries-fibsem]
#                                   [boundaries-fibsem-3d] [boundaries-fibsem-refit]
#                                   [boundaries-fibsem-3d-stage2]
#                                   (default: all six; boundaries-fibsem-3d-stage2 starts from
#                                   runs/boundaries-fibsem-3d, so it comes after it)
#
# Hours of CPU each: run on a quiet machine. A killed run continues where it
# stopped when the script is started again (emseg train --resume). Each run
# selects its model on the validation split only (ISBI 2012 sections 24-29,
# Lucchi++ z 60-79, FlyEM medulla z 60-79) and writes card.json with the validation
# scores (boundaries-fibsem: IoU of p >= 0.5 on xy sections; it is used tri-planar, with the
# 3D boundaries-fibsem-3d-stage2, by the neurons-fibsem preset, whose scores come from
# scripts/choose_flyem_chain.py and scripts/apply_flyem_choice.py); the ISBI
# V_rand / V_info of the membrane model are added to its card below.
# Weights over 5 MB are stored as float16 (the 3D boundaries-fibsem-3d: 2.9 MB).
# A model with configs/<name>-finetune.yaml (mitochondria) gets a second stage
# that fine-tunes the first at a lower learning rate; the second stage ships.
# Set EMSEG_THREADS to limit torch threads.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
EMSEG=${EMSEG:-.venv/bin/emseg}
RUNS=${RUNS:-runs}
THREADS=${EMSEG_THREADS:-}
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(membranes-2d mitochondria boundaries-fibsem boundaries-fibsem-3d boundaries-fibsem-refit boundaries-fibsem-3d-stage2)

for name in "${models[@]}"; do
  out="$RUNS/$name"
  args=(configs/"$name".yaml "$out" --no-progress)
  [ -n "$THREADS" ] && args+=(--threads "$THREADS")
  if [ -f "$out/checkpoints/last/state.json" ] && [ ! -f "$out/model.safetensors" ]; then
    args+=(--resume)
  elif [ -d "$out" ] && [ ! -f "$out/model.safetensors" ]; then
    args+=(--overwrite)
  fi
  if [ ! -f "$out/model.safetensors" ]; then
    "$EMSEG" train "${args[@]}"
  fi
  # optional stage 2: configs/<name>-finetune.yaml fine-tunes stage 1 (init_from runs/<name>)
  if [ -f "configs/$name-finetune.yaml" ]; then
    if [ "$RUNS" != "runs" ]; then
      echo "$name: the fine-tuning stage reads runs/$name (init_from); run with RUNS=runs" >&2
      exit 2
    fi
    ft="$RUNS/$name-finetune"
    ftargs=(configs/"$name"-finetune.yaml "$ft" --no-progress)
    [ -n "$THREADS" ] && ftargs+=(--threads "$THREADS")
    if [ -f "$ft/checkpoints/last/state.json" ] && [ ! -f "$ft/model.safetensors" ]; then
      ftargs+=(--resume)
    elif [ -d "$ft" ] && [ ! -f "$ft/model.safetensors" ]; then
      ftargs+=(--overwrite)
    fi
    [ -f "$ft/model.safetensors" ] || "$EMSEG" train "${ftargs[@]}"
    out="$ft"
  fi
  # full validation scores (ISBI V_rand / V_info for membranes) into the card
  "$PY" - "$name" "$out" <<'PYEOF'
import json, sys
import numpy as np
from emseg.semantic.deep import evaluate, load_config, load_model
from emseg.io import open_image
name, out = sys.argv[1], sys.argv[2]
import os
cfg_path = f"configs/{name}-finetune.yaml"
cfg = load_config(cfg_path if os.path.exists(cfg_path) else f"configs/{name}.yaml")
model = load_model(out)
card_p = f"{out}/card.json"
card = json.load(open(card_p))
if cfg.data.val_z is None:  # a refit on training + validation data: no validation split
    z0 = cfg.data.train_z[0]
    scores = None
    card["validation"] = None
    card["validation_split"] = "none: a refit on training + validation data (see its config)"
else:
    z0, z1 = cfg.data.val_z
    img = open_image(cfg.data.image, spacing=cfg.data.spacing)[z0:z1]
    lab = open_image(cfg.data.labels, spacing=cfg.data.spacing)[z0:z1]
    scores = evaluate(model, img, lab, tile_shape=cfg.validation.tile_shape,
                      isbi=name.startswith("membranes"))
    card["validation"] = scores
    card["validation_split"] = f"z {z0}-{z1 - 1}"
# scores on a fixed crop, checked by tests/deep/test_registry.py (a reproduction check; for a
# refit the crop lies in its training data)
from emseg.data import data_root
box = [[z0, z0 + (2 if model.dim == 2 else 16)], [0, 256], [0, 256]]  # a 3D net sees 16 sections
sl = tuple(slice(a, b) for a, b in box)
ci = open_image(cfg.data.image, spacing=cfg.data.spacing)[sl]
cl = open_image(cfg.data.labels, spacing=cfg.data.spacing)[sl]
crop = evaluate(model, ci, cl)
card["crop_validation"] = {"box": box, "data_root_at_training": str(data_root()),
                           "scores": {k: crop[k] for k in ("iou", "accuracy") if k in crop}}
json.dump(card, open(card_p, "w"), indent=2)
print(name, json.dumps(scores))
PYEOF
  mkdir -p "src/emseg/models/$name"
  cp "$out/model.safetensors" "$out/config.json" "$out/card.json" "src/emseg/models/$name/"
  # weights over 5 MB (the 3D net: 5.7 MB) ship as float16; loading casts them back to float32
  "$PY" - "src/emseg/models/$name/model.safetensors" <<'PYEOF'
import os, sys
import torch
from safetensors import safe_open
from safetensors.torch import save_file
p = sys.argv[1]
if os.path.getsize(p) > 5_000_000:
    with safe_open(p, "pt") as f:
        meta, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    t = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in t.items()}
    assert all(torch.isfinite(v).all() for v in t.values() if v.is_floating_point())
    save_file(t, p, metadata=meta)
PYEOF
  size=$(stat -c %s "src/emseg/models/$name/model.safetensors")
  if [ "$size" -gt 5000000 ]; then
    echo "$name: model.safetensors is $size bytes (> 5 MB) even as float16; not shipping it" >&2
    rm -r "src/emseg/models/$name"
    continue
  fi
  echo "shipped $name -> src/emseg/models/$name"
done
