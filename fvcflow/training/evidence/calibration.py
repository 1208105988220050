"""The registered detector's probability calibration, fitted on out-of-fold predictions.

The best model's out-of-fold ``P(fake)`` (every video scored by a model that never saw its group)
is the calibration data. Sigmoid (Platt, on the log-odds) and isotonic maps are compared by their
grouped cross-validated log loss (stratified group k-fold over those predictions: a calibrator
never scores a group it was fitted on); the better one, refitted on all out-of-fold predictions,
goes into the registered :class:`~fvcflow.models.calibrated.CalibratedDetector`.

The expected calibration error is reported before and after: out-of-fold "after" uses the
cross-fitted calibrated probabilities (honest), test "after" the final calibrator on the
hold-out test predictions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sklearn.metrics import log_loss

from fvcflow.models.calibrated import EPS, CalibratedDetector, logit
from fvcflow.models.grouped import ScoreCalibrator, grouped_kfold

log = logging.getLogger("fvcflow.training")

METHODS = ("sigmoid", "isotonic")
ECE_BINS = 10


def expected_calibration_error(y, p, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: the row-weighted mean of ``|fraction fake - mean P(fake)|``
    over ``n_bins`` equal-width bins of ``P(fake)`` (the last bin includes 1.0).

    >>> expected_calibration_error(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.2]))
    0.15
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if not len(y):
        return float("nan")
    b = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for k in np.unique(b):
        m = b == k
        total += m.sum() * abs(y[m].mean() - p[m].mean())
    return round(float(total / len(y)), 12)


def reliability_table(y, p, n_bins: int = ECE_BINS) -> pl.DataFrame:
    """Per bin of ``P(fake)``: ``lo``, ``hi``, ``n``, ``mean_prob``, ``frac_fake`` (non-empty bins)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    b = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = [{"lo": k / n_bins, "hi": (k + 1) / n_bins, "n": int((b == k).sum()),
             "mean_prob": float(p[b == k].mean()), "frac_fake": float(y[b == k].mean())}
            for k in range(n_bins) if (b == k).any()]
    return pl.DataFrame(rows, schema={"lo": pl.Float64, "hi": pl.Float64, "n": pl.Int64,
                                      "mean_prob": pl.Float64, "frac_fake": pl.Float64})


@dataclass
class DetectorCalibration:
    """The chosen calibration of one model, and what it changes."""

    model: str
    method: str
    calibrator: ScoreCalibrator
    log_loss: dict[str, float]            # grouped-CV log loss: none, sigmoid, isotonic
    ece: dict[str, float]                 # oof_before, oof_after, test_before, test_after
    predictions: pl.DataFrame             # video_id, group_id, label, split, prob_fake, prob_calibrated
    n_folds: int
    model_uri: str | None = None
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow: ``calibration_ece_*``, ``calibration_log_loss_*``."""
        out = {f"calibration_ece_{k}": v for k, v in self.ece.items()}
        out.update({f"calibration_log_loss_{k}": v for k, v in self.log_loss.items()})
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}

    def wrap(self, model) -> CalibratedDetector:
        """The deployable detector: ``model`` followed by this calibration."""
        return CalibratedDetector(model, self.calibrator, method=self.method)


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, EPS, 1 - EPS)


def fit_calibration(predictions: pl.DataFrame, *, folds: int = 5, seed: int = 0,
                    model: str = "") -> DetectorCalibration:
    """Choose and fit the calibration of a model from its prediction table (oof and test rows).

    Parameters
    ----------
    predictions : polars.DataFrame
        ``video_id``, ``group_id``, ``label``, ``split`` ("oof"/"test"), ``prob_fake``.
    folds : int
        Grouped folds over the out-of-fold predictions for the choice of method (fewer when a
        class has fewer groups).
    """
    oof = predictions.filter(pl.col("split") == "oof").sort("video_id")
    test = predictions.filter(pl.col("split") == "test").sort("video_id")
    y, p, g = oof["label"].to_numpy().astype(int), oof["prob_fake"].to_numpy(), oof["group_id"].to_numpy()
    s = logit(p)
    splits = list(grouped_kfold(y, g, folds, seed=seed, what="detector calibration"))
    crossfit = {m: np.full(len(y), np.nan) for m in METHODS}
    for tr, va in splits:
        for m in METHODS:
            crossfit[m][va] = _clip(ScoreCalibrator(m).fit(s[tr], y[tr]).predict(s[va]))
    losses = {"none": float(log_loss(y, _clip(p), labels=[0, 1]))}
    losses.update({m: float(log_loss(y, crossfit[m], labels=[0, 1])) for m in METHODS})
    method = min(METHODS, key=lambda m: losses[m])
    calibrator = ScoreCalibrator(method).fit(s, y)
    ece = {"oof_before": expected_calibration_error(y, p),
           "oof_after": expected_calibration_error(y, crossfit[method])}
    parts = [oof.select("video_id", "group_id", "label", "split", "prob_fake")
             .with_columns(prob_calibrated=pl.Series(crossfit[method]))]
    if test.height:
        pt = test["prob_fake"].to_numpy()
        after = _clip(calibrator.predict(logit(pt)))
        ece["test_before"] = expected_calibration_error(test["label"].to_numpy(), pt)
        ece["test_after"] = expected_calibration_error(test["label"].to_numpy(), after)
        parts.append(test.select("video_id", "group_id", "label", "split", "prob_fake")
                     .with_columns(prob_calibrated=pl.Series(after)))
    notes = []
    if losses[method] > losses["none"]:
        notes.append(f"the {method} map's grouped-CV log loss ({losses[method]:.4f}) is above the "
                     f"uncalibrated one ({losses['none']:.4f}): the model's probabilities were already "
                     "well calibrated at this size")
    log.info("calibration of %s: %s (grouped CV log loss %s), ECE out-of-fold %.4f -> %.4f", model, method,
             ", ".join(f"{k} {v:.4f}" for k, v in losses.items()), ece["oof_before"], ece["oof_after"])
    return DetectorCalibration(model, method, calibrator, losses, ece, pl.concat(parts), len(splits),
                               notes=notes)
