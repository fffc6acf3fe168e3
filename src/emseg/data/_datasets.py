"""The real EM datasets with ground truth in ``../shared/data`` (or ``$EMSEG_DATA``).

Spacing, shapes and label conventions come from that folder's README; the
files themselves carry no voxel size, so :func:`open_dataset_file` passes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from emseg.errors import DataUnavailableError, EmsegValueError

if TYPE_CHECKING:
    from emseg.io import LazyImage


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: its shape, dtype and what its values mean."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str  # "image", "labels", "instances", "classes", "mask", "probabilities"
    values: str


@dataclass(frozen=True)
class Dataset:
    """A real dataset: folder, voxel size (nm, z-y-x), files, splits and licence."""

    name: str
    folder: str
    spacing: tuple[float, float, float]
    description: str
    files: dict[str, DataFile]
    licence: str
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)  # z ranges, stop exclusive


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset(
            "isbi2012",
            "isbi2012",
            (50.0, 4.0, 4.0),
            "ISBI 2012 challenge, Drosophila larva VNC, ssTEM; 2D membrane segmentation",
            {
                "train_image": DataFile(
                    "train-volume.tif", (30, 512, 512), "uint8", "image", "raw EM"
                ),
                "train_labels": DataFile(
                    "train-labels.tif",
                    (30, 512, 512),
                    "uint8",
                    "mask",
                    "255 = cell interior, 0 = membrane",
                ),
                "test_image": DataFile(
                    "test-volume.tif", (30, 512, 512), "uint8", "image", "raw EM, no labels"
                ),
            },
            "non-commercial use, citation required (Cardona et al. 2010)",
            {"train": (0, 24), "validation": (24, 30)},
        ),
        Dataset(
            "lucchi_pp",
            "lucchi_pp",
            (5.0, 5.0, 5.0),
            "Lucchi++ mitochondria, mouse hippocampus CA1 FIB-SEM (training volume, z 0-79)",
            {
                "image": DataFile("train_image.tif", (80, 768, 1024), "uint8", "image", "raw EM"),
                "labels": DataFile(
                    "train_label.tif",
                    (80, 768, 1024),
                    "uint8",
                    "mask",
                    "255 = mitochondrion, 0 = background",
                ),
            },
            "research use with citation (Lucchi et al. 2012; Casser et al. 2020)",
            {"train": (0, 60), "validation": (60, 80)},
        ),
        Dataset(
            "drosophila_vnc_sstem",
            "drosophila_vnc_sstem",
            (50.0, 4.6, 4.6),
            "Gerhard et al. 2013 Drosophila L3 VNC ssTEM stack 1; multi-class",
            {
                "image": DataFile("stack1_raw.tif", (20, 1024, 1024), "uint8", "image", "raw EM"),
                "classes": DataFile(
                    "stack1_labels.tif",
                    (20, 1024, 1024),
                    "uint8",
                    "classes",
                    "0/32/64/96 membrane, 128 junction, 159 glia/extracellular, "
                    "191 mitochondria, 223 synapse, 255 intracellular",
                ),
                "membranes": DataFile(
                    "stack1_membranes.tif", (20, 1024, 1024), "uint8", "mask", "1 = membrane"
                ),
                "mitochondria": DataFile(
                    "stack1_mitochondria.tif",
                    (20, 1024, 1024),
                    "uint8",
                    "mask",
                    "1 = mitochondrion",
                ),
                "synapses": DataFile(
                    "stack1_synapses.tif", (20, 1024, 1024), "uint8", "mask", "1 = synapse"
                ),
            },
            "CC BY-NC-SA 3.0 (Gerhard et al. 2013)",
        ),
        Dataset(
            "flyem_medulla",
            "flyem_medulla_neuroproof",
            (10.0, 10.0, 10.0),
            "FlyEM Drosophila medulla FIB-SEM (z 0-124 of 250^3); dense neuron ground truth",
            {
                "image": DataFile("image.tif", (125, 250, 250), "uint8", "image", "raw EM"),
                "groundtruth": DataFile(
                    "groundtruth.tif",
                    (125, 250, 250),
                    "uint16",
                    "instances",
                    "neuron ids, 0 = unlabelled",
                ),
                "oversegmentation": DataFile(
                    "oversegmentation.tif",
                    (125, 250, 250),
                    "uint16",
                    "instances",
                    "supervoxel ids, no 0",
                ),
            },
            "CC BY 3.0 (HHMI Janelia FlyEM)",
            {"train": (0, 80), "validation": (80, 125)},
        ),
        Dataset(
            "gala_fibsem",
            "gala_fibsem_example",
            (10.0, 10.0, 10.0),
            "gala FIB-SEM example volumes (train + test); dense neuron ground truth",
            {
                "train_image": DataFile(
                    "train_image.tif", (50, 100, 200), "uint8", "image", "raw EM"
                ),
                "train_groundtruth": DataFile(
                    "train_groundtruth.tif",
                    (50, 100, 200),
                    "uint16",
                    "instances",
                    "ids 1..87, 0 = boundary",
                ),
                "test_image": DataFile(
                    "test_image.tif", (50, 100, 200), "uint8", "image", "raw EM"
                ),
                "test_groundtruth": DataFile(
                    "test_groundtruth.tif",
                    (50, 100, 200),
                    "uint16",
                    "instances",
                    "ids 1..132, 0 = boundary",
                ),
            },
            "Janelia Farm licence (BSD-like)",
        ),
        Dataset(
            "snemi3d_mini",
            "snemi3d_mini_gala",
            (30.0, 6.0, 6.0),
            "32x160x160 crop of SNEMI3D ground truth with fragments and a boundary map (no raw EM)",
            {
                "labels": DataFile(
                    "labels.tif",
                    (32, 160, 160),
                    "uint8",
                    "instances",
                    "ids 1..27; 1 fills membrane gaps",
                ),
                "fragments": DataFile(
                    "fragments.tif", (32, 160, 160), "uint16", "instances", "fragments 1..1389"
                ),
                "probabilities": DataFile(
                    "probabilities.tif", (32, 160, 160), "uint8", "probabilities", "dark = membrane"
                ),
            },
            "research use with citation (Kasthuri et al. 2015)",
        ),
    ]
}


def data_root() -> Path:
    """Return the folder that holds the real datasets.

    ``$EMSEG_DATA`` when set; otherwise the first ``shared/data`` found beside
    the current directory or the installed package (``<repo>/../shared/data``).

    Raises
    ------
    DataUnavailableError
        When no such folder exists.
    """
    env = os.environ.get("EMSEG_DATA")
    if env:
        root = Path(env)
        if not root.is_dir():
            raise DataUnavailableError(f"$EMSEG_DATA points to {env!r}, which is not a folder.")
        return root
    starts = [Path.cwd(), Path(__file__).resolve()]
    for start in starts:
        for parent in [start, *start.parents]:
            for candidate in (parent / "shared" / "data", parent.parent / "shared" / "data"):
                if (candidate / "README.md").exists():
                    return candidate
    raise DataUnavailableError(
        "the real EM datasets were not found: set $EMSEG_DATA to the folder that holds "
        "isbi2012/, lucchi_pp/, ... (in the repository layout it is ../shared/data)."
    )


def dataset_path(name: str, key: str) -> Path:
    """Return the path of file `key` of dataset `name`, checking that it exists."""
    if name not in DATASETS:
        raise EmsegValueError(
            f"`name` must be one of {', '.join(map(repr, DATASETS))}; got {name!r}."
        )
    ds = DATASETS[name]
    if key not in ds.files:
        raise EmsegValueError(
            f"dataset {name!r} has files {', '.join(map(repr, ds.files))}; got {key!r}."
        )
    path = data_root() / ds.folder / ds.files[key].name
    if not path.exists():
        raise DataUnavailableError(f"missing dataset file {str(path)!r} ({name}/{key}).")
    return path


def open_dataset_file(name: str, key: str) -> LazyImage:
    """Open file `key` of dataset `name` lazily with the dataset's documented spacing."""
    from emseg.io import open_image

    return open_image(dataset_path(name, key), spacing=DATASETS[name].spacing)
