"""The self-contained HTML evaluation report (one file, PNGs embedded as base64, no assets)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFINITIONS", "write_report"]

#: One-line definition of every metric key shown in the report (docs/metrics.md has the rest).
DEFINITIONS: dict[str, str] = {
    "accuracy": "fraction of voxels whose class is right",
    "precision": "TP / (TP + FP) of the foreground (or macro over classes)",
    "recall": "TP / (TP + FN), the sensitivity",
    "specificity": "TN / (TN + FP)",
    "dice": "F1 = 2TP / (2TP + FP + FN)",
    "jaccard": "IoU = TP / (TP + FP + FN)",
    "conformity": "1 - (FP + FN) / TP (Chang et al. 2009)",
    "pixel_error": "ISBI 2012: 1 - max F-score of the probability map over thresholds 0:1:0.1",
    "rand_index": "fraction of voxel pairs on which both segmentations agree (label 0 a segment)",
    "adapted_rand_error_cremi": "1 - F-score of pair precision / recall; CREMI / SNEMI3D variant",
    "adapted_rand_error_isbi2012": "1 - F-score of pairs; Fiji ISBI 2012 (predicted 0 singletons)",
    "adapted_rand_error_skimage": "scikit-image adapted_rand_error (predicted 0 a segment)",
    "voi_split": "H(prediction | truth) in bits: over-segmentation",
    "voi_merge": "H(truth | prediction) in bits: under-segmentation",
    "isbi_vrand": "ISBI 2012 V_rand (higher is better)",
    "isbi_vinfo": "ISBI 2012 V_info = 2I / (H(T) + H(P)) (higher is better)",
    "warping_error": "topological errors left after simple-point warping / voxels (Jain 2010)",
    "hausdorff": "largest surface distance in nm (mean over matched objects for instances)",
    "hausdorff95": "95th percentile of the pooled surface distances in nm (medpy)",
    "ap50": "TP / (TP + FP + FN) at IoU >= 0.5 (DSB 2018)",
    "ap75": "TP / (TP + FP + FN) at IoU >= 0.75 (DSB 2018 definition)",
    "map": "mean DSB AP over IoU 0.50:0.95:0.05 (not COCO: see coco_map)",
    "aji": "aggregated Jaccard index (Kumar et al. 2017)",
    "pq": "panoptic quality = SQ x RQ (Kirillov et al. 2019)",
    "sq": "mean IoU of matches (IoU > 0.5)",
    "rq": "TP / (TP + FP/2 + FN/2)",
    "f1_50": "object F1 at IoU >= 0.5",
    "coco_map": "COCO mAP@[.50:.95] of scored predictions (101-point interpolation)",
    "coco_ap50": "COCO AP at IoU 0.5 of scored predictions",
    "coco_ap75": "COCO AP at IoU 0.75 of scored predictions",
    "mitoem_ap75": "MitoEM AP-75: COCO AP at IoU 0.75 of 3D objects (ranked by score, else size)",
}

_MAX_ROWS = 500

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}
th{background:#eee;cursor:pointer}td.k,th.k{text-align:left}
.null{color:#999}img{max-width:100%}small{color:#666}
"""

_JS = """
function sortTable(th){var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,
r=Array.from(b.rows),d=th.dataset.dir==='a'?-1:1;th.dataset.dir=d>0?'a':'d';
r.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,
c=y.cells[i].dataset.v||y.cells[i].textContent,p=parseFloat(a),q=parseFloat(c);
if(!isNaN(p)&&!isNaN(q))return d*(p-q);return d*a.localeCompare(c);});
r.forEach(function(e){b.appendChild(e);});}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if v is None:
        return '<span class="null">null</span>'
    if isinstance(v, float | np.floating):
        if not math.isfinite(v):
            return _e(v)
        return _e(f"{float(v):.6g}")
    return _e(v)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _metric_table(result: Any) -> str:
    rows = []
    for k, v in result.metrics.items():
        note = result.notes.get(k, "")
        rows.append(
            f'<tr><td class="k"><a href="#def-{_e(k)}">{_e(k)}</a></td><td>{_fmt(v)}</td>'
            f'<td class="k"><small>{_e(note)}</small></td></tr>'
        )
    return (
        '<table id="metrics"><thead><tr><th class="k">metric</th><th>value</th>'
        '<th class="k">notes</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
    )


def _object_table(frame: Any, table_id: str) -> str:
    cols = ["label", "size", "best_match", "best_iou", "n_split", "n_merged"]
    cols += [c for c in frame.columns if c.startswith("centroid_") and not c.endswith("_nm")]
    cols += [c for c in frame.columns if c.startswith("bbox_") and not c.endswith("_nm")]
    cols += ["equivalent_diameter_nm", "elongation"]
    worst = frame.sort_values(["best_iou", "size"], ascending=[True, False]).head(_MAX_ROWS)
    head = "".join(f'<th onclick="sortTable(this)">{_e(c)}</th>' for c in cols)
    body = []
    for row in worst[cols].itertuples(index=False):
        cells = "".join(f'<td data-v="{_e(v)}">{_fmt(v)}</td>' for v in row)
        body.append(f"<tr>{cells}</tr>")
    more = (
        f"<p><small>the {_MAX_ROWS} objects of lowest IoU of {len(frame)}; all in the CSV</small></p>"
        if len(frame) > _MAX_ROWS
        else ""
    )
    return (
        f'{more}<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _morphology_table(morph: dict[str, dict[str, Any]]) -> str:
    keys = ["n_truth", "n_prediction", "median_truth", "median_prediction", "median_ratio",
            "ks_statistic", "ks_pvalue"]  # fmt: skip
    head = '<th class="k">feature</th>' + "".join(f"<th>{_e(k)}</th>" for k in keys)
    rows = [
        f'<tr><td class="k">{_e(f)}</td>'
        + "".join(f"<td>{_fmt(s[k])}</td>" for k in keys)
        + "</tr>"
        for f, s in morph.items()
    ]
    return f'<table id="morphology"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def write_report(
    result: Any,
    path: str | Path,
    *,
    truth: Any = None,
    prediction: Any = None,
    error_map: Any = None,
    n_sections: int = 3,
    title: str = "emseg evaluation",
) -> Path:
    """Write the self-contained HTML report of an :class:`~emseg.evaluation.EvaluationResult`.

    Parameters
    ----------
    result : EvaluationResult
    path : path
        The ``.html`` file to write.
    truth, prediction : array or LazyImage, optional
        The evaluated volumes: with them the report shows the `n_sections`
        sections (axis 0) with the most error voxels as overlays.
    error_map : array, optional
        A written error map (:func:`emseg.evaluation.write_error_maps`);
        default: codes computed section by section from `truth` and
        `prediction`.
    n_sections : int, default 3
    title : str

    Returns
    -------
    Path
        One file: every figure is an embedded PNG (``data:image/png;base64``),
        the table sorting is inline JavaScript, nothing is loaded from
        elsewhere. Every text is HTML-escaped.
    """
    from emseg.report._plots import curve_figure, morphology_figure, section_figure

    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style><script>{_JS}</script></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>task <b>{_e(result.task)}</b>, shape {_e(list(result.shape))}, spacing "
        f"{_e(list(result.spacing))} nm, {_e(result.overlap.n_voxels)} voxels, blocks "
        f"{_e(list(result.block_shape))}.</p>",
        "<h2>Metrics</h2>",
        _metric_table(result),
    ]
    if result.per_class is not None:
        names = ["precision", "recall", "specificity", "dice", "jaccard", "conformity"]
        head = '<th class="k">class</th>' + "".join(f"<th>{n}</th>" for n in names)
        rows = "".join(
            f'<tr><td class="k">{_e(c)}</td>' + "".join(f"<td>{_fmt(s[n])}</td>" for n in names)
            + "</tr>"
            for c, s in result.per_class.items()
        )  # fmt: skip
        parts.append(
            f'<h2>Per class</h2><table id="per_class"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    if result.curves:
        parts += ["<h2>Precision / recall and Jaccard curves</h2>",
                  _img(curve_figure(result.curves), "precision-recall and Jaccard curves")]  # fmt: skip
    if truth is not None and prediction is not None:
        from emseg.evaluation import ErrorCodeView, worst_sections

        view = error_map if error_map is not None else ErrorCodeView(
            truth, prediction, overlap=result.overlap
        )  # fmt: skip
        parts.append("<h2>Worst sections</h2>")
        for info in worst_sections(view, n=n_sections):
            key: Any = info["index"] if len(result.shape) == 3 else ...
            counts = ", ".join(f"{k} {v}" for k, v in info["counts"].items() if v)
            fig = section_figure(
                np.asarray(truth[key]), np.asarray(prediction[key]), np.asarray(view[key]),
                title=f"section {info['index']}: {info['errors']} error voxels ({counts})",
            )  # fmt: skip
            parts.append(_img(fig, f"section {info['index']}"))
    if result.truth_objects is not None:
        from emseg.evaluation import MORPHOLOGY_FEATURES

        parts += [
            "<h2>Objects</h2><p><small>click a column to sort</small></p><h3>Truth objects</h3>",
            _object_table(result.truth_objects, "truth_objects"),
            "<h3>Predicted objects</h3>",
            _object_table(result.prediction_objects, "prediction_objects"),
        ]
        if result.morphology is not None:
            parts += [
                "<h2>Morphology: truth vs prediction</h2>",
                _morphology_table(result.morphology),
                _img(
                    morphology_figure(
                        result.truth_objects, result.prediction_objects, MORPHOLOGY_FEATURES
                    ),
                    "morphology histograms",
                ),
            ]
    parts.append('<h2>Definitions</h2><dl id="definitions">')
    for k in result.metrics:
        conv = result.conventions.get(k, "")
        parts.append(
            f'<dt id="def-{_e(k)}"><b>{_e(k)}</b></dt><dd>{_e(DEFINITIONS.get(k, ""))}'
            + (f" <small>({_e(conv)})</small>" if conv else "")
            + "</dd>"
        )
    parts.append("</dl><p><small>Formulas, sources and edge cases: docs/metrics.md of emseg.")
    parts.append("</small></p></body></html>\n")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(parts), encoding="utf-8")
    return out
