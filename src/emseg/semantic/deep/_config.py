"""Training configuration: frozen dataclasses loaded from YAML / JSON.

Every field has a default except the data paths. Loading checks each field's
type and value and names the bad field by its dotted path
(``network.channels``, ``augment.elastic_prob``), lists unknown fields with
the valid ones, and never evaluates anything (``yaml.safe_load``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from emseg.errors import DatasetNotFoundError, EmsegTypeError, EmsegValueError


class ConfigError(EmsegValueError):
    """A configuration field has a wrong type or value; the message names the field."""


def _fail(path: str, msg: str) -> ConfigError:
    return ConfigError(f"config field `{path}`: {msg}")


@dataclass(frozen=True)
class DataConfig:
    """Where the training data is and how patches are drawn.

    ``label_map`` maps raw label values to class indices 0..K-1 (keys are
    raw values); raw values not in the map, and ``ignore_label``, are ignored
    by the loss (sparse labels). Empty map: raw values are the classes.
    ``train_z`` / ``val_z`` are ``[start, stop)`` section ranges of the same
    volume (or of ``val_image`` / ``val_labels`` when given).

    ``orientations`` lists the views of the training slab that patches are
    drawn from, each an axis order of ``"zyx"`` whose first axis is the one
    sliced: ``"zyx"`` (xy planes, the default), ``"yzx"`` (zx planes) and
    ``"xzy"`` (zy planes). All three train a 2D network for tri-planar
    prediction of isotropic volumes (``predict_image(..., planes=3)``).
    Each batch comes from one orientation drawn at random; views other than
    ``"zyx"`` read the training slab into memory.
    """

    image: str = ""
    labels: str = ""
    class_names: tuple[str, ...] = ("background", "foreground")
    label_map: dict[int, int] = field(default_factory=dict)
    ignore_label: int | None = None
    spacing: tuple[float, ...] | None = None
    train_z: tuple[int, int] | None = None
    val_z: tuple[int, int] | None = None
    val_image: str | None = None
    val_labels: str | None = None
    patch_shape: tuple[int, ...] = (1, 256, 256)
    batch_size: int = 4
    foreground_fraction: float = 0.33
    samples_per_class: int = 100_000
    orientations: tuple[str, ...] = ("zyx",)

    def __post_init__(self) -> None:
        if not self.orientations or len(set(self.orientations)) != len(self.orientations):
            raise _fail(
                "data.orientations",
                f"must list distinct orientations; got {list(self.orientations)}",
            )
        for o in self.orientations:
            if sorted(o) != ["x", "y", "z"]:
                raise _fail(
                    "data.orientations",
                    f"each entry is an axis order of 'zyx' (e.g. 'zyx', 'yzx', 'xzy'); got {o!r}",
                )
        if len(self.class_names) < 1:
            raise _fail("data.class_names", "needs at least one class name")
        if len(self.patch_shape) not in (2, 3) or any(p < 1 for p in self.patch_shape):
            raise _fail("data.patch_shape", f"must be 2 or 3 positive ints; got {self.patch_shape}")
        for name in ("train_z", "val_z"):
            r = getattr(self, name)
            if r is not None and (len(r) != 2 or r[0] < 0 or r[1] <= r[0]):
                raise _fail(
                    f"data.{name}", f"must be [start, stop) with 0 <= start < stop; got {r}"
                )
        if self.batch_size < 1:
            raise _fail("data.batch_size", f"must be >= 1; got {self.batch_size}")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise _fail(
                "data.foreground_fraction", f"must be in [0, 1]; got {self.foreground_fraction}"
            )
        for k, v in self.label_map.items():
            if not 0 <= v < len(self.class_names):
                raise _fail(
                    "data.label_map",
                    f"value {k}: {v} is not a class index 0..{len(self.class_names) - 1}",
                )


@dataclass(frozen=True)
class NetworkConfig:
    """The U-Net: see :class:`emseg.semantic.deep.UNet` and the heads in ``docs/deep.md``."""

    dim: Literal[2, 3] = 2
    channels: tuple[int, ...] = (16, 32, 64, 128)
    norm: Literal["batch", "instance", "group", "none"] = "batch"
    residual: bool = False
    anisotropic: bool = False
    deep_supervision: bool = False
    head: Literal["softmax", "sigmoid", "boundary", "affinities"] = "softmax"
    offsets: tuple[tuple[int, ...], ...] = ()
    lsd_sigma_nm: float | None = None

    def __post_init__(self) -> None:
        if self.lsd_sigma_nm is not None:
            if self.head not in ("boundary", "affinities"):
                raise _fail(
                    "network.lsd_sigma_nm",
                    "local shape descriptors are computed from instance labels: they need head "
                    f"boundary or affinities, not {self.head!r}",
                )
            if not self.lsd_sigma_nm > 0:
                raise _fail("network.lsd_sigma_nm", f"must be > 0 nm; got {self.lsd_sigma_nm}")
        if not self.channels or any(c < 1 for c in self.channels):
            raise _fail("network.channels", f"must be positive ints; got {self.channels}")
        if self.anisotropic and self.dim != 3:
            raise _fail("network.anisotropic", "needs dim: 3")
        if self.head == "affinities" and not self.offsets:
            raise _fail(
                "network.offsets", "the affinities head needs offsets, e.g. [[0,0,-1],[0,-1,0]]"
            )
        for o in self.offsets:
            if len(o) != 3:
                raise _fail("network.offsets", f"each offset needs 3 entries (z, y, x); got {o}")


@dataclass(frozen=True)
class LossConfig:
    """``dice_ce`` (softmax), ``ce``, ``bce`` and ``dice_bce`` (sigmoid heads)."""

    kind: Literal["dice_ce", "ce", "bce", "dice_bce"] = "dice_ce"
    dice_weight: float = 1.0
    class_weights: tuple[float, ...] | None = None
    deep_supervision_weights: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    lsd_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.dice_weight < 0:
            raise _fail("loss.dice_weight", f"must be >= 0; got {self.dice_weight}")
        if self.lsd_weight < 0:
            raise _fail("loss.lsd_weight", f"must be >= 0; got {self.lsd_weight}")
        if self.class_weights is not None and any(w < 0 for w in self.class_weights):
            raise _fail("loss.class_weights", f"must be >= 0; got {self.class_weights}")


@dataclass(frozen=True)
class OptimiserConfig:
    """AdamW."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 12.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise _fail("optimiser.lr", f"must be > 0; got {self.lr}")
        if self.weight_decay < 0:
            raise _fail("optimiser.weight_decay", f"must be >= 0; got {self.weight_decay}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr`` over ``steps``."""

    steps: int = 1000
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise _fail("schedule.steps", f"must be >= 1; got {self.steps}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise _fail("schedule.warmup_steps", f"must be in [0, steps]; got {self.warmup_steps}")


@dataclass(frozen=True)
class AugmentConfig:
    """EM augmentation; probabilities per patch (see :func:`augment_patch`)."""

    flips: bool = True
    rot90: bool = True
    transpose: bool = True
    elastic_prob: float = 0.0
    elastic_alpha: float = 8.0
    elastic_sigma: float = 10.0
    intensity_prob: float = 0.5
    contrast: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.15
    noise_std: float = 0.1
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    missing_section_prob: float = 0.0
    misalignment_prob: float = 0.0
    misalignment_max: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_prob") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise _fail(f"augment.{f.name}", f"must be in [0, 1]; got {getattr(self, f.name)}")


@dataclass(frozen=True)
class ValidationConfig:
    """Validation every ``every`` steps on the validation split."""

    every: int = 100
    metric: Literal["iou", "pixel_error"] = "iou"
    patience: int | None = None
    tile_shape: tuple[int, ...] | None = None
    overlap: float = 0.25
    max_sections: int | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise _fail("validation.every", f"must be >= 1; got {self.every}")
        if self.patience is not None and self.patience < 1:
            raise _fail("validation.patience", f"must be >= 1 or null; got {self.patience}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as JSON next to the model."""

    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    name: str = "model"
    seed: int = 0
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    threads: int | None = None
    checkpoint_every: int = 100
    init_from: str | None = None
    freeze_encoder: bool = False
    card: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise _fail("checkpoint_every", f"must be >= 1; got {self.checkpoint_every}")
        if (
            self.network.dim == 2
            and len(self.data.patch_shape) == 3
            and self.data.patch_shape[0] != 1
        ):
            raise _fail(
                "data.patch_shape",
                f"a 2D network takes (1, Y, X) or (Y, X) patches; got {self.data.patch_shape}",
            )
        if self.freeze_encoder and not self.init_from:
            raise _fail("freeze_encoder", "needs init_from (a model to take the encoder from)")
        softmax = self.network.head == "softmax"
        if softmax != (self.loss.kind in ("dice_ce", "ce")):
            raise _fail(
                "loss.kind",
                f"{self.loss.kind!r} does not fit head {self.network.head!r}: use dice_ce or ce "
                "with softmax, bce or dice_bce with sigmoid/boundary/affinities",
            )
        if (
            self.loss.class_weights is not None
            and softmax
            and len(self.loss.class_weights) != len(self.data.class_names)
        ):
            raise _fail(
                "loss.class_weights",
                f"needs one weight per class ({len(self.data.class_names)}); "
                f"got {self.loss.class_weights}",
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists, label_map keys as strings)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields replaced."""
        return dataclasses.replace(self, **changes)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        if errors:
            raise ConfigError(errors[-1])
        raise _fail(path, f"got {value!r}")
    if origin is Literal:
        if value not in args:
            raise _fail(path, f"must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path=path)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _fail(path, f"must be a list; got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(path, f"must have {len(args)} entries; got {list(value)!r}")
        return tuple(
            _convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, f"must be a mapping; got {value!r}")
        return {
            _convert(
                args[0],
                int(k) if args[0] is int and isinstance(k, str) and k.lstrip("-").isdigit() else k,
                f"{path}.{k}",
            ): _convert(args[1], v, f"{path}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, f"must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(path, f"must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, f"must be a string; got {value!r}")
        return value
    raise _fail(path, f"unsupported type {tp!r}")  # pragma: no cover


def from_dict(cls: type[Any], data: Any, *, path: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict, checking every field.

    Raises
    ------
    ConfigError
        Naming the dotted path of the first bad or unknown field.
    """
    where = path or "the config"
    if not isinstance(data, dict):
        raise ConfigError(f"config field `{where}`: must be a mapping; got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        bad = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"config field `{bad}`: unknown field; valid fields: {', '.join(names)}")
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - dataclass constructor
        raise ConfigError(f"config `{where}`: {exc}") from exc


def load_config(source: str | os.PathLike[str] | dict[str, Any]) -> TrainConfig:
    """Read a :class:`TrainConfig` from a YAML / JSON file or a dict.

    Relative data paths in a file are resolved against the file's folder.

    Raises
    ------
    ConfigError
        A field has a wrong type or value, or is unknown (the message names it).
    DatasetNotFoundError
        The file does not exist.
    """
    if isinstance(source, dict):
        cfg0: TrainConfig = from_dict(TrainConfig, source)
        return cfg0
    p = Path(source)
    if not p.is_file():
        raise DatasetNotFoundError(f"config file {str(p)!r} does not exist.")
    text = p.read_text()
    if p.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise EmsegTypeError(f"config file {str(p)!r} must hold a mapping at top level.")
    cfg: TrainConfig = from_dict(TrainConfig, data)
    d = cfg.data
    fixes: dict[str, Any] = {}
    for name in ("image", "labels", "val_image", "val_labels"):
        v = getattr(d, name)
        if v and "://" not in v and not Path(v).is_absolute():
            fixes[name] = str((p.parent / v).resolve())
    if fixes:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, **fixes))
    return cfg


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write `cfg` as JSON."""
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2))
