"""The evidence behind one verdict: which features moved this video's score, and by how much.

Per-prediction contributions, in the model's log-odds (before calibration, which is monotone):

- trees: the booster's own contribution output (XGBoost ``pred_contribs``, LightGBM
  ``pred_contrib``: TreeSHAP values, exact for the model; CatBoost ``ShapValues``);
- linear models: coefficient x the standardised value the model saw (the pipeline's scaler), the
  contribution against the training mean;
- a stack: each tabular base's own contributions, weighted by the meta-learner's coefficient of
  that base and the slope of its probability (a first-order chain rule): **approximate**, and
  said so; a base that scores videos (deep) enters as one term, ``prob_<name>``.

The pipeline's imputation and correlation filter come first, as at training: a feature dropped
by the filter has no contribution of its own (its kept twin carries it).

>>> det = load_detector(Lake.at("fvc-data"))                        # doctest: +SKIP
>>> explain(det, "clip.mp4").top_features[0]                        # doctest: +SKIP
{'feature': 's2_dct_ac_energy_mean', 'value': 0.41, 'contribution': 1.93}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fvcflow.config import ScaleConfig
from fvcflow.video.limits import Limits, bounded

#: features listed per verdict
TOP = 8


DEEP_METHOD = ("deep model: mean of its clip logits (max over face tracks); listed: its clips, "
               "highest first (value: the clip's P(fake), contribution: its logit)")


def best_clips(video: Any, n: int = TOP) -> list[dict[str, Any]]:
    """The clips of a deep model's last video that scored highest (of the face track that drove
    the score, when it tracked faces), as evidence rows: ``clip`` (its index in the video's
    evaluation clips), ``face_track``, ``value`` (the clip's P(fake)) and ``contribution`` (its logit)."""
    clips = list(getattr(video, "last_clips", None) or [])
    track = getattr(video, "last_track", None)
    if track is not None:
        clips = [c for c in clips if c[0] == track]
    clips.sort(key=lambda c: -c[2])
    return [{"feature": f"clip {i}" + ("" if t is None else f" of face track {t}"), "clip": i,
             "face_track": t, "value": 0.5 * (1 + math.tanh(lg / 2)), "contribution": lg}
            for t, i, lg in clips[:n]]


@dataclass
class Explained:
    """``P(fake)`` of one video and what moved it."""

    prob_fake: float
    method: str | None = None            # how the contributions were computed (None: not available)
    approximate: bool | None = None
    top_features: list[dict[str, Any]] = field(default_factory=list)   # feature, value, contribution


def _unwrap(model: Any) -> Any:
    """The model under a calibration wrapper (contributions are in the raw model's log-odds)."""
    return model.model if hasattr(model, "calibrator") and hasattr(model, "model") else model


def _pipeline_parts(model: Any, X: pd.DataFrame) -> tuple[Any, np.ndarray, list[str]]:
    """(estimator, the values it sees, their names) of a fitted ``impute -> decorrelate -> [scale]
    -> model`` pipeline, or of a bare estimator."""
    cols = list(X.columns)
    steps = getattr(model, "steps", None)
    if not steps:
        return model, X.to_numpy(dtype=np.float64), cols
    Z: Any = X
    names = cols
    for name, step in steps[:-1]:
        Z = step.transform(Z)
        if name == "decorrelate":
            names = [names[i] for i in step.keep_]
    return steps[-1][1], np.asarray(Z, dtype=np.float64), names


def _inner(est: Any, Z: np.ndarray, names: list[str]) -> tuple[Any, np.ndarray, list[str]]:
    """Through the wrappers a registered model fits inside its pipeline: column screening
    (:class:`fvcflow.models.select.Screened`: the kept columns, scaled as the model saw them; a
    dropped column contributes nothing) and grouped early stopping (the refitted booster)."""
    while True:
        if hasattr(est, "keep_") and hasattr(est, "scale_") and hasattr(est, "estimator_"):
            Z = Z[:, est.keep_] * est.scale_
            names = [names[i] for i in est.keep_]
            est = est.estimator_
        elif hasattr(est, "best_rounds_") and hasattr(est, "estimator_"):
            est = est.estimator_
        else:
            return est, Z, names


def tabular_contributions(model: Any, X: pd.DataFrame) -> tuple[np.ndarray, list[str], str]:
    """Per-row contributions ``(n_rows, n_features)`` of a tabular model (pipeline or estimator) on
    ``X``, the feature names, and the method's name. Raises ``TypeError`` for a model of another kind.

    >>> from sklearn.linear_model import LogisticRegression
    >>> X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 1.0, 0.0, 0.0]})
    >>> m = LogisticRegression().fit(X, [0, 0, 1, 1])
    >>> c, names, how = tabular_contributions(m, X)
    >>> c.shape, names, how
    ((4, 2), ['a', 'b'], 'coefficient x value (linear)')
    """
    est, Z, names = _pipeline_parts(model, X)
    est, Z, names = _inner(est, Z, names)
    if hasattr(est, "get_booster"):                               # XGBoost
        import xgboost as xgb

        out = est.get_booster().predict(xgb.DMatrix(Z), pred_contribs=True)
        return np.asarray(out)[:, :-1], names, "XGBoost pred_contribs (TreeSHAP)"
    if hasattr(est, "booster_"):                                  # LightGBM
        out = est.booster_.predict(Z, pred_contrib=True)
        return np.asarray(out)[:, :-1], names, "LightGBM pred_contrib (TreeSHAP)"
    if type(est).__module__.startswith("catboost"):
        from catboost import Pool

        out = est.get_feature_importance(Pool(Z), type="ShapValues")
        return np.asarray(out)[:, :-1], names, "CatBoost ShapValues"
    coef = getattr(est, "coef_", None)
    if coef is not None and np.asarray(coef).ndim == 2 and np.asarray(coef).shape[0] == 1:
        scaled = bool(getattr(model, "steps", None)) and any(n == "scale" for n, _ in model.steps)
        how = "coefficient x standardised value (linear)" if scaled else "coefficient x value (linear)"
        return Z * np.asarray(coef, dtype=np.float64)[0], names, how
    raise TypeError(f"no per-prediction contributions for {type(est).__name__}")


def stack_contributions(stack: Any, X: pd.DataFrame) -> tuple[np.ndarray, list[str], str]:
    """Approximate contributions of a stack: each base's, times the meta-learner's slope for it."""
    meta_est, _, _ = _pipeline_parts(stack.meta, pd.DataFrame(stack.base_probabilities(X)))
    coef = getattr(meta_est, "coef_", None)
    weights = np.asarray(coef, dtype=np.float64)[0] if coef is not None else np.ones(len(stack.bases))
    probs = stack.base_probabilities(X)
    names: list[str] = []
    total: dict[str, np.ndarray] = {}
    for k, (name, est, cols) in enumerate(stack.bases):
        slope = weights[k] * probs[:, k] * (1 - probs[:, k])        # d meta-logit / d base-logit
        try:
            c, feats, _ = tabular_contributions(est, X[list(cols)])
        except (TypeError, KeyError):                               # a video base, or another kind
            c, feats = np.log(np.clip(probs[:, [k]], 1e-6, 1) / np.clip(1 - probs[:, [k]], 1e-6, 1)), \
                [f"prob_{name}"]
        for j, f in enumerate(feats):
            if f not in total:
                total[f] = np.zeros(len(X))
                names.append(f)
            total[f] = total[f] + slope * c[:, j]
    return np.column_stack([total[f] for f in names]), names, "stack: bases' contributions x meta slope"


def contributions(model: Any, X: pd.DataFrame) -> tuple[np.ndarray, list[str], str, bool]:
    """(contributions, names, method, approximate) of any tabular detector (calibrated or not)."""
    raw = _unwrap(model)
    if hasattr(raw, "bases") and hasattr(raw, "meta"):
        c, names, how = stack_contributions(raw, X)
        return c, names, how, True
    c, names, how = tabular_contributions(raw, X)
    return c, names, how, False


def top_features(c: np.ndarray, names: list[str], values: dict[str, float], n: int = TOP) -> list[dict]:
    """The ``n`` largest contributions (by size) of one row, with the feature's raw value."""
    order = np.argsort(-np.abs(c), kind="stable")[:n]
    out = []
    for j in order:
        v = values.get(names[j], math.nan)
        out.append({"feature": names[j], "value": None if v is None or v != v else float(v),
                    "contribution": float(c[j])})
    return out


def explain(det: Any, path: str | Path, *, scale: ScaleConfig | None = None,
            face_model: str | Path | None = None, face_every: int = 3,
            limits: Limits | None = None, face_tracker: dict | None = None) -> Explained:
    """``P(fake)`` of ``path`` exactly as :meth:`Detector.score` gives it, with its evidence."""
    with bounded(limits):
        if det.video is not None or not det.columns:
            prob = det._score(path, scale=scale, face_model=face_model,
                              face_every=face_every, face_tracker=face_tracker)
            return Explained(prob, DEEP_METHOD, None, best_clips(det.video))
        row = det.features(path, scale=scale, face_model=face_model,
                           face_every=face_every, face_tracker=face_tracker)
    prob = det.predict_rows([row])[0]
    X = pd.DataFrame([{c: float(row.get(c, math.nan)) for c in det.columns}], dtype="float64")
    try:
        c, names, how, approx = contributions(det.model, X)
    except TypeError as exc:
        return Explained(prob, f"none: {exc}")
    return Explained(prob, how, approx, top_features(c[0], names, row))


def tile_overlay(path: str | Path, *, limits: Limits | None = None, title: str = "",
                 small: int | None = None, tiles: int = 5) -> dict[str, Any]:
    """The deviant-tile map of ``path``'s local features drawn over a frame
    (:mod:`fvcflow.stages.overlay`, the training report's drawing): of its sampled frames, the one
    whose most deviant 32 px tile has the largest robust z, in gray, each tile tinted by its
    combined robust z, the deviant tiles (z above ``z_deviant``) outlined in yellow and their
    largest connected group in cyan.

    Returns ``png`` (bytes, matplotlib with a colour bar; or, with ``small`` set, ``jpeg``: a
    Pillow drawing ``small`` pixels wide), ``frame`` (its index), ``max_z``, ``deviant_tiles``,
    ``region_tiles``, ``z_deviant`` and ``top_tiles`` (the ``tiles`` highest: x, y, size, z,
    deviant, region). Read within ``limits`` (the bounds in force by default)."""
    import io

    from fvcflow.kernels import Z_DEVIANT
    from fvcflow.stages.overlay import most_deviant_frame, overlay_figure, overlay_image, top_tiles

    with bounded(limits):
        index, gray, result = most_deviant_frame(path)
    out: dict[str, Any] = {}
    if small:
        out["jpeg"] = overlay_image(gray, result, width=small)
    else:
        buf = io.BytesIO()
        overlay_figure(gray, result, title).savefig(buf, format="png")
        out["png"] = buf.getvalue()
    z = result.zmap[np.isfinite(result.zmap)] if result.zmap.size else np.array([])
    return {**out, "frame": int(index), "max_z": float(z.max()) if z.size else None,
            "deviant_tiles": int(result.deviant.sum()), "region_tiles": int(result.region.sum()),
            "z_deviant": float(Z_DEVIANT), "top_tiles": top_tiles(result, tiles)}
