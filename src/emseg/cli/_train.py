"""``emseg train CONFIG OUT``: train a U-Net from a YAML / JSON config."""

from __future__ import annotations

import argparse
from typing import Any

from emseg.cli._common import add_command, add_overwrite

DESCRIPTION = """\
Train a U-Net (2D, 3D or anisotropic 3D) from a config file (docs/deep.md,
configs/*.yaml). OUT receives the final model (model.safetensors +
config.json), log.csv / log.json, curves.png and checkpoints/ (last, best).

  emseg train configs/membranes-2d.yaml runs/membranes
  emseg train configs/membranes-2d.yaml runs/membranes --resume   # after a kill

--resume continues from OUT/checkpoints/last exactly (weights, optimiser,
schedule, random state, step). On a machine with a CUDA GPU the network trains
there (--device auto); --workers N draws and augments batches in N processes,
which a GPU needs to stay busy:

  emseg train configs/boundaries-fibsem-3d-gpu.yaml runs/b3d --workers 12

Transfer learning: `init_from: MODEL` (a shipped name or a model folder) and
`freeze_encoder: true` in the config.
"""


def register(sub: Any) -> None:
    p = add_command(sub, "train", help="train a U-Net from a config file", description=DESCRIPTION)
    p.add_argument("config", metavar="CONFIG", help="YAML or JSON training config")
    p.add_argument("output", metavar="OUT", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last")
    p.add_argument("--steps", type=int, default=None, help="override schedule.steps")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEP",
        help="checkpoint and stop at this step (continue later with --resume)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="draw and augment batches in N worker processes (0: in this process); "
        "any N >= 1 gives the same run",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from emseg.semantic.deep import load_config, train

    cfg = load_config(args.config)
    if args.steps is not None:
        sched = dataclasses.replace(
            cfg.schedule,
            steps=args.steps,
            warmup_steps=min(cfg.schedule.warmup_steps, args.steps),
        )
        cfg = cfg.replace(schedule=sched)
    if args.threads is not None:
        cfg = cfg.replace(threads=args.threads)
    res = train(
        cfg,
        args.output,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        device=args.device,
        workers=args.workers,
    )
    scores = ", ".join(f"{k}={v:.4f}" for k, v in res.best.items())
    last = res.history[-1]["loss"] if res.history else float("nan")
    done = "stopped at" if res.step < cfg.schedule.steps else "finished"
    print(
        f"{done} step {res.step} ({res.precision}); last loss {last:.4f}"
        + (f"; best validation: {scores}" if scores else "")
        + f"; model in {res.path}"
    )
    return 0
