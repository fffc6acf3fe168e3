"""PNG figures of an evaluation (matplotlib Agg), returned as base64 strings for embedding."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

__all__ = ["curve_figure", "morphology_figure", "section_figure"]

_ERROR_COLOURS = [
    (0.0, 0.0, 0.0, 0.0),  # background
    (0.55, 0.55, 0.55, 0.35),  # correct
    (1.0, 0.15, 0.1, 0.9),  # false positive
    (0.1, 0.45, 1.0, 0.9),  # false negative
    (1.0, 0.85, 0.0, 0.9),  # split
    (0.8, 0.1, 0.9, 0.9),  # merge
]


def _figure(**kw: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kw)


def _to_base64(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def curve_figure(curves: dict[str, np.ndarray]) -> str:
    """Precision / recall and Jaccard curves of a probability map (base64 PNG)."""
    fig, axes = _figure(ncols=2, figsize=(9, 3.6))
    th = curves["thresholds"]
    axes[0].plot(curves["recall"], curves["precision"], "-", color="tab:blue")
    axes[0].set_xlabel("recall")
    axes[0].set_ylabel("precision")
    axes[0].set_xlim(0, 1.02)
    axes[0].set_ylim(0, 1.02)
    axes[0].set_title("precision / recall over thresholds")
    axes[1].plot(th, curves["jaccard"], "-", color="tab:green")
    axes[1].set_xlabel("threshold on the probability")
    axes[1].set_ylabel("Jaccard (IoU)")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_title("Jaccard curve")
    fig.tight_layout()
    return _to_base64(fig)


def morphology_figure(truth: Any, prediction: Any, features: tuple[str, ...]) -> str:
    """Histograms of per-object features, truth vs prediction (base64 PNG)."""
    fig, axes = _figure(ncols=len(features), figsize=(4 * len(features), 3.4))
    for ax, feat in zip(np.atleast_1d(axes), features, strict=True):
        a = np.asarray(truth[feat], np.float64)
        b = np.asarray(prediction[feat], np.float64)
        a, b = a[np.isfinite(a) & (a > 0)], b[np.isfinite(b) & (b > 0)]
        both = np.concatenate([a, b])
        if both.size:
            lo, hi = both.min(), both.max()
            log = hi / lo > 100
            bins = np.geomspace(lo, hi * 1.0001, 30) if log else np.linspace(lo, hi * 1.0001, 30)
            ax.hist(a, bins=bins, alpha=0.55, label=f"truth (n={a.size})", color="tab:blue")
            ax.hist(b, bins=bins, alpha=0.55, label=f"prediction (n={b.size})", color="tab:orange")
            if log:
                ax.set_xscale("log")
            ax.legend(fontsize=7)
        ax.set_title(feat, fontsize=9)
        ax.set_ylabel("objects")
    fig.tight_layout()
    return _to_base64(fig)


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """Pseudo-random RGB per label (0 = black), stable across calls."""
    lab = labels.astype(np.uint64)
    h = lab * np.uint64(0x9E3779B97F4A7C15)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (8, 24, 40)], -1)
    out = 0.25 + 0.75 * rgb.astype(np.float64) / 255.0
    out[lab == 0] = 0.0
    return out


def section_figure(
    truth: np.ndarray, prediction: np.ndarray, codes: np.ndarray, *, title: str
) -> str:
    """Truth, prediction and error codes of one section side by side (base64 PNG)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from emseg.evaluation import ERROR_CODES

    fig, axes = _figure(ncols=3, figsize=(12, 4.4))
    axes[0].imshow(_label_colours(truth), interpolation="nearest")
    axes[0].set_title("truth")
    axes[1].imshow(_label_colours(prediction), interpolation="nearest")
    axes[1].set_title("prediction")
    axes[2].imshow(truth != 0, cmap="gray", vmin=0, vmax=1.6, interpolation="nearest")
    axes[2].imshow(
        codes, cmap=ListedColormap(_ERROR_COLOURS), vmin=-0.5, vmax=5.5, interpolation="nearest"
    )
    axes[2].set_title("errors")
    handles = [Patch(color=_ERROR_COLOURS[k], label=v) for k, v in ERROR_CODES.items() if k >= 2]
    axes[2].legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _to_base64(fig)
