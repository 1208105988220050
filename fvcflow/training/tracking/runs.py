"""MLflow tracking: SQLite store in the work dir, a parent run per model, a nested run per fold.

The tracking URI is set explicitly on every call (``mlflow.set_tracking_uri``) and never taken
from global state; artifacts go to ``<work dir>/mlartifacts``. The file store (``mlruns/``) is
never used.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fvcflow import fingerprint, saved
from fvcflow.config import CHAMPION_ALIAS, TrainConfig
from fvcflow.digest import INPUT_TABLES, lake_digests
from fvcflow.errors import DiskFullError, is_disk_full
from fvcflow.models import get_model_spec
from fvcflow.store import Lake
from fvcflow.training.fitting.results import ModelResult
from fvcflow.training.tracking import plots
from fvcflow.training.tracking.seed import seed_sqlite

log = logging.getLogger("fvcflow.training")

def tracking_uri(lake: Lake, cfg: TrainConfig) -> str:
    """The configured URI, or the work dir's SQLite store."""
    return cfg.tracking_uri or lake.mlflow_uri


def configure(lake: Lake, cfg: TrainConfig) -> str:
    """Point MLflow at the store and return the id of ``cfg.experiment`` (created if missing).

    >>> exp_id = configure(Lake.at("/tmp/fvc-doc"), TrainConfig())   # doctest: +SKIP
    """
    uri = tracking_uri(lake, cfg)
    lake.root.mkdir(parents=True, exist_ok=True)
    seed_sqlite(uri)                        # a new store: a copy of an empty one, not the migrations
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(cfg.experiment, artifact_location=lake.mlartifacts.as_uri())
    except MlflowException:  # created concurrently by another task
        return client.get_experiment_by_name(cfg.experiment).experiment_id


def log_model(model: Any, example: Any = None, **kw: Any):
    """Log ``model`` (any kind) in the safe format (:mod:`fvcflow.saved`: a code-based pyfunc over
    parts that load without unpickling); MLflow's ``ModelInfo``."""
    return saved.log_model(model, example, **kw)


def _clean(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


def _figures(result: ModelResult) -> dict[str, Any]:
    pred = result.predictions
    curves = {}
    for split in ("oof", "test"):
        part = pred.filter(pred["split"] == split)
        if part.height:
            curves[split] = (part["label"].to_numpy(), part["prob_fake"].to_numpy())
    figs = {"roc.png": plots.roc_figure(curves, f"{result.name}: ROC"),
            "pr.png": plots.pr_figure(curves, f"{result.name}: precision-recall")}
    for split, (y, p) in curves.items():
        title = f"{result.name} {split}: confusion (p >= 0.5)"
        figs[f"confusion_{split}.png"] = plots.confusion_figure(y, p, title)
    if result.has_importance:
        figs["feature_importance.png"] = plots.importance_figure(result.importance, title=result.name)
    return figs


def log_result(lake: Lake, cfg: TrainConfig, result: ModelResult, example: Any = None) -> ModelResult:
    """Log ``result`` as a parent run with one nested run per fold; sets ``run_id``/``model_uri``.

    Every kind alike: parameters, fold metrics (and the fold's per-epoch ``fold_history`` as
    MLflow steps, its ``fold_artifacts`` such as the best checkpoint), summary metrics, figures,
    importances when the model has them, then the model through its flavour's logger, with
    ``example`` (default ``result.example``).

    A full disk while logging (an artifact, the SQLite store) raises
    :class:`~fvcflow.errors.DiskFullError` naming where; the half-logged runs are deleted with
    their artifacts, so the registry and the leaderboard never see them.
    """
    example = result.example if example is None else example
    exp_id = configure(lake, cfg)
    runs: list[str] = []
    try:
        return _log_result(lake, cfg, result, example, exp_id, runs)
    except Exception as exc:
        if not is_disk_full(exc) or isinstance(exc, DiskFullError):
            raise
        where = _discard_runs(lake, cfg, runs)
        raise DiskFullError(where, f"MLflow could not log {result.name} (the half-logged run is deleted); "
                                   "free space there and rerun the training") from None


def _discard_runs(lake: Lake, cfg: TrainConfig, run_ids: list[str]) -> str:
    """Delete runs and their local artifacts (and logged models); the artifact folder they used."""
    uri = tracking_uri(lake, cfg)
    client = MlflowClient(uri, uri)
    where = str(lake.mlartifacts)
    for run_id in reversed(run_ids):
        try:
            run = client.get_run(run_id)
            folder = _local(run.info.artifact_uri)
            if folder is not None:
                where = str(folder.parent.parent)              # the experiment's artifact folder
                shutil.rmtree(folder.parent, ignore_errors=True)   # <run id>/artifacts and the run folder
            for model in client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                     filter_string=f"source_run_id = '{run_id}'"):
                if (mfolder := _local(model.artifact_location)) is not None:
                    shutil.rmtree(mfolder.parent if mfolder.name == "artifacts" else mfolder,
                                  ignore_errors=True)
                client.delete_logged_model(model.model_id)
            client.delete_run(run_id)
        except Exception as exc:  # noqa: BLE001 - best effort: the store itself may be full
            log.warning("could not discard the half-logged run %s: %s", run_id, exc)
    return where


def _local(uri: str | None) -> Path | None:
    """The local folder of a ``file:`` artifact URI (None for remote stores)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(unquote(parsed.path))


def _log_result(lake: Lake, cfg: TrainConfig, result: ModelResult, example: Any, exp_id: str,
                runs: list[str]) -> ModelResult:
    start = time.perf_counter()
    spec = get_model_spec(result.name)
    tags = {"fvc.model": result.name, "fvc.kind": result.kind}
    if result.feature_set is not None:
        tags["fvc.feature_set"] = result.feature_set
    # what the numbers came from: the input tables' digests and the environment (libraries, CPU)
    env = {**{f"fvc.digest.{t}": d for t, d in lake_digests(lake, INPUT_TABLES).items()},
           **fingerprint.tags()}
    params = {"model": result.name, "kind": result.kind, "folds": cfg.folds, "seed": cfg.seed,
              "n_train_rows": result.n_train_rows, "use_augmented": cfg.use_augmented}
    if result.feature_set is not None:
        params.update({"feature_set": result.feature_set, "n_features": len(result.columns),
                       "inner_folds": cfg.inner_folds, "corr_threshold": cfg.corr_threshold,
                       "grid": json.dumps(dict(cfg.grids.get(result.name, spec.grid)), default=str)})
    params.update({**{f"best_{k}": v for k, v in result.best_params.items()}, **result.params})
    with mlflow.start_run(experiment_id=exp_id, run_name=result.name,
                          tags={**tags, **result.tags, **env, "fvc.role": "model"}) as run:
        runs.append(run.info.run_id)
        mlflow.log_params(params)
        for k, (m, fold_params) in enumerate(zip(result.fold_metrics, result.fold_params)):
            with mlflow.start_run(experiment_id=exp_id, run_name=f"{result.name}/fold{k}", nested=True,
                                  tags={**tags, "fvc.role": "fold", "fvc.fold": str(k)}) as fold_run:
                runs.append(fold_run.info.run_id)
                mlflow.log_params({"fold": k, **fold_params})
                history = result.fold_history[k] if k < len(result.fold_history) else []
                for step, epoch in enumerate(history):
                    mlflow.log_metrics(_clean(epoch), step=step)
                mlflow.log_metrics(_clean(m))
                files = result.fold_artifacts[k] if k < len(result.fold_artifacts) else {}
                for where, path in files.items():
                    mlflow.log_artifact(str(path), artifact_path=where or None)
        mlflow.log_metrics({**_clean(result.cv_summary, "cv_"), **_clean(result.oof_metrics, "oof_"),
                            **_clean(result.test_metrics, "test_"), **_clean(result.intervals),
                            "fit_seconds": result.fit_seconds})
        for name, fig in _figures(result).items():
            mlflow.log_figure(fig, name)
        if result.has_importance:
            mlflow.log_text(result.importance.write_csv(), "feature_importance.csv")
        info = log_model(result.model, example)
    result.run_id, result.model_uri = run.info.run_id, info.model_uri
    result.log_seconds = time.perf_counter() - start
    return result


def register(lake: Lake, cfg: TrainConfig, result: ModelResult, *, model_uri: str | None = None,
             tags: dict[str, str] | None = None) -> str:
    """Register ``result``'s logged model (or ``model_uri``: its calibrated detector) as a new version
    of ``cfg.registered_name``, with ``tags`` added; its version."""
    configure(lake, cfg)
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):  # MLflow prints, not logs
        mv = mlflow.register_model(model_uri or result.model_uri, cfg.registered_name, tags={
            "fvc.model": result.name, "fvc.kind": result.kind, "fvc.feature_set": result.feature_set or "",
            "oof_roc_auc": f"{result.oof_metrics.get('roc_auc', float('nan')):.6f}", "run_id": result.run_id,
            **(tags or {})})
        # the best model of this training is the champion: ``models:/NAME@champion`` names it
        MlflowClient().set_registered_model_alias(cfg.registered_name, CHAMPION_ALIAS, mv.version)
    for line in said.getvalue().splitlines():
        log.debug("mlflow: %s", line)
    log.info("registered %s as %s version %s (alias %s)", result.name, cfg.registered_name, mv.version,
             CHAMPION_ALIAS)
    return str(mv.version)
