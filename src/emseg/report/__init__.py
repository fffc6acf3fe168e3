"""The HTML evaluation report: one self-contained file with embedded PNG figures.

:func:`write_report` turns an :class:`emseg.evaluation.EvaluationResult` into
HTML (metric table with definitions, per-class scores, precision / recall and
Jaccard curves, worst-section overlays, sortable per-object tables,
morphology histograms); :func:`write_object_tables` writes the per-object
tables as CSV next to it.
"""

from emseg.report._html import DEFINITIONS, write_report
from emseg.report._tables import write_object_tables

__all__ = ["DEFINITIONS", "write_object_tables", "write_report"]
