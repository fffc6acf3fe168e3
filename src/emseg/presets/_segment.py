"""``segment``: raw EM -> probabilities -> instances with a preset, blockwise and resumable.

The output folder ``OUT`` holds (the "state layout")::

    OUT/segment.json            what ran: preset, image, spacing, stages done
    OUT/probabilities.ome.zarr  (C, Z, Y, X) uint8 round(255 p), channel names = classes
    OUT/instances.ome.zarr      watershed / agglomeration before the size filter
                                (only when the preset removes small objects)
    OUT/labels.ome.zarr         uint64 instances 1..N, provenance naming the preset

Every stage is a job of the blockwise engine with its own journal, so a
killed run continues with ``resume=True``: finished stages are skipped and a
stage that was interrupted redoes only its missing blocks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emseg.blockwise import SchedulerLike
from emseg.errors import EmsegValueError, OutputExistsError
from emseg.presets._preset import Preset, load_preset

log = logging.getLogger(__name__)

STATE = "segment.json"
PROBABILITIES = "probabilities.ome.zarr"
INSTANCES = "instances.ome.zarr"
LABELS = "labels.ome.zarr"
#: Everything `segment` writes in OUT (removed by ``overwrite``).
OUTPUTS = (STATE, PROBABILITIES, INSTANCES, INSTANCES + ".scratch", LABELS, LABELS + ".scratch")


@dataclass(frozen=True)
class SegmentResult:
    """What :func:`segment` wrote.

    Attributes
    ----------
    out : Path
        The output folder.
    probabilities, labels : Path
        The probability map (uint8, ``p = q / 255``) and the uint64 instances.
    n_objects : int
        Number of instances.
    preset : str
        The preset's name.
    spacing : tuple of float
        Voxel size (nm) the image was processed at.
    seconds : dict of str to float
        Wall time of each stage of this call.
    """

    out: Path
    probabilities: Path
    labels: Path
    n_objects: int
    preset: str
    spacing: tuple[float, ...]
    seconds: dict[str, float]


class _Spaced:
    """An array with a spacing attribute (blockwise jobs read it as the input's geometry)."""

    def __init__(self, array: Any, spacing: tuple[float, ...]) -> None:
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.spacing = spacing
        self.axes = str(getattr(array, "axes", "zyx"[-len(self.shape) :]))
        if hasattr(array, "chunks"):
            self.chunks = tuple(array.chunks)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.array[key])


class ProbabilityChannel:
    """One channel of a uint8 probability map, read as float32 ``q / 255`` block by block.

    Thresholds of a preset are probabilities in [0, 1] whatever the stored dtype.
    """

    def __init__(self, array: Any, channel: int, spacing: tuple[float, ...]) -> None:
        self.array = array
        self.channel = int(channel)
        self.shape = tuple(int(s) for s in array.shape[1:])
        self.dtype = np.dtype(np.float32)
        self.spacing = spacing
        self.chunks = tuple(int(c) for c in array.chunks[1:])

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        data = np.asarray(self.array[(self.channel, *key)])
        if data.dtype == np.uint8:
            return data.astype(np.float32) / np.float32(255.0)
        return data.astype(np.float32)


def _open_input(image: Any, spacing: Any) -> Any:
    from emseg._checks import parse_spacing
    from emseg.io import open_image

    if isinstance(image, str | os.PathLike):
        image = open_image(image, spacing=spacing)
        spacing = image.spacing
    if "c" in str(getattr(image, "axes", "")):
        raise EmsegValueError(
            f"`image` must be a grey-level (Z, Y, X) or (Y, X) image; got axes "
            f"{image.axes!r}, shape {tuple(image.shape)}. Pick one channel first."
        )
    if not (hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__")):
        raise EmsegValueError(
            f"`image` must be a path or an array (numpy, zarr, LazyImage); got {type(image)!r}."
        )
    sp = spacing if spacing is not None else getattr(image, "spacing", None)
    if sp is None:
        raise EmsegValueError(
            "`spacing` is required for an array without one (nm per axis, z y x): presets "
            "work in physical units."
        )
    return _Spaced(image, parse_spacing(sp, len(image.shape)))


def check_preset_spacing(
    preset: Preset, spacing: tuple[float, ...], *, rescale: bool = False
) -> None:
    """Refuse an image whose spacing is not the preset's training spacing, unless `rescale`.

    The rule of ``emseg predict`` / :meth:`PixelClassifier.check_spacing`:
    equal within a relative 1e-3 per axis.

    Raises
    ------
    EmsegValueError
    """
    want = preset.spacing[-len(spacing) :] if len(preset.spacing) >= len(spacing) else None
    if want is None or len(want) != len(spacing):
        raise EmsegValueError(
            f"preset {preset.name!r} was trained on {len(preset.spacing)}D data; got a "
            f"{len(spacing)}D image."
        )
    if not np.allclose(spacing, want, rtol=1e-3, atol=0) and not rescale:
        raise EmsegValueError(
            f"the image's `spacing` {tuple(spacing)} nm differs from the spacing preset "
            f"{preset.name!r} was trained at, {tuple(want)} nm. Resample the image (or give its "
            "true spacing with --spacing), or pass rescale=True (--rescale) to run anyway: a "
            "forest computes its features at the same nm scales on this grid, a deep model sees "
            "the image on its own grid; instance sizes stay in nm. Accuracy may drop."
        )


def _prepare_out(out: Path, state: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise EmsegValueError("`resume` and `overwrite` exclude each other; pass one of them.")
    existing = [out / n for n in OUTPUTS if (out / n).exists()]
    if existing and not (resume or overwrite):
        raise OutputExistsError(
            f"`out`={str(out)!r} already holds a segmentation ({existing[0].name}). Pass "
            "overwrite=True (--overwrite) to replace it, or resume=True (--resume) to finish "
            "an interrupted run."
        )
    if resume and (out / STATE).is_file():
        old = json.loads((out / STATE).read_text())
        diff = [k for k in ("preset", "image", "spacing") if old.get(k) != state.get(k)]
        if diff:
            raise EmsegValueError(
                f"cannot resume {str(out)!r}: it was started with another "
                + ", ".join(f"{k} ({old.get(k)!r}, now {state.get(k)!r})" for k in diff)
                + ". Pass overwrite=True (--overwrite) to start again."
            )
    if overwrite:
        for p in existing:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_state(out: Path, state: dict[str, Any]) -> None:
    tmp = out / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, allow_nan=False) + "\n")
    tmp.replace(out / STATE)


def _stamp(path: Path, provenance: dict[str, Any]) -> None:
    """Add the preset's provenance to an OME-Zarr's ``emseg`` group attributes."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    old = group.attrs.get("emseg", {})
    attrs: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
    attrs.update(provenance)
    group.attrs["emseg"] = attrs


def _channel_index(preset: Preset, names: list[str]) -> int:
    cls = str(preset.prediction["class"])
    if cls not in names:
        raise EmsegValueError(
            f"preset {preset.name!r} asks for the class {cls!r}, but its model outputs "
            f"{names}; fix `prediction.class` in {str(preset.path / 'preset.json')!r}."
        )
    return names.index(cls)


def _predict(
    preset: Preset,
    img: Any,
    path: Path,
    sp: tuple[float, ...],
    run: dict[str, Any],
    device: Any = "auto",
) -> Any:
    if preset.kind == "forest":
        from emseg.semantic import forest

        fmodel = forest.load_model(preset.model_path())
        _channel_index(preset, list(fmodel.class_names))
        return forest.predict_blockwise(
            fmodel, img, out=path, spacing=sp, rescale=True, dtype="uint8", **run
        )
    from emseg.semantic import deep

    if preset.is_ensemble:
        members = _members(preset)
        _channel_index(preset, list(members[0].model.output_names))
        return deep.predict_blockwise(members, img, out=path, dtype="uint8", device=device, **run)
    dmodel = deep.load_model(preset.model_path())
    _channel_index(preset, list(dmodel.output_names))
    return deep.predict_blockwise(
        dmodel,
        img,
        out=path,
        dtype="uint8",
        tta=preset.prediction.get("tta", False),
        planes=int(preset.prediction.get("planes", 1)),
        device=device,
        **run,
    )


def _members(preset: Preset) -> tuple[Any, ...]:
    """The ensemble's :class:`~emseg.semantic.deep.Member` list, checked.

    Same outputs and training spacing (:func:`emseg.semantic.deep.predict_members`'s
    rule), a 2D model for ``planes: 3``, and that common spacing equal to the
    preset's `spacing` (relative 1e-3): the preset's spacing check stands for
    every member.
    """
    from emseg.semantic import deep
    from emseg.semantic.deep._ensemble import check_members

    where = str(preset.path / "preset.json")
    members = []
    for i, (entry, path) in enumerate(zip(preset.members, preset.model_paths(), strict=True)):
        model = deep.load_model(path)
        if entry["planes"] == 3 and model.dim != 2:
            raise EmsegValueError(
                f"preset {preset.name!r}: `prediction.members[{i}]` ({entry['model']}) asks for "
                f"planes 3 (tri-planar), which needs a 2D network; {entry['model']} is "
                f"{model.dim}D. Set its planes to 1 in {where!r}."
            )
        members.append(
            deep.Member(
                model, planes=entry["planes"], tta=entry["tta"], weight=entry.get("weight", 1.0)
            )
        )
    try:
        out = check_members(members)
    except EmsegValueError as exc:
        raise EmsegValueError(f"preset {preset.name!r} ({where!r}): {exc}") from None
    common = tuple(out[0].model.spacing)
    want = preset.spacing
    if len(common) != len(want) or not np.allclose(common, want, rtol=1e-3, atol=0):
        raise EmsegValueError(
            f"preset {preset.name!r}: its members were trained at {common} nm but its "
            f"`spacing` is {want} nm; set `spacing` in {where!r} to the members' spacing."
        )
    return out


def _channel_names(preset: Preset) -> list[str]:
    if preset.kind == "forest":
        from emseg.semantic import forest

        return list(forest.load_model(preset.model_path()).class_names)
    from emseg.semantic import deep

    if preset.is_ensemble:
        return list(_members(preset)[0].model.output_names)
    return list(deep.load_model(preset.model_path()).output_names)


def _halo(preset: Preset, sp: tuple[float, ...]) -> tuple[int, ...]:
    halo_nm = preset.instances.get("halo_nm")
    if halo_nm is None:
        raise EmsegValueError(
            f"preset {preset.name!r} uses {preset.method!r}, which runs with a halo: "
            "`instances.halo_nm` is missing in its preset.json."
        )
    h = [float(halo_nm)] * len(sp) if isinstance(halo_nm, int | float) else list(halo_nm)
    h = h[-len(sp) :]
    return tuple(max(1, math.ceil(v / s)) for v, s in zip(h, sp, strict=True))


def _instances(
    preset: Preset,
    prob: ProbabilityChannel,
    path: Path,
    sp: tuple[float, ...],
    run: dict[str, Any],
) -> Any:
    from emseg import instance

    inst = preset.instances
    method = preset.method
    if method == "components":
        params = dict(inst["components"])
        top = float(inst.get("min_size_nm3", 0.0) or 0.0)
        own = params.pop("min_size_nm3", None)
        min_size = max(top, float(own or 0.0)) or None
        return instance.components_blockwise(
            prob, out=path, spacing=sp, min_size_nm3=min_size, **params, **run
        )
    halo = _halo(preset, sp)
    if method == "watershed":
        return instance.watershed_blockwise(
            prob, out=path, halo=halo, spacing=sp, **inst["watershed"], **run
        )
    agg = inst["agglomeration"]
    edges = agg.get("edges", "mean")
    if edges not in ("mean", "learned"):
        raise EmsegValueError(
            f"preset {preset.name!r}: `instances.agglomeration.edges` must be 'mean' or "
            f"'learned'; got {edges!r}."
        )
    clf = None
    if edges == "learned":
        name = agg.get("edge_classifier")
        if not name or not (preset.path / str(name)).is_file():
            raise EmsegValueError(
                f"preset {preset.name!r} uses learned edges but its edge classifier "
                f"{name!r} is not a file in {str(preset.path)!r}."
            )
        if not hasattr(instance, "load_edge_classifier"):
            raise EmsegValueError(
                "this emseg has no emseg.instance.load_edge_classifier; the preset's learned "
                "edges cannot be read."
            )
        clf = str(preset.path / str(name))
    sv = dict(inst["supervoxels"])
    # one global graph (emseg.instance._graph_blockwise): exact for any block shape
    return instance.agglomerate_blockwise(
        prob,
        out=path,
        halo=halo,
        threshold=float(agg["threshold"]),
        edge_classifier=clf,
        merge_small_nm3=agg.get("merge_small_nm3"),
        linkage=agg.get("linkage", "mean"),
        spacing=sp,
        seeds=sv.get("seeds", "minima"),
        sigma_nm=sv.get("sigma_nm"),
        min_seed_distance_nm=float(sv.get("min_seed_distance_nm", 0.0)),
        seed_threshold=float(sv.get("threshold", 0.5)),
        **_instance_run(preset, prob.shape, path, run),
    )


def _instance_run(
    preset: Preset, shape: tuple[int, ...], path: Path, run: dict[str, Any]
) -> dict[str, Any]:
    """`run` with the preset's default block size (``instances.block_voxels``) when none is given.

    Agglomeration builds one global graph, exact for any block shape on the
    fragments it cuts at block faces, so ``block_voxels`` is no longer needed
    for correctness; it is still read (older presets) and only sets the size
    of the blocks (a volume no larger than it is one block: in-memory
    fragments). Without it the engine's default blocks (2**21 voxels) apply.
    """
    target = preset.instances.get("block_voxels")
    if run["block_shape"] is not None or not target:
        return run
    from emseg.blockwise import default_block_shape, resolve_chunks

    chunks = resolve_chunks(path, run["chunks"], shape)  # as segment_blockwise resolves them
    block = default_block_shape(shape, chunks, target_voxels=int(target))
    return {**run, "block_shape": block}


def _sizes(labels: np.ndarray) -> Any:
    from emseg.blockwise import SparseCounts

    return SparseCounts.from_arrays(labels)


def _merge(a: Any, b: Any) -> Any:
    return a.merge(b)


def remove_small(
    labels: Any, *, out: Path, min_size_nm3: float, spacing: tuple[float, ...], run: dict[str, Any]
) -> Any:
    """Drop objects below `min_size_nm3` (exact global sizes) and renumber ``1..N``, blockwise."""
    from emseg.blockwise import SparseCounts, reduce_blocks, relabel

    counts = reduce_blocks(
        _sizes,
        labels,
        merge=_merge,
        empty=SparseCounts(np.zeros((0, 1), np.uint64), np.zeros(0, np.int64)),
        block_shape=run["block_shape"],
        n_workers=run["n_workers"],
        scheduler=run["scheduler"],
        progress=False,
    )
    ids = counts.keys[:, 0].astype(np.uint64)
    voxel = float(np.prod(spacing))
    keep = (ids != 0) & (counts.counts * voxel >= min_size_nm3)
    new = np.zeros(ids.size, np.uint64)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint64)
    result = relabel(labels, (ids.tolist(), new.tolist()), out=str(out), **run)
    attrs = dict(result.attrs.get("emseg", {}) or {})
    attrs["n_labels"] = int(keep.sum())
    result.attrs["emseg"] = attrs
    return result


def segment(
    image: Any,
    preset: str | os.PathLike[str] | Preset,
    out: str | os.PathLike[str],
    *,
    spacing: Any = None,
    rescale: bool = False,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: Any = "auto",
) -> SegmentResult:
    """From raw EM to instances with a preset: blockwise prediction, then instances.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) grey-level image: path (any format emseg reads), LazyImage or array
        Read block by block; never rescaled in intensity.
    preset : str, path or Preset
        A shipped preset's name (:func:`list_presets`) or a preset directory.
    out : str or path
        Output folder (see the module docstring for its layout).
    spacing : sequence of float, optional
        Voxel size in nm (z, y, x); overrides the file's. Required for a
        plain array.
    rescale : bool, default False
        Run on an image whose spacing differs from the preset's training
        spacing (see :func:`check_preset_spacing`); refused otherwise.
    block_shape, chunks
        Blocks and (spatial) chunks of both stages; defaults as for the
        prediction and instance functions.
    n_workers, scheduler, progress
        As for :func:`emseg.blockwise.map_blocks` (threads, or a Dask
        ``distributed`` scheduler address).
    resume : bool, default False
        Continue a killed run in `out`: finished stages are skipped and
        finished blocks of the interrupted stage are kept.
    overwrite : bool, default False
        Replace an earlier segmentation in `out`.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default "auto"
        Where a deep preset's networks run ("auto": a CUDA GPU when PyTorch
        sees one; see :func:`emseg.semantic.deep.predict_image`). Forest
        presets run on the CPU and ignore it.

    Returns
    -------
    SegmentResult
        ``labels`` is a (Z, Y, X) uint64 OME-Zarr, 0 = background; its
        ``emseg`` attributes name the preset, the model (``members`` for an
        ensemble preset: the mean of several deep models' maps) and the image.

    Raises
    ------
    DatasetNotFoundError
        Unknown preset (the message lists the shipped ones) or a preset whose
        model (or a member's) is not installed.
    EmsegValueError
        Ensemble members with different outputs or training spacings, a
        common spacing other than the preset's, or planes 3 for a 3D member.
        An image whose spacing is not the preset's (without `rescale`), a
        multi-channel image, resume and overwrite together.
    OutputExistsError
        `out` holds a segmentation and neither `resume` nor `overwrite` is set.
    """
    from emseg import __version__

    p = load_preset(preset)
    img = _open_input(image, spacing)
    if len(img.shape) not in (2, 3):
        raise EmsegValueError(
            f"`image` must be a grey-level (Z, Y, X) or (Y, X) image; got shape {img.shape}."
        )
    sp = tuple(float(s) for s in img.spacing)
    check_preset_spacing(p, sp, rescale=rescale)
    channel = _channel_index(p, _channel_names(p))  # also: the model is installed
    if p.kind != "forest":
        from emseg.semantic.deep import resolve_device

        resolve_device(device)  # a missing GPU is refused before `out` is touched
    out = Path(out)
    if isinstance(image, str | os.PathLike):
        source = str(image)
    else:
        source = str(getattr(image, "source", "") or type(image).__name__)
    state: dict[str, Any] = {
        "format": "emseg.segment",
        "preset": p.name,
        "image": source,
        "spacing": list(sp),
    }
    _prepare_out(out, state, resume=resume, overwrite=overwrite)
    state.update(
        {
            "preset_path": str(p.path),
            "preset_document": p.document,
            "emseg": __version__,
            "stages": {},
            "complete": False,
        }
    )
    if resume and (out / STATE).is_file():
        state["stages"] = json.loads((out / STATE).read_text()).get("stages", {})
    _write_state(out, state)
    run: dict[str, Any] = {
        "block_shape": block_shape,
        "chunks": chunks,
        "n_workers": n_workers,
        "scheduler": scheduler,
        "resume": resume,
        "progress": progress,
    }
    provenance = {
        "produced_by": "emseg segment",
        "preset": p.name,
        **(
            {"members": [dict(m) for m in p.members]}
            if p.is_ensemble
            else {"model": p.prediction["model"]}
        ),
        "image": source,
        "emseg_version": __version__,
    }
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    probs_path = out / PROBABILITIES
    probs = _predict(p, img, probs_path, sp, run, device)
    _stamp(probs_path, {**provenance, "stage": "prediction"})
    seconds["predict"] = round(time.perf_counter() - t0, 3)
    state["stages"]["predict"] = {"done": True, "output": PROBABILITIES}
    _write_state(out, state)

    t0 = time.perf_counter()
    prob = ProbabilityChannel(probs, channel, sp)
    min_size = float(p.instances.get("min_size_nm3", 0.0) or 0.0)
    labels_path = out / LABELS
    if p.method != "components" and min_size > 0:
        raw = _instances(p, prob, out / INSTANCES, sp, run)
        result = remove_small(raw, out=labels_path, min_size_nm3=min_size, spacing=sp, run=run)
    else:
        result = _instances(p, prob, labels_path, sp, run)
    n = int((result.attrs.get("emseg", {}) or {})["n_labels"])
    _stamp(labels_path, {**provenance, "stage": "instances", "method": p.method, "n_labels": n})
    seconds["instances"] = round(time.perf_counter() - t0, 3)
    state["stages"]["instances"] = {"done": True, "output": LABELS, "n_objects": n}
    state["complete"] = True
    _write_state(out, state)
    log.info("segment %s: %d objects in %s", p.name, n, labels_path)
    return SegmentResult(
        out=out,
        probabilities=probs_path,
        labels=labels_path,
        n_objects=n,
        preset=p.name,
        spacing=sp,
        seconds=seconds,
    )
