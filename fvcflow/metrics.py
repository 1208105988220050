"""Video-level metrics of ``P(fake)`` predictions, per fold and on the hold-out test.

Threshold metrics (accuracy, F1) use ``p >= 0.5``. Ranking metrics (ROC AUC, average precision,
EER) are NaN when only one class is present, never an exception.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

METRICS = ("accuracy", "f1", "roc_auc", "average_precision", "eer", "log_loss", "brier")
#: metrics where lower is better (the others: higher is better)
LOWER_IS_BETTER = frozenset({"eer", "log_loss", "brier"})


def equal_error_rate(y: np.ndarray, p: np.ndarray) -> float:
    """Equal error rate: where the false positive rate equals the false negative rate.

    Taken from the ROC curve, linearly interpolated between the two operating points where
    ``FNR - FPR`` changes sign.

    >>> round(equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9])), 6)
    0.5
    """
    y = np.asarray(y)
    if np.unique(y).size < 2:
        return float("nan")
    fpr, tpr, _ = skm.roc_curve(y, p)
    d = (1.0 - tpr) - fpr                  # FNR - FPR: starts at 1, ends at -1
    i = int(np.argmax(d <= 0))             # first point at or past the crossing
    if d[i] == 0:
        return float(fpr[i])
    a = d[i - 1] / (d[i - 1] - d[i])
    return float(fpr[i - 1] + a * (fpr[i] - fpr[i - 1]))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of labels ``y`` (0/1) and scores ``p`` (NaN when only one class is present): the
    Mann-Whitney statistic with tied scores counted half, which is the area under the ROC curve
    with ties as diagonal steps (scikit-learn's ``roc_auc_score``, tests/test_metrics.py). One
    sort, no input validation: the inner cross-validation scores every grid point with it, where
    ``roc_auc_score``'s checks cost more than the models' fits on a small corpus.

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.4, 0.8]))
    0.875
    """
    y = np.asarray(y) == 1
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(p, dtype=np.float64), return_inverse=True,
                                   return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0          # 1-based, ties share the mean
    return float((average_rank[inverse.ravel()][y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """All of ``METRICS`` for labels ``y`` (0/1) and probabilities ``p`` of class 1.

    Examples
    --------
    >>> m = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.7, 0.4, 0.1]))
    >>> m["accuracy"], m["roc_auc"]
    (0.75, 1.0)
    """
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"y and p must be 1-D and of equal, non-zero length; got {y.shape} and {p.shape}")
    both = np.unique(y).size == 2
    hard = (p >= 0.5).astype(int)
    return {
        "accuracy": float(skm.accuracy_score(y, hard)),
        "f1": float(skm.f1_score(y, hard, zero_division=0.0)),
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else float("nan"),
        "average_precision": float(skm.average_precision_score(y, p)) if both else float("nan"),
        "eer": equal_error_rate(y, p),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p, pos_label=1)),
    }


def summarize_folds(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """``{metric}_mean`` and ``{metric}_std`` (population) over folds, ignoring NaN folds.

    >>> round(summarize_folds([{"roc_auc": 0.8}, {"roc_auc": 0.6}])["roc_auc_mean"], 6)
    0.7
    """
    out: dict[str, float] = {}
    for name in per_fold[0] if per_fold else ():
        vals = np.array([m[name] for m in per_fold], dtype=float)
        ok = vals[~np.isnan(vals)]
        out[f"{name}_mean"] = float(ok.mean()) if ok.size else float("nan")
        out[f"{name}_std"] = float(ok.std()) if ok.size else float("nan")
    return out


#: how the registered detector's verdict threshold is chosen (logged with the model, shown by predict)
THRESHOLD_RULE = "max balanced accuracy (Youden's J) on the out-of-fold predictions"


def operating_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The verdict threshold of a detector: the ``P(fake)`` at or above which a video is called
    fake that maximises the balanced accuracy ((TPR + TNR) / 2, i.e. Youden's J = TPR - FPR) of
    labels ``y`` (0/1) and probabilities ``p``, meant for out-of-fold predictions. Between two
    neighbouring scores the midpoint is taken (a new video between them is not pushed to one
    side). 0.5 when only one class is present.

    >>> round(operating_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.35, 0.9])), 6)
    0.325
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    y, p = y[ok], p[ok]
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = skm.roc_curve(y, p)
    k = int(np.argmax(tpr - fpr))
    if not np.isfinite(thr[k]):          # only "call nothing fake" (J = 0): keep 0.5
        return 0.5
    below = p[p < thr[k]]
    t = (thr[k] + below.max()) / 2 if below.size else thr[k]
    return float(min(max(t, 1e-6), 1 - 1e-6))
