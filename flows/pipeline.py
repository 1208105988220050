"""Prefect layer: the ``fvc`` flow, composed of the video-stage subflow (:mod:`fvcflow.flows.video`)
and the training subflow (:mod:`fvcflow.flows.train`). No business logic lives here; every task
is a few lines calling :mod:`fvcflow`."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect_dask import DaskTaskRunner

from fvcflow.config import Settings, check_home
from fvcflow.engine import check_scheduler, dask_cluster
from fvcflow.flows.explore import explore_task
from fvcflow.flows.video import VIDEO_STAGES, ingest_task, video_stage


@flow(name="fvc", log_prints=True)
def fvc(config: Settings = Settings(), models: str | None = None) -> list[dict]:
    """The whole pipeline: ingest, augment, features, scale, scaled features, train. ``models``
    (a parameter of ``fvc/train-deep``), when given, replaces ``train.models``."""
    settings = config.resolved()
    if models:
        settings = settings.model_copy(update={"train": settings.train.model_copy(update={"models": models})})
    check_home(settings)   # a served run: the served work dir or an allowed one, whatever its parameters
    summary: list[dict] = []
    stages = [s for s in VIDEO_STAGES if s in settings.stages]
    if stages or "ingest" in settings.stages:     # ingest probes on the cluster the stages run on
        with dask_cluster(settings) as address:
            if settings.dask_address:
                check_scheduler(address)   # a user error, not retried tracebacks from every task
            if "ingest" in settings.stages:
                summary.append({"stage": "ingest", **ingest_task(settings, address)})
            settings = settings.without_secrets()   # ingest used the password: no later task receives it
            runner_for_stages = DaskTaskRunner(address=address)
            for stage in stages:
                summary.append(video_stage.with_options(task_runner=runner_for_stages)(stage, settings))
    settings = settings.without_secrets()
    if ("ingest" in settings.stages or stages) and settings.lake().index.exists():
        explore_task(settings)
    if "train" in settings.stages:
        # imported here: torch, MLflow and scikit-learn load only for a run that trains (seconds)
        from fvcflow.flows.train import train_stage

        summary.append({"stage": "train", **train_stage(settings)})
    create_table_artifact(summary, key="fvc-run", description="Every stage of this run")
    return summary
