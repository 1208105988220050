"""Figures of a training run (matplotlib's object API with the Agg canvas; pyplot is never used,
so no global backend state is touched)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn import metrics as skm


def _figure(w: float = 5.0, h: float = 4.0) -> tuple[Figure, object]:
    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "ROC") -> Figure:
    """ROC curves, one per name: ``{name: (y, p)}``; the legend carries each AUC."""
    fig, ax = _figure()
    for name, (y, p) in curves.items():
        if np.unique(y).size < 2:
            continue
        fpr, tpr, _ = skm.roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def pr_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "precision-recall") -> Figure:
    """Precision-recall curves, ``{name: (y, p)}``; the legend carries each average precision."""
    fig, ax = _figure()
    for name, (y, p) in curves.items():
        if np.unique(y).size < 2:
            continue
        prec, rec, _ = skm.precision_recall_curve(y, p)
        ax.plot(rec, prec, label=f"{name} (AP {skm.average_precision_score(y, p):.3f})")
    ax.set(xlabel="recall", ylabel="precision", title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    return fig


def confusion_figure(y: np.ndarray, p: np.ndarray, title: str = "confusion (p >= 0.5)", *,
                     threshold: float = 0.5) -> Figure:
    """Counts of the 2x2 confusion matrix at ``p >= threshold``."""
    cm = skm.confusion_matrix(y, (np.asarray(p) >= threshold).astype(int), labels=[0, 1])
    fig, ax = _figure(4, 3.5)
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["real", "fake"], yticklabels=["real", "fake"],
           xlabel="predicted", ylabel="true", title=title)
    return fig


def importance_figure(imp: pl.DataFrame, top: int = 20, title: str = "feature importance") -> Figure:
    """Horizontal bars of the ``top`` features of an importance table (feature, importance, method)."""
    imp = imp.head(top)
    fig, ax = _figure(6, 0.25 * max(len(imp), 4) + 1)
    ax.barh(np.arange(len(imp))[::-1], imp["importance"].to_numpy())
    ax.set_yticks(np.arange(len(imp))[::-1], imp["feature"].to_list(), fontsize=7)
    method = imp["method"][0] if len(imp) else ""
    ax.set(title=f"{title} ({method})")
    return fig


def distribution_figure(values: Mapping[str, tuple[np.ndarray, np.ndarray]], bins: int = 30) -> Figure:
    """Class-conditional histograms: ``{feature: (real values, fake values)}``, one panel each."""
    n = max(len(values), 1)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4 * cols, 3 * rows), dpi=100, layout="constrained")
    for i, (name, (real, fake)) in enumerate(values.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        both = np.concatenate([real, fake])
        both = both[np.isfinite(both)]
        edges = np.histogram_bin_edges(both, bins=bins) if both.size else bins
        ax.hist(real[np.isfinite(real)], bins=edges, alpha=0.6, density=True, label="real")
        ax.hist(fake[np.isfinite(fake)], bins=edges, alpha=0.6, density=True, label="fake")
        ax.set_title(name, fontsize=8)
        ax.legend(fontsize=7)
    return fig


def fold_spread_figure(aucs: Mapping[str, list[float]]) -> Figure:
    """One row per model: each outer fold's ROC AUC as a dot, their mean as a bar."""
    fig, ax = _figure(6, 0.35 * max(len(aucs), 3) + 1.2)
    for i, (name, v) in enumerate(aucs.items()):
        y = len(aucs) - 1 - i
        v = np.asarray(v, dtype=float)
        ax.scatter(v, np.full(v.shape, y), s=18, color="tab:blue", zorder=3)
        if np.isfinite(v).any():
            ax.plot([np.nanmean(v)] * 2, [y - 0.3, y + 0.3], color="black")
    ax.set_yticks(range(len(aucs))[::-1], list(aucs), fontsize=7)
    ax.axvline(0.5, ls=":", c="grey")
    ax.set(xlabel="ROC AUC of the fold (bar: mean)", title="ROC AUC over the outer folds")
    return fig
