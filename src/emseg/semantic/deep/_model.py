"""A trained network with everything needed to use it: :class:`Model`, save / load, transfer.

A saved model is a folder with

- ``model.safetensors``: the weights (and batch-norm statistics), metadata
  ``format = "emseg.deep"``;
- ``config.json``: the training config, class names, spacing (nm), input
  normalisation and provenance.

Loading parses JSON and copies tensors with `safetensors`; nothing is ever
unpickled, so a model file cannot run code. A file that is not safetensors
(e.g. a renamed pickle) is refused with :class:`~emseg.errors.FormatError`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError, OutputExistsError
from emseg.semantic.deep._config import TrainConfig, from_dict
from emseg.semantic.deep._data import Intensity
from emseg.semantic.deep._lsd import n_lsd_channels
from emseg.semantic.deep._networks import UNet, anisotropic_plan, isotropic_plan

log = logging.getLogger(__name__)

FORMAT = "emseg.deep"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def n_outputs(config: TrainConfig) -> int:
    """Output channels of the network's head."""
    head = config.network.head
    k = len(config.data.class_names)
    if head == "softmax":
        return k
    if head == "sigmoid":
        return max(1, k - 1)
    if head == "boundary":
        return 1
    return len(config.network.offsets)


def output_names(config: TrainConfig) -> list[str]:
    """One name per output channel (class names, boundary, or affinity offsets)."""
    head = config.network.head
    names = list(config.data.class_names)
    if head == "softmax":
        return names
    if head == "sigmoid":
        return names[1:] or names
    if head == "boundary":
        return ["boundary"]
    return ["affinity_" + "_".join(str(o) for o in off) for off in config.network.offsets]


def build_network(config: TrainConfig, spacing: tuple[float, ...]) -> UNet:
    """The U-Net described by ``config.network`` (anisotropic levels from `spacing`)."""
    net = config.network
    depth = len(net.channels)
    if net.anisotropic:
        sp = tuple(spacing)[-3:] if len(spacing) >= 3 else (1.0, 1.0, 1.0)
        plan = anisotropic_plan(sp, depth)
    else:
        plan = isotropic_plan(net.dim, depth)
    return UNet(
        net.dim,
        1,
        n_outputs(config),
        net.channels,
        plan=plan,
        norm=net.norm,
        residual=net.residual,
        deep_supervision=net.deep_supervision,
        aux_channels=n_lsd_channels(net.dim) if net.lsd_sigma_nm else 0,
    )


@dataclass(eq=False)
class Model:
    """A network with its config, spacing (nm), input normalisation and provenance.

    Attributes
    ----------
    network : UNet
    config : TrainConfig
    spacing : tuple of float
        Voxel size (nm, z-y-x) of the training data.
    intensity : Intensity
        ``(x - mean) / std`` applied to grey levels before the network.
    provenance : dict
        What produced the model (data, steps, scores).
    """

    network: UNet
    config: TrainConfig
    spacing: tuple[float, ...]
    intensity: Intensity
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        *,
        spacing: tuple[float, ...],
        intensity: Intensity,
        seed: int | None = None,
    ) -> Model:
        """A freshly initialised model (weights from ``torch.manual_seed(seed)``)."""
        if seed is not None:
            torch.manual_seed(seed)
        return cls(build_network(config, spacing), config, tuple(spacing), intensity, {})

    @property
    def head(self) -> str:
        return self.config.network.head

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config.data.class_names)

    @property
    def output_names(self) -> list[str]:
        return output_names(self.config)

    @property
    def dim(self) -> int:
        """Spatial dimensions of the network (2 or 3)."""
        return self.network.ndim

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from logits: softmax over channels, or sigmoid per channel."""
        if self.head == "softmax":
            return torch.softmax(logits.float(), dim=1)
        return torch.sigmoid(logits.float())

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "spacing": list(self.spacing),
            "intensity": self.intensity.to_dict(),
            "output_names": self.output_names,
            "provenance": self.provenance,
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into folder `path`."""
        from safetensors.torch import save_file

        p = Path(path)
        if (p / WEIGHTS).exists() and not overwrite:
            raise OutputExistsError(f"a model exists in {str(p)!r}; pass overwrite=True.")
        p.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.network.state_dict().items()}
        tmp = p / (WEIGHTS + ".tmp")
        save_file(state, str(tmp), metadata={"format": FORMAT})
        os.replace(tmp, p / WEIGHTS)
        (p / CONFIG).write_text(json.dumps(self.metadata(), indent=2))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model:
        """Read a model folder written by :meth:`save` (or its ``model.safetensors``).

        Raises
        ------
        DatasetNotFoundError
            No model there.
        FormatError
            The weights are not a safetensors file of format ``emseg.deep``, or
            do not fit the config.
        """
        p = Path(path)
        if p.is_file():
            p = p.parent
        if not (p / WEIGHTS).is_file() or not (p / CONFIG).is_file():
            raise DatasetNotFoundError(
                f"no emseg model in {str(p)!r}: it needs {WEIGHTS} and {CONFIG}."
            )
        meta = json.loads((p / CONFIG).read_text())
        if meta.get("format") != FORMAT:
            raise FormatError(
                f"{str(p / CONFIG)!r} is not an emseg deep model (format {meta.get('format')!r})."
            )
        config: TrainConfig = from_dict(TrainConfig, meta["config"])
        spacing = tuple(float(s) for s in meta["spacing"])
        state = load_tensors(p / WEIGHTS)
        net = build_network(config, spacing)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise FormatError(f"{str(p / WEIGHTS)!r} does not fit its config: {exc}") from None
        net.eval()
        intensity = Intensity(**meta["intensity"])
        return cls(net, config, spacing, intensity, dict(meta.get("provenance", {})))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device that `device` names: "auto" (CUDA when PyTorch sees a GPU, else the
    CPU), "cpu", "cuda" or "cuda:N"; anything else, or a GPU that is not there, is refused."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise EmsegValueError(f"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {name!r}.")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise EmsegValueError(
                f"`device` {name!r}: PyTorch sees no CUDA GPU here (this torch build or machine "
                "has none); use device 'cpu' or 'auto'."
            )
        if dev.index is not None and dev.index >= n:
            raise EmsegValueError(
                f"`device` {name!r}: PyTorch sees {n} CUDA GPU(s), numbered 0..{n - 1}."
            )
    return dev


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; anything else (a pickle) is a FormatError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        raise FormatError(
            f"{str(p)!r} is not a safetensors file (it may be a pickle, which emseg never loads)."
        )
    try:
        return load_file(str(p))
    except (SafetensorError, ValueError, OSError) as exc:
        raise FormatError(f"{str(p)!r} is not a valid safetensors file: {exc}") from None


def init_from(
    model: Model, source: Model | str | os.PathLike[str], *, freeze_encoder: bool = False
) -> dict[str, int]:
    """Transfer learning: copy every tensor of `source` whose name and shape fit `model`.

    Parameters
    ----------
    model : Model
        Changed in place.
    source : Model, path or shipped model name
    freeze_encoder : bool
        Stop gradients of the encoder (contracting path) parameters.

    Returns
    -------
    dict
        ``{"copied": n, "skipped": m, "frozen": k}`` tensor counts.
    """
    if not isinstance(source, Model):
        from emseg.semantic.deep._registry import load_model

        source = load_model(source)
    src = source.network.state_dict()
    dst = model.network.state_dict()
    copied = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    model.network.load_state_dict(copied, strict=False)
    frozen = 0
    if freeze_encoder:
        for p in model.network.encoder_parameters():
            p.requires_grad_(False)
            frozen += 1
    log.info("init_from: copied %d tensors, skipped %d", len(copied), len(dst) - len(copied))
    return {"copied": len(copied), "skipped": len(dst) - len(copied), "frozen": frozen}
