"""Grouped bootstrap confidence intervals of ROC AUC, average precision and EER.

The unit that is resampled is the group (``group_id``: a source video with its fakes, a cascade),
never the row: rows of a group are not independent, and resampling rows would give intervals that
are too narrow exactly where the corpus is paired. A replicate draws ``G`` groups with
replacement out of the ``G`` groups; each row then counts as many times as its group was drawn.

The metrics of all replicates are computed at once from one sort of the scores (weighted
cumulative counts at each distinct threshold); a replicate with only one class is left out
(``n_valid`` says how many were used). The interval is the percentile interval of the valid
replicates. The slow reference (rows repeated, scikit-learn metrics, one replicate at a time) is
in the tests; both draw the same groups for the same seed.

>>> rng = np.random.default_rng(0)
>>> y = np.tile([0, 1], 100); p = rng.random(200) + 0.3 * y; g = np.repeat(np.arange(100), 2)
>>> iv = grouped_bootstrap(y, p, g, n_boot=200)["roc_auc"]
>>> bool(iv.lo < iv.estimate < iv.hi)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import polars as pl

METRICS = ("roc_auc", "average_precision", "eer")
N_BOOT = 1000
SEED = 0
LEVEL = 0.95
#: most cells (replicates x rows) held at once
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate (on the data as they are) and its bootstrap percentile interval."""

    estimate: float
    lo: float
    hi: float
    n_valid: int

    def format(self, digits: int = 3) -> str:
        """``0.781 [0.734, 0.826]``."""
        if math.isnan(self.estimate):
            return "n/a"
        return f"{self.estimate:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def draw_groups(n_groups: int, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """The group indices of every replicate, ``int64[n_boot, n_groups]`` (what both the fast and
    the reference computation use)."""
    return np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))


def _codes(groups, n: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.arange(n), n
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    return codes.ravel(), int(codes.max()) + 1 if n else 0


def _curve_counts(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted true and false positives at each distinct threshold (descending), with a leading 0:
    ``TP, FP`` of shape ``[replicates, thresholds + 1]``."""
    order = np.argsort(-p, kind="mergesort")
    ps, ys, w = p[order], y[order], weights[:, order]
    ends = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]     # last row of each tie block
    tp = np.cumsum(w * ys, axis=1)[:, ends]
    fp = np.cumsum(w * (1 - ys), axis=1)[:, ends]
    zero = np.zeros((w.shape[0], 1))
    return np.hstack([zero, tp]), np.hstack([zero, fp])


def _metrics_from_counts(tp: np.ndarray, fp: np.ndarray) -> dict[str, np.ndarray]:
    P, N = tp[:, -1:], fp[:, -1:]
    ok = (P[:, 0] > 0) & (N[:, 0] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / P, fp / N
        auc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)
        dtp = np.diff(tp, axis=1)
        prec = np.where(tp[:, 1:] + fp[:, 1:] > 0, tp[:, 1:] / (tp[:, 1:] + fp[:, 1:]), 0.0)
        ap = np.sum(dtp / P * prec, axis=1)
        d = (1.0 - tpr) - fpr                          # FNR - FPR: 1 at the start, -1 at the end
        i = np.argmax(d <= 0, axis=1)
        rows = np.arange(len(i))
        prev = np.maximum(i - 1, 0)
        d0, d1 = d[rows, prev], d[rows, i]
        f0, f1 = fpr[rows, prev], fpr[rows, i]
        a = np.where(d1 == 0, 1.0, d0 / (d0 - d1))
        eer = np.where(d1 == 0, f1, f0 + a * (f1 - f0))
    nan = np.full(len(ok), np.nan)
    return {"roc_auc": np.where(ok, auc, nan), "average_precision": np.where(ok, ap, nan),
            "eer": np.where(ok, eer, nan)}


def point_metrics(y, p) -> dict[str, float]:
    """ROC AUC, AP and EER of the data as they are (every row once); scores need not be in [0, 1]."""
    y = np.asarray(y, dtype=np.int64)
    tp, fp = _curve_counts(y, np.asarray(p, dtype=np.float64), np.ones((1, len(y))))
    return {m: float(v[0]) for m, v in _metrics_from_counts(tp, fp).items()}


def replicate_metrics(y, p, groups=None, *, n_boot: int = N_BOOT, seed: int = SEED) -> dict[str, np.ndarray]:
    """Every replicate's ROC AUC, AP and EER (NaN where a replicate holds one class only)."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    codes, n_groups = _codes(groups, len(y))
    draws = draw_groups(n_groups, n_boot, seed)
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    step = max(1, _CHUNK_CELLS // max(len(y), 1))
    for start in range(0, n_boot, step):
        chunk = draws[start:start + step]
        counts = np.zeros((len(chunk), n_groups))
        np.add.at(counts, (np.repeat(np.arange(len(chunk)), n_groups), chunk.ravel()), 1.0)
        tp, fp = _curve_counts(y, p, counts[:, codes])
        for m, v in _metrics_from_counts(tp, fp).items():
            out[m].append(v)
    return {m: np.concatenate(v) if v else np.empty(0) for m, v in out.items()}


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, int]:
    """``(lo, hi, n_valid)``: the central ``level`` percentile interval of the finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return math.nan, math.nan, 0
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(v, [tail, 100.0 - tail])
    return float(lo), float(hi), int(v.size)


def grouped_bootstrap(y, p, groups=None, *, n_boot: int = N_BOOT, seed: int = SEED,
                      level: float = LEVEL, metrics: Iterable[str] = METRICS) -> dict[str, Interval]:
    """Grouped bootstrap intervals of ``metrics`` for labels ``y``, scores ``p``, ``groups``.

    ``groups=None`` resamples rows (every row its own group).
    """
    full = point_metrics(y, p) if len(y) else {}
    reps = replicate_metrics(y, p, groups, n_boot=n_boot, seed=seed)
    out = {}
    for m in metrics:
        lo, hi, n = percentile_interval(reps[m], level)
        out[m] = Interval(float(full.get(m, math.nan)), lo, hi, n)
    return out


def prediction_intervals(predictions: pl.DataFrame, *, n_boot: int = N_BOOT, seed: int = SEED,
                         level: float = LEVEL) -> dict[str, float]:
    """``{split}_{metric}_lo`` / ``_hi`` for the ``oof`` and ``test`` rows of a prediction table
    (video_id, group_id, label, split, prob_fake), resampling groups."""
    out: dict[str, float] = {}
    for split in ("oof", "test"):
        part = predictions.filter(pl.col("split") == split)
        if not part.height:
            continue
        ivs = grouped_bootstrap(part["label"].to_numpy(), part["prob_fake"].to_numpy(),
                                part["group_id"].to_numpy(), n_boot=n_boot, seed=seed, level=level)
        for m, iv in ivs.items():
            out[f"{split}_{m}_lo"], out[f"{split}_{m}_hi"] = iv.lo, iv.hi
    return out


@dataclass(frozen=True)
class Comparison:
    """Model ``a`` minus model ``b`` on the same videos, with a paired grouped bootstrap."""

    a: str
    b: str
    split: str
    metric: str
    n_videos: int
    n_groups: int
    a_value: float
    b_value: float
    diff: float
    lo: float
    hi: float
    p_value: float            # two-sided: how often the replicates' difference crosses 0
    n_valid: int

    @property
    def better(self) -> bool:
        """Whether the interval of the difference excludes 0 in ``a``'s favour."""
        return self.lo > 0 if self.metric != "eer" else self.hi < 0

    def sentence(self) -> str:
        verdict = (f"{self.a} is better than {self.b}" if self.better else
                   f"{self.a} and {self.b} are not distinguishable at this size")
        return (f"{self.split} {self.metric}: {self.a} {self.a_value:.3f} vs {self.b} {self.b_value:.3f}, "
                f"difference {self.diff:+.3f} (95% CI {self.lo:+.3f} to {self.hi:+.3f}, "
                f"p = {self.p_value:.3f}, {self.n_videos} videos in {self.n_groups} groups): {verdict}.")


def paired_comparison(a: tuple[str, pl.DataFrame], b: tuple[str, pl.DataFrame], *, split: str = "oof",
                      metric: str = "roc_auc", n_boot: int = N_BOOT, seed: int = SEED,
                      level: float = LEVEL) -> Comparison | None:
    """Paired grouped bootstrap of ``metric(a) - metric(b)`` over the videos both predicted.

    Each replicate resamples groups once and scores both models on the same resampled videos, so
    what the two share (the hard videos, the easy ones) cancels. ``None`` when they share no
    video of ``split`` with both classes.
    """
    (name_a, pa), (name_b, pb) = a, b
    keys = ["video_id", "group_id", "label"]
    j = (pa.filter(pl.col("split") == split).select(*keys, pl.col("prob_fake").alias("pa"))
         .join(pb.filter(pl.col("split") == split).select("video_id", pl.col("prob_fake").alias("pb")),
               on="video_id", how="inner").sort("video_id"))
    if j.height == 0 or j["label"].n_unique() < 2:
        return None
    y, g = j["label"].to_numpy(), j["group_id"].to_numpy()
    ra = replicate_metrics(y, j["pa"].to_numpy(), g, n_boot=n_boot, seed=seed)[metric]
    rb = replicate_metrics(y, j["pb"].to_numpy(), g, n_boot=n_boot, seed=seed)[metric]
    d = ra - rb
    lo, hi, n = percentile_interval(d, level)
    fin = d[np.isfinite(d)]
    p_value = float(min(1.0, 2.0 * min(np.mean(fin <= 0), np.mean(fin >= 0)))) if fin.size else math.nan
    va = point_metrics(y, j["pa"].to_numpy())[metric]
    vb = point_metrics(y, j["pb"].to_numpy())[metric]
    return Comparison(name_a, name_b, split, metric, j.height, int(np.unique(g).size), va, vb, va - vb,
                      lo, hi, p_value, n)
