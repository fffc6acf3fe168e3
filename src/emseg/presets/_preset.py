"""Preset directories: ``preset.json`` + model files (format in ``presets/README.md``).

A preset chains a semantic model (a shipped deep model by name, or a forest
model file in the preset directory) and an instance method with its
parameters (sizes in nm / nm^3), and records the spacing of the training
data and the validation scores of the shipped settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emseg._checks import is_positive_number, tta_mode
from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError

FORMAT = "emseg.preset"
FORMAT_VERSION = 1
PRESET_FILE = "preset.json"
#: Instance methods a preset may name (``instances.method``).
METHODS = ("components", "watershed", "agglomerate")
KINDS = ("forest", "deep")


def presets_dir() -> Path:
    """The folder of shipped presets inside the installed package."""
    return Path(__file__).parent


@dataclass(frozen=True, eq=False)
class Preset:
    """A loaded preset: its directory and the parsed ``preset.json``.

    Attributes
    ----------
    name : str
        The preset's name (its directory's name).
    path : Path
        The preset directory.
    description : str
        One line for ``emseg segment --list``.
    target : str
        What it segments (``"mitochondria"``, ``"neurons"``, ...).
    spacing : tuple of float
        Voxel size (nm, z-y-x) of the training data.
    prediction : dict
        ``kind`` ("forest" or "deep"), ``model`` and ``class`` (the channel
        passed to the instance step); optional ``tta`` and ``planes`` (1, or
        3 for a tri-planar 2D model) for deep models. A deep ensemble has
        ``members`` (a list of ``{"model", "planes", "tta"}``) instead of
        ``model`` / ``planes`` / ``tta``; see :attr:`members`.
    instances : dict
        ``method`` and its parameter block (keyword names of the
        :mod:`emseg.instance` functions), ``min_size_nm3``, ``halo_nm``.
    validation, training, files : dict
        Where the shipped settings were scored and with what, how the
        directory was built, SHA-256 of each model file.
    document : dict
        The whole ``preset.json``.
    """

    name: str
    path: Path
    description: str
    target: str
    spacing: tuple[float, ...]
    prediction: dict[str, Any]
    instances: dict[str, Any]
    validation: dict[str, Any]
    training: dict[str, Any]
    files: dict[str, str]
    document: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.prediction["kind"])

    @property
    def method(self) -> str:
        return str(self.instances["method"])

    @property
    def scores(self) -> dict[str, float]:
        """The validation scores (named floats; empty when not scored yet)."""
        return dict(self.validation.get("scores", {}) or {})

    @property
    def members(self) -> tuple[dict[str, Any], ...]:
        """The deep models and how each is predicted, ``({"model", "planes", "tta"}, ...)``.

        An ensemble preset's ``prediction.members`` (defaults filled in), or
        one entry from ``model`` / ``planes`` / ``tta``; empty for a forest.
        """
        if self.kind != "deep":
            return ()
        if "members" in self.prediction:
            return tuple(_member_entry(m) for m in self.prediction["members"])
        return (_member_entry(self.prediction),)

    @property
    def is_ensemble(self) -> bool:
        """Whether ``prediction`` lists `members` (a deep ensemble)."""
        return "members" in self.prediction

    def model_paths(self) -> tuple[Path, ...]:
        """:meth:`model_path` of every model: the members' folders, or the one model."""
        if self.is_ensemble:
            return tuple(self._deep_path(m["model"]) for m in self.members)
        return (self.model_path(),)

    def model_path(self) -> Path:
        """The forest model file, or the deep model folder (shipped name or a folder here).

        Raises
        ------
        DatasetNotFoundError
            When the model is not installed; the message lists what is.
        EmsegValueError
            For an ensemble preset (several models): use :meth:`model_paths`.
        """
        if self.is_ensemble:
            from emseg.errors import EmsegValueError

            raise EmsegValueError(
                f"preset {self.name!r} is an ensemble of {len(self.members)} deep models; "
                "use Preset.model_paths() (one folder per member)."
            )
        model = str(self.prediction["model"])
        if self.kind == "forest":
            p = self.path / model
            if not p.is_file():
                raise DatasetNotFoundError(
                    f"preset {self.name!r} names the forest model {model!r}, which is not in "
                    f"{str(self.path)!r}. Rebuild the preset ({self.training.get('command', '?')})."
                )
            return p
        return self._deep_path(model)

    def _deep_path(self, model: str) -> Path:
        from emseg.semantic.deep import list_models
        from emseg.semantic.deep._model import WEIGHTS

        local = self.path / model
        if (local / WEIGHTS).is_file():
            return local
        shipped = {m.name: m.path for m in list_models()}
        if model in shipped:
            return shipped[model]
        names = ", ".join(sorted(shipped)) or "none"
        raise DatasetNotFoundError(
            f"preset {self.name!r} needs the deep model {model!r}, which is not installed "
            f"(shipped models: {names}). Train it (see `emseg models` and configs/{model}.yaml) "
            "and install it under emseg/models/, or use another preset (`emseg segment --list`)."
        )


def _member_entry(doc: dict[str, Any]) -> dict[str, Any]:
    """model / planes / tta with defaults filled in, and ``weight`` where it is not 1 (as
    :meth:`emseg.semantic.deep.Member.describe` writes provenance)."""
    out = {
        "model": str(doc["model"]),
        "planes": int(doc.get("planes", 1)),
        "tta": doc.get("tta", False),
    }
    if float(doc.get("weight", 1.0)) != 1:
        out["weight"] = float(doc["weight"])
    return out


MEMBER_KEYS = ("model", "planes", "tta", "weight")


def _check_planes_tta(d: dict[str, Any], where: Path, field: str) -> None:
    planes = d.get("planes", 1)
    if planes not in (1, 3) or isinstance(planes, bool):
        raise FormatError(
            f"{str(where)!r}: `{field}.planes` must be 1 or 3 (tri-planar 2D model); "
            f"got {planes!r}."
        )
    tta = d.get("tta", False)
    try:
        tta_mode(tta)
    except EmsegValueError:
        raise FormatError(
            f'{str(where)!r}: `{field}.tta` must be false, true (test-time flips), "flips" '
            f'or "flips+transpose" (flips and the y <-> x transpose); got {tta!r}.'
        ) from None


def _check_members(pred: dict[str, Any], where: Path) -> None:
    """``prediction.members``: deep only, instead of model/planes/tta, each entry checked."""
    both = [k for k in MEMBER_KEYS if k in pred]
    if both:
        raise FormatError(
            f"{str(where)!r}: `prediction.members` replaces `prediction.model`, `planes` and "
            f"`tta`; got both members and {', '.join(both)}. Move each model's planes / tta "
            "into its member entry and remove them from `prediction`."
        )
    if pred.get("kind") != "deep":
        raise FormatError(
            f"{str(where)!r}: `prediction.members` (an ensemble) needs `prediction.kind` "
            f"'deep'; got {pred.get('kind')!r}."
        )
    members = pred["members"]
    if not isinstance(members, list) or not members:
        raise FormatError(
            f"{str(where)!r}: `prediction.members` must be a non-empty list of "
            f'{{"model": NAME, "planes": 1 or 3, "tta": ..., "weight": W}}; got {members!r}.'
        )
    for i, m in enumerate(members):
        field = f"prediction.members[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("model"), str) or not m["model"]:
            raise FormatError(
                f"{str(where)!r}: `{field}` must be an object with a `model` name (a shipped "
                f"deep model or a model folder in the preset directory); got {m!r}."
            )
        unknown = sorted(set(m) - set(MEMBER_KEYS))
        if unknown:
            raise FormatError(
                f"{str(where)!r}: `{field}` has unknown keys {unknown}; allowed: "
                f"{', '.join(MEMBER_KEYS)}."
            )
        _check_planes_tta(m, where, field)
        w = m.get("weight", 1.0)
        if not is_positive_number(w):
            raise FormatError(
                f"{str(where)!r}: `{field}.weight` must be a positive number (the member's "
                f"share of the mean is weight / sum of weights; default 1); got {w!r}."
            )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _require(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in doc or not isinstance(doc[key], kind):
        raise FormatError(
            f"{str(where)!r}: `{key}` is missing or not a "
            f"{getattr(kind, '__name__', kind)}; see emseg/presets/README.md."
        )
    return doc[key]


def parse_preset(doc: dict[str, Any], path: str | os.PathLike[str]) -> Preset:
    """Check a ``preset.json`` document and return the :class:`Preset` of directory `path`.

    Raises
    ------
    FormatError
        Another format or version, a missing field, an unknown prediction
        kind or instance method, or a method without its parameter block.
    """
    folder = Path(path)
    where = folder / PRESET_FILE
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{str(where)!r} is not an emseg preset of format {FORMAT!r} version "
            f"{FORMAT_VERSION} (got format={doc.get('format')!r}, "
            f"format_version={doc.get('format_version')!r})."
        )
    pred = _require(doc, "prediction", dict, where)
    inst = _require(doc, "instances", dict, where)
    spacing = _require(doc, "spacing", list, where)
    ensemble = "members" in pred
    for key in ("kind", "class") if ensemble else ("kind", "model", "class"):
        _require(pred, key, str, where)
    if pred["kind"] not in KINDS:
        raise FormatError(
            f"{str(where)!r}: `prediction.kind` must be one of {', '.join(map(repr, KINDS))}; "
            f"got {pred['kind']!r}."
        )
    if ensemble:
        _check_members(pred, where)
    else:
        _check_planes_tta(pred, where, "prediction")
    method = _require(inst, "method", str, where)
    if method not in METHODS:
        raise FormatError(
            f"{str(where)!r}: `instances.method` must be one of "
            f"{', '.join(map(repr, METHODS))}; got {method!r}."
        )
    needed = ("supervoxels", "agglomeration") if method == "agglomerate" else (method,)
    for key in needed:
        _require(inst, key, dict, where)
    if method == "agglomerate" and "threshold" not in inst["agglomeration"]:
        raise FormatError(f"{str(where)!r}: `instances.agglomeration.threshold` is missing.")
    linkage = inst["agglomeration"].get("linkage", "mean") if method == "agglomerate" else "mean"
    if linkage not in ("mean", "multicut"):
        raise FormatError(
            f'{str(where)!r}: `instances.agglomeration.linkage` must be "mean" (the default) '
            f'or "multicut"; got {linkage!r}.'
        )
    small = inst["agglomeration"].get("merge_small_nm3") if method == "agglomerate" else None
    if small is not None and (isinstance(small, bool) or not isinstance(small, int | float)
                              or small < 0):  # fmt: skip
        raise FormatError(
            f"{str(where)!r}: `instances.agglomeration.merge_small_nm3` must be a size >= 0 "
            f"in nm^3 (or null); got {small!r}."
        )
    if len(spacing) not in (2, 3) or not all(isinstance(s, int | float) and s > 0 for s in spacing):
        raise FormatError(
            f"{str(where)!r}: `spacing` must be 2 or 3 positive numbers (nm); got {spacing!r}."
        )
    return Preset(
        name=str(doc.get("name", folder.name)),
        path=folder,
        description=str(doc.get("description", "")),
        target=str(doc.get("target", pred["class"])),
        spacing=tuple(float(s) for s in spacing),
        prediction=dict(pred),
        instances=dict(inst),
        validation=dict(doc.get("validation", {}) or {}),
        training=dict(doc.get("training", {}) or {}),
        files=dict(doc.get("files", {}) or {}),
        document=doc,
    )


def _is_preset_dir(p: Path) -> bool:
    return (p / PRESET_FILE).is_file()


def list_presets(folder: str | os.PathLike[str] | None = None) -> list[Preset]:
    """The presets in `folder` (default: those shipped with emseg), sorted by name.

    A directory whose ``preset.json`` cannot be parsed is skipped with a
    warning (one broken preset does not hide the others).
    """
    import warnings

    root = Path(folder) if folder is not None else presets_dir()
    out = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and _is_preset_dir(p):
                try:
                    out.append(load_preset(p))
                except FormatError as exc:
                    warnings.warn(f"skipping preset {p.name!r}: {exc}", stacklevel=2)
    return out


def load_preset(name_or_path: str | os.PathLike[str] | Preset, *, verify: bool = True) -> Preset:
    """Load a shipped preset by name, or a preset directory (or its ``preset.json``).

    Parameters
    ----------
    name_or_path : str, path or Preset
        A shipped preset's name (see :func:`list_presets`), a directory
        holding ``preset.json``, or that file.
    verify : bool, default True
        Check the SHA-256 of the files listed under ``files``.

    Returns
    -------
    Preset

    Raises
    ------
    DatasetNotFoundError
        Neither a preset directory nor a shipped name; lists the shipped names.
    FormatError
        A malformed ``preset.json`` or a model file whose checksum differs.
    """
    if isinstance(name_or_path, Preset):
        return name_or_path
    p = Path(name_or_path)
    if p.is_file() and p.name == PRESET_FILE:
        p = p.parent
    if not _is_preset_dir(p):
        shipped = presets_dir() / str(name_or_path)
        if os.sep not in str(name_or_path) and _is_preset_dir(shipped):
            p = shipped
        else:
            names = [d.name for d in sorted(presets_dir().iterdir()) if _is_preset_dir(d)]
            raise DatasetNotFoundError(
                f"`preset` {str(name_or_path)!r} is neither a preset directory (with "
                f"{PRESET_FILE}) nor a shipped preset (shipped: {', '.join(names) or 'none'}). "
                "See `emseg segment --list`."
            )
    try:
        doc = json.loads((p / PRESET_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{str(p / PRESET_FILE)!r} is not valid JSON: {exc}.") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{str(p / PRESET_FILE)!r} must hold a JSON object.")
    preset = parse_preset(doc, p)
    if verify:
        for fname, digest in preset.files.items():
            f = p / fname
            if f.is_file() and digest and _sha256(f) != digest:
                raise FormatError(
                    f"preset {preset.name!r}: {fname!r} does not match its SHA-256 in "
                    f"{PRESET_FILE} (the file was changed or truncated); reinstall or rebuild "
                    "the preset."
                )
    return preset


def write_preset(doc: dict[str, Any], folder: str | os.PathLike[str]) -> Preset:
    """Write ``preset.json`` into `folder` (checked first; file digests filled in).

    Every file of the folder named in ``doc["files"]`` gets its SHA-256, as
    do the forest model named by ``prediction.model`` and the weights and
    config of every deep model (``prediction.model`` or ``prediction.members``)
    that is a model folder inside `folder` (``NAME/model.safetensors``,
    ``NAME/config.json``).
    """
    folder = Path(folder)
    doc = json.loads(json.dumps(doc))  # a copy, and JSON-able
    doc.setdefault("format", FORMAT)
    doc.setdefault("format_version", FORMAT_VERSION)
    doc.setdefault("name", folder.name)
    files = dict(doc.get("files", {}) or {})
    pred = doc.get("prediction", {})
    if pred.get("kind") == "forest":
        files.setdefault(str(pred.get("model")), "")
    elif pred.get("kind") == "deep":
        from emseg.semantic.deep._model import CONFIG, WEIGHTS

        entries = pred.get("members") if isinstance(pred.get("members"), list) else [pred]
        for m in entries:
            name = m.get("model") if isinstance(m, dict) else None
            if isinstance(name, str) and name and (folder / name / WEIGHTS).is_file():
                files.setdefault(f"{name}/{WEIGHTS}", "")
                files.setdefault(f"{name}/{CONFIG}", "")
    for fname in list(files):
        if (folder / fname).is_file():
            files[fname] = _sha256(folder / fname)
    doc["files"] = files
    parse_preset(doc, folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PRESET_FILE).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return load_preset(folder)
