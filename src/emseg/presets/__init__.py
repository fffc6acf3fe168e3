"""Presets: one command from raw EM to instances (``emseg segment PRESET IMAGE OUT``).

A preset (a directory with ``preset.json`` and model files, format in
``emseg/presets/README.md``) names a semantic model and an instance method
with its settings in physical units. :func:`segment` runs blockwise
prediction and then blockwise instance segmentation, resumably, into an
output folder. See ``docs/segment.md``.
"""

from emseg.presets._preset import (
    FORMAT,
    FORMAT_VERSION,
    METHODS,
    PRESET_FILE,
    Preset,
    list_presets,
    load_preset,
    parse_preset,
    presets_dir,
    write_preset,
)
from emseg.presets._segment import (
    LABELS,
    PROBABILITIES,
    STATE,
    ProbabilityChannel,
    SegmentResult,
    check_preset_spacing,
    remove_small,
    segment,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LABELS",
    "METHODS",
    "PRESET_FILE",
    "PROBABILITIES",
    "STATE",
    "Preset",
    "ProbabilityChannel",
    "SegmentResult",
    "check_preset_spacing",
    "list_presets",
    "load_preset",
    "parse_preset",
    "presets_dir",
    "remove_small",
    "segment",
    "write_preset",
]
