"""Training: AdamW, warm-up + cosine, validation with emseg.metrics, checkpoints, resume.

Output folder of a run::

    OUT/model.safetensors, OUT/config.json   the final model (best validation, else last)
    OUT/log.csv, OUT/log.json, OUT/curves.png training log and curves
    OUT/checkpoints/last/                    weights, optimiser (safetensors), state.json
    OUT/checkpoints/best/                    the best model by validation

``resume=True`` restores the last checkpoint exactly (weights, AdamW moments,
scheduler, numpy and torch random states, step, log, early-stopping state),
so a killed run continues as if it had never stopped. Nothing is pickled.

``device`` chooses where the network trains ("auto": a CUDA GPU when PyTorch
sees one, else the CPU); checkpoints are always written from CPU copies, so a
run may resume on another device. ``workers >= 1`` draws the batches in that
many forked worker processes, batch ``k`` from its own generator seeded
``(seed, k)``: the same batches for any number of workers, and exact on
resume (with ``workers=0`` one generator is drawn in turn, as before).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emseg.errors import EmsegValueError, FormatError, OutputExistsError
from emseg.semantic.deep._augment import augment_patch
from emseg.semantic.deep._config import TrainConfig, from_dict
from emseg.semantic.deep._data import (
    PatchSampler,
    class_positions,
    estimate_intensity,
    make_target,
    map_classes,
)
from emseg.semantic.deep._infer import predict_image
from emseg.semantic.deep._losses import downsample_target, segmentation_loss
from emseg.semantic.deep._lsd import local_shape_descriptors
from emseg.semantic.deep._model import Model, init_from, load_tensors, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    model : Model
        The final model (best by validation when there is a validation split).
    path : Path
        The output folder.
    step : int
        Steps done.
    best : dict of str to float
        Validation scores of the final model (empty without validation).
    history : list of dict
        One row per logged step (``step``, ``lr``, ``loss``, ``val_*``).
    precision : str
        "fp32" or "bf16" (what ``precision: auto`` chose).
    """

    model: Model
    path: Path
    step: int
    best: dict[str, float]
    history: list[dict[str, float]]
    precision: str


def lr_factor(step: int, *, steps: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine down to `min_ratio`.

    Examples
    --------
    >>> lr_factor(0, steps=100, warmup=10, min_ratio=0.0)
    0.1
    >>> lr_factor(100, steps=100, warmup=10, min_ratio=0.0)
    0.0
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _open(source: Any, spacing: Any) -> Any:
    if isinstance(source, str | os.PathLike):
        from emseg.io import open_image

        return open_image(source, spacing=spacing)
    return source


def evaluate(
    model: Model,
    image: Any,
    labels: Any,
    *,
    tile_shape: Any = None,
    overlap: float = 0.25,
    isbi: bool = False,
    probabilities: np.ndarray | None = None,
) -> dict[str, float]:
    """Validation scores of `model` on (image, raw labels) with emseg's metrics.

    Softmax models: ``accuracy``, ``iou`` (mean Jaccard of classes 1..K-1),
    ``iou_<class>``, and with 2 classes ``pixel_error`` (ISBI 2012: class 1
    is the foreground, probability ``1 - p0``). Other heads: ``iou`` (mean
    over channels of the Jaccard of ``p >= 0.5`` against the target). With
    `isbi`, also ``vrand`` and ``vinfo`` (ISBI 2012, border thinning; class 0
    is the membrane).
    """
    from emseg.metrics import class_scores, confusion_matrix, isbi2012_scores, pixel_error

    cfg = model.config
    raw = np.asarray(labels[...])
    probs = probabilities
    if probs is None:
        device = next(model.network.parameters()).device  # where the model is (training)
        probs = predict_image(model, image, tile_shape=tile_shape, overlap=overlap, device=device)
    scores: dict[str, float] = {}
    if model.head == "softmax":
        k = len(cfg.data.class_names)
        cls = map_classes(raw, label_map=cfg.data.label_map, ignore_label=cfg.data.ignore_label)
        valid = cls >= 0
        pred = np.argmax(probs, axis=0)
        cm = confusion_matrix(np.where(valid, cls, 0), pred, n_classes=k, mask=valid)
        cs = class_scores(cm)
        scores["accuracy"] = float(cs.accuracy)
        for c, name in enumerate(cfg.data.class_names):
            scores[f"iou_{name}"] = float(cs.jaccard[c])
        fg = cs.jaccard[1:] if k > 1 else cs.jaccard
        scores["iou"] = float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan")
        if k == 2:
            pe = pixel_error(cls == 1, 1.0 - probs[0], mask=valid)
            scores["pixel_error"] = float(pe.pixel_error)
        if isbi and k == 2:
            truth = np.where(cls == 1, 1, 0)
            isb = isbi2012_scores(truth, probs[0])
            scores["vrand"] = float(isb.v_rand)
            scores["vinfo"] = float(isb.v_info)
    else:
        target, mask = make_target(
            raw if raw.ndim == 3 else raw[None],
            head=model.head,
            n_classes=len(cfg.data.class_names),
            label_map=cfg.data.label_map,
            ignore_label=cfg.data.ignore_label,
            offsets=cfg.network.offsets,
            spatial_ndim=cfg.network.dim,
        )
        p = probs if probs.ndim == target.ndim else probs[:, None]
        ious = []
        for c in range(target.shape[0]):
            m = mask[c] > 0
            t, q = target[c][m] > 0.5, p[c][m] >= 0.5
            union = np.logical_or(t, q).sum()
            ious.append(np.logical_and(t, q).sum() / union if union else np.nan)
        scores["iou"] = float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")
    return scores


class _Run:
    """State of one training run (kept small; the loop is :func:`train`)."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        image: Any,
        labels: Any,
        val_image: Any,
        val_labels: Any,
    ) -> None:
        self.cfg, self.out = config, out
        d = config.data
        self.image = _open(image if image is not None else d.image, d.spacing)
        self.labels = _open(labels if labels is not None else d.labels, d.spacing)
        if tuple(self.image.shape) != tuple(self.labels.shape):
            raise EmsegValueError(
                f"`data.image` and `data.labels` must have the same shape; got "
                f"{tuple(self.image.shape)} and {tuple(self.labels.shape)}."
            )
        spacing = getattr(self.image, "spacing", None) or d.spacing
        nd = len(self.image.shape)
        self.spacing = tuple(float(s) for s in (spacing or (1.0,) * nd))
        nz = self.image.shape[0] if nd == 3 else 1
        self.train_z = d.train_z or (0, nz)
        if self.train_z[1] > nz:
            raise EmsegValueError(
                f"config field `data.train_z` {self.train_z} exceeds the {nz} sections of the image."
            )
        vi = val_image if val_image is not None else d.val_image
        vl = val_labels if val_labels is not None else d.val_labels
        self.val_image = self.val_labels = None
        if vi is not None and vl is not None:
            self.val_image, self.val_labels = _open(vi, d.spacing), _open(vl, d.spacing)
        elif d.val_z is not None:
            z0, z1 = d.val_z
            if nd != 3 or z1 > nz:
                raise EmsegValueError(
                    f"config field `data.val_z` {d.val_z} does not fit the image of shape "
                    f"{tuple(self.image.shape)}."
                )
            if config.validation.max_sections:
                z1 = min(z1, z0 + config.validation.max_sections)
            self.val_image = np.asarray(self.image[z0:z1])
            self.val_labels = np.asarray(self.labels[z0:z1])


def _adamw_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{pid}.{k}"] = torch.as_tensor(v).detach().cpu().clone().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _adamw_load(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def _rng_to_json(rng: np.random.Generator) -> dict[str, Any]:
    return json.loads(json.dumps(rng.bit_generator.state, default=int))


def _save_checkpoint(
    path: Path,
    model: Model,
    opt: torch.optim.Optimizer,
    sched: Any,
    rng: np.random.Generator,
    state: dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp, overwrite=True)
    tensors, meta = _adamw_tensors(opt)
    tensors["torch_rng_state"] = torch.get_rng_state()
    save_file(
        tensors, str(tmp / "optimizer.safetensors"), metadata={"format": "emseg.deep.optimizer"}
    )
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    full = {**state, "optimizer": meta, "scheduler": sched_state, "numpy_rng": _rng_to_json(rng)}
    (tmp / "state.json").write_text(json.dumps(full, default=float))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _write_logs(out: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(out / "log.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    (out / "log.json").write_text(json.dumps(history, indent=1))


def plot_curves(history: list[dict[str, float]], path: str | os.PathLike[str]) -> None:
    """Loss and validation curves as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    steps = [r["step"] for r in history if "loss" in r]
    ax[0].plot(steps, [r["loss"] for r in history if "loss" in r])
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log")
    val_keys = sorted({k for r in history for k in r if k.startswith("val_")})
    for k in val_keys:
        pts = [(r["step"], r[k]) for r in history if k in r]
        ax[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k[4:])
    ax[1].set(xlabel="step", ylabel="validation")
    if val_keys:
        ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def orientation_samplers(
    image: Any,
    labels: Any,
    *,
    orientations: tuple[str, ...],
    patch_shape: tuple[int, ...],
    z_range: tuple[int, int],
    divisor: tuple[int, ...],
    positions: list[np.ndarray] | None = None,
    foreground_fraction: float = 0.0,
    in_memory: bool = False,
) -> list[PatchSampler]:
    """One :class:`PatchSampler` per orientation of the training slab ``z_range``.

    ``"zyx"`` samples `image` lazily as it is, unless `in_memory` (then it reads the
    slab like the other orientations; forked batch workers need that, since they
    would share a lazily read file's handle). Another orientation (an axis
    order such as ``"yzx"``: sections along y, planes (z, x)) reads the slab
    into memory and transposes it, so patches never leave the slab. Its patch
    is cropped, per axis, to the largest multiple of the network's `divisor`
    that fits the transposed slab (e.g. (1, 256, 256) -> (1, 56, 256) for zx
    planes of a 60-section slab with divisor 8), so patches are not padded.
    Class positions (for `foreground_fraction`) are transposed with the slab.

    Returns
    -------
    list of PatchSampler
        In the order of `orientations`.
    """
    out = []
    slab: tuple[np.ndarray, np.ndarray] | None = None
    ps = tuple(int(p) for p in patch_shape)
    ps = (1, *ps) if len(ps) == 2 else ps
    div = tuple(divisor)
    div3 = (1, *div) if len(div) == 2 else div
    for o in orientations:
        if o == "zyx" and in_memory and len(image.shape) != 3:
            image, labels = np.asarray(image[...]), np.asarray(labels[...])
        if o == "zyx" and (not in_memory or len(image.shape) != 3):
            out.append(
                PatchSampler(
                    image,
                    labels,
                    patch_shape=ps,
                    z_range=z_range,
                    positions=positions,
                    foreground_fraction=foreground_fraction,
                )
            )
            continue
        if len(image.shape) != 3:
            raise EmsegValueError(
                f"config field `data.orientations` {o!r} needs a 3D image; got shape "
                f"{tuple(image.shape)}. Use orientations: [zyx] for 2D images."
            )
        z0, z1 = z_range
        if slab is None:
            slab = (np.asarray(image[z0:z1]), np.asarray(labels[z0:z1]))
        perm = tuple("zyx".index(c) for c in o)
        img_t = np.ascontiguousarray(slab[0].transpose(perm))
        lab_t = np.ascontiguousarray(slab[1].transpose(perm))
        crop = tuple(
            p if n >= p or n < d else n // d * d
            for p, n, d in zip(ps, img_t.shape, div3, strict=True)
        )
        pos_t = None
        if positions is not None:
            pos_t = [(p - np.array([z0, 0, 0]))[:, list(perm)] for p in positions]
        out.append(
            PatchSampler(
                img_t,
                lab_t,
                patch_shape=crop,
                z_range=(0, img_t.shape[0]),
                positions=pos_t,
                foreground_fraction=foreground_fraction,
            )
        )
    return out


def _batch_arrays(
    run: _Run, samplers: list[PatchSampler], rng: np.random.Generator, intensity: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch as numpy arrays: normalised patches (B, Z, Y, X), targets and masks.

    With ``network.lsd_sigma_nm`` the targets have one channel more: the patch's instance
    labels renumbered 1..n (0 stays 0), from which :func:`_loss` computes the local shape
    descriptors on the training device.
    """
    cfg = run.cfg
    # one orientation per batch (its patches share a shape); a single one draws nothing
    sampler = samplers[int(rng.integers(len(samplers)))] if len(samplers) > 1 else samplers[0]
    xs, ts, ms = [], [], []
    for _ in range(cfg.data.batch_size):
        for _attempt in range(10):
            img, raw, _ = sampler.sample(rng)
            img = intensity.apply(img)
            img, raw = augment_patch(img, raw, config=cfg.augment, rng=rng)
            t, m = make_target(
                raw,
                head=cfg.network.head,
                n_classes=len(cfg.data.class_names),
                label_map=cfg.data.label_map,
                ignore_label=cfg.data.ignore_label,
                offsets=cfg.network.offsets,
                spatial_ndim=cfg.network.dim,
            )
            if m.any():
                break
        if cfg.network.lsd_sigma_nm:  # the labels travel as a last target channel
            ids = np.unique(raw, return_inverse=True)[1].reshape(raw.shape)
            ids = np.where(raw == 0, 0, ids + (raw.min() != 0))
            t = np.concatenate([t, ids[None].astype(np.float32)])
        xs.append(img)
        ts.append(t)
        ms.append(m)
    return np.stack(xs), np.stack(ts), np.stack(ms).astype(np.float32)


def _to_tensors(
    arrays: tuple[Any, Any, Any], dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Arrays (numpy, or tensors from the loader) of one batch as (x, target, mask) on `device`."""
    x = torch.as_tensor(arrays[0])[:, None]
    tt = torch.as_tensor(arrays[1])
    mm = torch.as_tensor(arrays[2])
    if dim == 2:  # drop the z axis of (1, Y, X) patches
        x = x[:, :, 0]
        tt = tt[..., 0, :, :]
        mm = mm[..., 0, :, :]
    cuda = device.type == "cuda"
    return tuple(v.to(device, non_blocking=cuda) for v in (x, tt, mm))  # type: ignore[return-value]


def _batch(
    run: _Run,
    samplers: list[PatchSampler],
    rng: np.random.Generator,
    model: Model,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    arrays = _batch_arrays(run, samplers, rng, model.intensity)
    return _to_tensors(arrays, run.cfg.network.dim, device or torch.device("cpu"))


class _StepBatches(torch.utils.data.Dataset):
    """Item i = the batch of step ``first + i``, drawn from generator ``(seed, first + i)``.

    Its workers are forked, so they inherit the run's in-memory slab instead of pickling it.
    """

    def __init__(
        self, run: _Run, samplers: list[PatchSampler], intensity: Any, first: int, last: int
    ) -> None:
        self.run, self.samplers, self.intensity = run, samplers, intensity
        self.seed, self.first, self.n = run.cfg.seed, first, max(last - first + 1, 0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.first + i])
        return _batch_arrays(self.run, self.samplers, rng, self.intensity)


class _BatchPool:
    """Batches of steps ``first .. last`` drawn ahead by a torch ``DataLoader`` with `workers`
    forked processes (2 batches ahead per worker; pinned memory for a GPU).

    torch's loader hands the arrays back through shared memory; a ``ProcessPoolExecutor``
    that pickled them through a pipe drew 0.68x (2 x 32x96x96) and 0.49x (8 x 48x128x128)
    as many batches per second on 2 cores (benchmarks/bench_train_loader.py).
    """

    def __init__(
        self,
        run: _Run,
        samplers: list[PatchSampler],
        intensity: Any,
        workers: int,
        first: int,
        last: int | None = None,
        *,
        pin_memory: bool = False,
    ) -> None:
        stop = run.cfg.schedule.steps if last is None else last
        self.next = first
        loader = torch.utils.data.DataLoader(
            _StepBatches(run, samplers, intensity, first, stop),
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            prefetch_factor=2,
            multiprocessing_context=multiprocessing.get_context("fork"),
            pin_memory=pin_memory,
        )
        self.batches: Any = iter(loader)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if step != self.next:
            raise AssertionError(f"batch of step {step} asked for; the next is {self.next}")
        self.next += 1
        return next(self.batches)

    def close(self) -> None:
        self.batches = None  # the loader's iterator shuts its workers down


def _loss(
    model: Model, x: torch.Tensor, t: torch.Tensor, m: torch.Tensor, bf16: bool
) -> torch.Tensor:
    cfg = model.config
    net = model.network
    kind = x.device.type
    ctx = (
        torch.autocast(kind, dtype=torch.bfloat16) if bf16 else torch.autocast(kind, enabled=False)
    )
    lsd = cfg.network.lsd_sigma_nm
    if lsd:  # split the label channel off the targets
        ids, t = t[:, -1].round().long(), t[:, :-1]
    with ctx:
        outs, aux = net.forward_aux(x, deep=cfg.network.deep_supervision)
    softmax = cfg.network.head == "softmax"
    total = torch.zeros((), device=x.device)
    weights = cfg.loss.deep_supervision_weights
    for i, o in enumerate(outs):
        ti, mi = (t, m) if i == 0 else downsample_target(t, m, o.shape[2:], softmax=softmax)
        w = weights[i] if i < len(weights) else 0.0
        if w:
            total = total + w * segmentation_loss(
                o,
                ti,
                mi,
                kind=cfg.loss.kind,
                dice_weight=cfg.loss.dice_weight,
                class_weights=cfg.loss.class_weights,
            )
    if lsd and aux is not None and cfg.loss.lsd_weight:
        with torch.no_grad():
            target = local_shape_descriptors(ids, sigma_nm=lsd, spacing=model.spacing)
            valid = (ids != 0).float()[:, None] * m.amax(1, keepdim=True)
        err = (torch.sigmoid(aux.float()) - target) ** 2 * valid
        n = valid.sum() * target.shape[1]
        total = total + cfg.loss.lsd_weight * err.sum() / n.clamp(min=1.0)
    return total


def choose_precision(
    model: Model, x: torch.Tensor, t: torch.Tensor, m: torch.Tensor, *, repeats: int = 2
) -> tuple[str, dict[str, float]]:
    """Time forward + backward in fp32 and bf16 on one batch; the faster one and the timings."""
    timings = {}
    for name in ("fp32", "bf16"):
        best = math.inf
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            _loss(model, x, t, m, name == "bf16").backward()
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            best = min(best, time.perf_counter() - t0)
        model.network.zero_grad(set_to_none=True)
        timings[name] = best
    return min(timings, key=lambda k: timings[k]), timings


def train(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    image: Any = None,
    labels: Any = None,
    val_image: Any = None,
    val_labels: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    device: str | torch.device | None = "auto",
    workers: int = 0,
) -> TrainResult:
    """Train a U-Net as `config` says and save it in folder `out`.

    Parameters
    ----------
    config : TrainConfig
    out : path
        Output folder (see the module docstring).
    image, labels, val_image, val_labels : array-like or path, optional
        Override ``config.data``'s paths (e.g. arrays in tests).
    resume : bool
        Continue from ``out/checkpoints/last`` (refused if the config differs).
    overwrite : bool
        Replace an existing `out`.
    progress : bool
        tqdm progress bar with loss, learning rate and ETA.
    stop_after : int, optional
        Stop (after checkpointing) once this step is reached, as a killed
        run would; for tests and time-boxed runs.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default "auto"
        Where the network trains: "auto" takes a CUDA GPU when PyTorch sees
        one. The saved model and checkpoints are the same on any device.
    workers : int, default 0
        Batch-drawing worker processes (augmentation runs there, ahead of
        the network). 0 draws in this process from one generator; any
        ``workers >= 1`` draws batch ``k`` from a generator seeded
        ``(seed, k)``, so 1 and 8 workers give the same run. Resume with the
        same choice (0, or >= 1).

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    out_p = Path(out)
    last = out_p / "checkpoints" / "last"
    if out_p.exists() and any(out_p.iterdir()) and not (resume or overwrite):
        raise OutputExistsError(
            f"the training folder {str(out_p)!r} exists; pass resume (continue) or overwrite."
        )
    dev = resolve_device(device)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise EmsegValueError(f"`workers` must be an int >= 0; got {workers!r}.")
    if resume and not (last / "state.json").is_file():
        raise EmsegValueError(f"`resume`: no checkpoint in {str(last)!r} to resume from.")
    if overwrite and not resume and out_p.exists():
        shutil.rmtree(out_p)
    out_p.mkdir(parents=True, exist_ok=True)
    cfg = config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = _Run(cfg, out_p, image, labels, val_image, val_labels)
    d = cfg.data
    intensity = estimate_intensity(
        run.image, z_range=run.train_z if len(run.image.shape) == 3 else None, seed=cfg.seed
    )
    model = Model.create(cfg, spacing=run.spacing, intensity=intensity, seed=cfg.seed)
    if cfg.init_from:
        info = init_from(model, cfg.init_from, freeze_encoder=cfg.freeze_encoder)
        model.provenance["init_from"] = {"source": cfg.init_from, **info}
    model.network.to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # patches keep one shape: autotune convolutions
    positions = None
    if d.foreground_fraction > 0:
        positions = class_positions(
            run.labels,
            label_map=d.label_map,
            ignore_label=d.ignore_label,
            n_classes=len(d.class_names),
            z_range=run.train_z if len(run.image.shape) == 3 else (0, 1),
            samples_per_class=d.samples_per_class,
            seed=cfg.seed,
        )
    samplers = orientation_samplers(
        run.image,
        run.labels,
        orientations=d.orientations,
        patch_shape=d.patch_shape,
        z_range=run.train_z,
        divisor=model.network.plan.divisor,
        positions=positions,
        foreground_fraction=d.foreground_fraction,
        in_memory=workers > 0,
    )
    params = [p for p in model.network.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params,
        lr=cfg.optimiser.lr,
        betas=cfg.optimiser.betas,
        weight_decay=cfg.optimiser.weight_decay,
    )
    s = cfg.schedule
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(k, steps=s.steps, warmup=s.warmup_steps, min_ratio=s.min_lr_ratio)
    )
    rng = np.random.default_rng(cfg.seed)
    state: dict[str, Any] = {
        "step": 0,
        "best": None,
        "best_scores": {},
        "bad_evals": 0,
        "history": [],
        "precision": None,
        "elapsed_s": 0.0,
        "per_step_batches": workers > 0,
    }
    if resume:
        state = _restore(last, cfg, model, opt, sched, rng)
        if bool(state.get("per_step_batches", False)) != (workers > 0):
            drawn = (
                "worker processes (workers >= 1)" if workers == 0 else "this process (workers 0)"
            )
            raise EmsegValueError(
                f"`resume`: the run in {str(out_p)!r} drew its batches in {drawn}; resume it "
                "with the same choice, or its batches would not continue the same sequence."
            )
    model.network.train()
    precision = state["precision"]
    if precision is None:
        precision = cfg.precision
        if precision == "auto":
            x, t, m = _batch(run, samplers, np.random.default_rng(cfg.seed + 1), model, dev)
            precision, timings = choose_precision(model, x, t, m)
            log.info(
                "precision auto: %s (fp32 %.3fs, bf16 %.3fs per step)",
                precision,
                timings["fp32"],
                timings["bf16"],
            )
            state["precision_timings"] = timings
        state["precision"] = precision
    model.provenance.update({"name": cfg.name, "precision": precision, "device": _describe(dev)})
    higher = cfg.validation.metric != "pixel_error"
    history: list[dict[str, Any]] = state["history"]
    t_start = time.perf_counter() - float(state.get("elapsed_s", 0.0))
    bar = tqdm(
        total=s.steps, initial=state["step"], disable=not progress, desc=cfg.name, unit="step"
    )
    stopped_early = False
    step = state["step"]
    pool = None
    if workers:
        pin = dev.type == "cuda"
        pool = _BatchPool(run, samplers, model.intensity, workers, step + 1, pin_memory=pin)
    try:
        while step < s.steps:
            if pool is None:
                x, t, m = _batch(run, samplers, rng, model, dev)
            else:
                x, t, m = _to_tensors(pool.get(step + 1), cfg.network.dim, dev)
            opt.zero_grad(set_to_none=True)
            loss = _loss(model, x, t, m, precision == "bf16")
            loss.backward()
            if cfg.optimiser.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.optimiser.grad_clip)
            opt.step()
            sched.step()
            step += 1
            row: dict[str, Any] = {
                "step": step,
                "lr": opt.param_groups[0]["lr"],
                "loss": float(loss.detach()),
            }
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
            validate = run.val_image is not None and (
                step % cfg.validation.every == 0 or step == s.steps
            )
            if validate:
                model.network.eval()
                scores = evaluate(
                    model,
                    run.val_image,
                    run.val_labels,
                    tile_shape=cfg.validation.tile_shape,
                    overlap=cfg.validation.overlap,
                )
                model.network.train()
                row.update({f"val_{k}": v for k, v in scores.items()})
                value = scores.get(cfg.validation.metric, float("nan"))
                better = state["best"] is None or (
                    value > state["best"] if higher else value < state["best"]
                )
                if better and math.isfinite(value):
                    state.update(best=value, best_scores=scores, best_step=step, bad_evals=0)
                    model.provenance["validation"] = {"step": step, **scores}
                    model.save(out_p / "checkpoints" / "best", overwrite=True)
                else:
                    state["bad_evals"] += 1
                log.info("step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
            history.append(row)
            state["step"] = step
            stop_now = stop_after is not None and step >= stop_after
            patience = cfg.validation.patience
            if patience is not None and state["bad_evals"] >= patience:
                stopped_early = stop_now = True
                log.info(
                    "early stopping at step %d (no improvement in %d validations)", step, patience
                )
            if step % cfg.checkpoint_every == 0 or step == s.steps or stop_now:
                state["elapsed_s"] = time.perf_counter() - t_start
                _save_checkpoint(last, model, opt, sched, rng, state)
                _write_logs(out_p, history)
            if stop_now:
                break
    finally:
        bar.close()
        if pool is not None:
            pool.close()
    _write_logs(out_p, history)
    if history:
        plot_curves(history, out_p / "curves.png")
    finished = step >= s.steps or stopped_early
    final = model
    if (out_p / "checkpoints" / "best" / "model.safetensors").is_file() and finished:
        final = Model.load(out_p / "checkpoints" / "best")
    if finished:
        final.provenance.update(
            {
                "steps": step,
                "stopped_early": stopped_early,
                "train_seconds": round(time.perf_counter() - t_start, 1),
            }
        )
        final.save(out_p, overwrite=True)
        card = {
            "name": cfg.name,
            **cfg.card,
            "classes": list(cfg.data.class_names),
            "spacing_nm": list(run.spacing),
            "validation": dict(state["best_scores"]),
            "validation_step": state.get("best_step"),
            "steps": step,
            "precision": precision,
        }
        (out_p / "card.json").write_text(json.dumps(card, indent=2))
    return TrainResult(final, out_p, step, dict(state["best_scores"]), history, precision)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _restore(
    last: Path,
    cfg: TrainConfig,
    model: Model,
    opt: torch.optim.Optimizer,
    sched: Any,
    rng: np.random.Generator,
) -> dict[str, Any]:
    saved = Model.load(last)
    if from_dict(TrainConfig, saved.config.to_dict()) != cfg:
        raise EmsegValueError(
            f"`resume`: the config differs from the checkpoint's in {str(last)!r}; resume with the "
            "same config, or start a new run."
        )
    model.network.load_state_dict(saved.network.state_dict())
    model.intensity = saved.intensity
    model.provenance = dict(saved.provenance)
    state = json.loads((last / "state.json").read_text())
    tensors = load_tensors(last / "optimizer.safetensors")
    torch_rng = tensors.pop("torch_rng_state", None)
    if torch_rng is None:
        raise FormatError(f"{str(last)!r}: optimizer.safetensors lacks the torch random state.")
    torch.set_rng_state(torch_rng)
    _adamw_load(opt, tensors, state.pop("optimizer"))
    sched.load_state_dict({**state.pop("scheduler"), "lr_lambdas": [None]})
    rng.bit_generator.state = state.pop("numpy_rng")
    log.info("resumed from step %d", state["step"])
    return state
