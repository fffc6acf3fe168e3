#!/usr/bin/env bash
# Train a FlyEM boundary net (configs/NAME.yaml) on a lent GPU machine.
#
# Runs from the repository root of the device machine's copy of the working tree, which must
# carry two git-ignored folders prepared on the development machine:
#   .whl/      wheels the device image lacks (zarr 3.1.6, numcodecs 0.16.6, donfig, google-crc32c, tifffile 2026.3.3,
#              for its Python 3.12; see docs/deep.md "Training on a GPU")
#   .gpudata/  image.tif and groundtruth.tif of ../shared/data/flyem_medulla_neuroproof
#
#   scripts/gpu_train.sh smoke NAME   tests of training with workers, a CPU/GPU check, and the
#                                     time per step of configs/NAME.yaml (150 steps)
#   scripts/gpu_train.sh train NAME   the whole run into runs/NAME; the model, its config, card
#                                     and logs come back in $OUT (each file under 16 MiB)
#   scripts/gpu_train.sh pair NAME NAME2   two runs at once (7 workers each), into $OUT/NAME and
#                                     $OUT/NAME2, after a CUDA-against-CPU check of the LSD targets
# Session 9 ran NAME = boundaries-fibsem-3d-wide and boundaries-fibsem-3d-stage3. Session 10 ran
# `train boundaries-fibsem-3d-stage3-lsd`, then boundaries-fibsem-3d-lsd by hand with a 405-s
# limit (the budget left). Its first try, `pair` of the two, ran 3 s per step: the LSD targets were
# then computed object by object on the GPU, and two runs with 7 workers each starved the CPU
# side of the kernel launches; the GPU now computes them in groups of objects (0.24 s per step).
set -euo pipefail
mode=${1:-smoke}
name=${2:-boundaries-fibsem-3d-wide}
out=${OUT:-/tmp/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
mkdir -p ../shared/data
ln -sfn "$PWD/.gpudata" ../shared/data/flyem_medulla_neuroproof
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python3 -c "import torch, numpy, zarr; print('torch', torch.__version__, 'numpy', numpy.__version__, 'zarr', zarr.__version__, 'cuda', torch.cuda.is_available())"
cfg=configs/$name.yaml

bring_back() {  # bring_back NAME DEST: steps and time of runs/NAME; its model, config, card, log into DEST
    python3 -c "import json; s = json.load(open('runs/$1/checkpoints/last/state.json')); print('$1 steps', s['step'], 'seconds', round(s['elapsed_s'], 1), 'per step', round(s['elapsed_s'] / s['step'], 4))"
    local src=runs/$1
    [ -f "$src/model.safetensors" ] || src=runs/$1/checkpoints/best  # stopped early
    cp "$src"/{model.safetensors,config.json} runs/$1/log.csv "$2"/
    cp runs/$1/card.json "$2"/ || true
}
if [ "$mode" = smoke ]; then
    python3 -m pytest -q -p no:cacheprovider tests/deep/test_device_workers.py tests/deep/test_train.py 2>&1 | tail -5 || true
    python3 scripts/gpu_check_train.py || true
    python3 -m emseg train "$cfg" /tmp/timing --stop-after 150 --workers 14 --no-progress --overwrite
    python3 - <<'PY'
import json
s = json.load(open("/tmp/timing/checkpoints/last/state.json"))
print("precision", s["precision"], s.get("precision_timings"))
print(f"seconds per step {s['elapsed_s'] / s['step']:.4f} over {s['step']} steps")
PY
elif [ "$mode" = pair ]; then
    python3 - <<'PY'
import numpy as np, tifffile, torch
from emseg.semantic.deep import local_shape_descriptors
gt = tifffile.imread(".gpudata/groundtruth.tif")[:48, :128, :128].astype(np.int64)
ids = torch.tensor(gt)[None]
cpu = local_shape_descriptors(ids, sigma_nm=80.0, spacing=(10, 10, 10))
gpu = local_shape_descriptors(ids.cuda(), sigma_nm=80.0, spacing=(10, 10, 10)).cpu()
print("LSD max |cuda - cpu|", float((cpu - gpu).abs().max()))
PY
    for n in "$name" "$3"; do
        mkdir -p "$out/$n"
        (timeout 540 python3 -m emseg train configs/$n.yaml runs/$n --workers 7 --no-progress \
            > "$out/$n/train.log" 2>&1 || echo "$n stopped: $?") &
    done
    wait
    for n in "$name" "$3"; do
        bring_back "$n" "$out/$n"
        tail -3 "$out/$n/train.log"
    done
else
    # a stop at 560 s still leaves checkpoints/best (validation every 250 steps) to bring back
    timeout 560 python3 -m emseg train "$cfg" runs/$name --workers 14 \
        --no-progress 2>&1 | tee "$out/train.log" || echo "training stopped: $?"
    bring_back "$name" "$out"
fi
