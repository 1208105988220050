"""Prefect layer: the ``fvc`` flow, its stage subflows and tasks. No business logic lives here;
every task is a few lines calling :mod:`fvcflow`."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.futures import as_completed
from prefect.tasks import exponential_backoff
from prefect_dask import DaskTaskRunner

from fvcflow.config import STAGES, Settings
from fvcflow.deep.device import gpu_count
from fvcflow.engine import check_scheduler, dask_cluster, scheduler_lost
from fvcflow.errors import FvcError
from fvcflow.explore import explore
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.stages.specs import SPECS
from fvcflow.training import finish, plan_models, prepare_splits, train_model, train_stack
from fvcflow.training.report import figures_markdown, table_rows

VIDEO_STAGES = tuple(s for s in STAGES if s in SPECS)   # the stages the runner runs on Dask


def transient(task, task_run, state) -> bool:
    """Retry what may pass (I/O hiccups, a lost worker); never a user's mistake."""
    try:
        state.result()
    except FvcError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


RETRY = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
             retry_condition_fn=transient, cache_policy=NO_CACHE, persist_result=False)


@task(name="ingest", **RETRY)
def ingest_task(settings: Settings) -> dict:
    summary = ingest_corpus(settings.with_process_secrets())  # a served run gets no secrets
    get_run_logger().info(summary.format())
    create_table_artifact(summary.as_rows(), key="ingest-summary",
                          description="Ingest: videos found, indexed, failed")
    return summary.as_rows()[0]


@task(name="plan", cache_policy=NO_CACHE, persist_result=False)
def plan_task(stage: str, settings: Settings) -> runner.StagePlan:
    return runner.plan(stage, settings)


@task(name="videos", tags=["video"], **RETRY)
def batch_task(stage: str, jobs: list[runner.Job], settings: Settings) -> runner.BatchOutcome:
    return runner.run_batch(stage, jobs, settings)


@task(name="publish", cache_policy=NO_CACHE, persist_result=False)
def finish_task(plan: runner.StagePlan, outcomes: list[runner.BatchOutcome], settings: Settings) -> dict:
    report = runner.finish(plan, outcomes, settings)
    create_table_artifact(report.as_rows(), key=f"{plan.stage.replace('_', '-')}-summary",
                          description=f"Stage {plan.stage}: videos in, done, cached, failed, seconds")
    get_run_logger().info("%s: %s", plan.stage, report.as_rows()[0])
    return report.as_rows()[0]


@flow(name="video-stage", flow_run_name="{stage}")
def video_stage(stage: str, settings: Settings) -> dict:
    try:
        plan = plan_task(stage, settings)
        jobs = runner.batches(plan.todo, settings.n_workers())
        futures = [batch_task.submit(stage, b, settings) for b in jobs]
        outcomes = runner.collect(plan, (f.result() for f in as_completed(futures)))  # as they finish
        return finish_task(plan, outcomes, settings)
    except Exception as exc:
        raise (scheduler_lost(settings.dask_address, exc) or exc) from None


#: the Prefect global concurrency limit every GPU training task takes one slot of
GPU_LIMIT = "gpu"


def ensure_gpu_limit() -> int:
    """Create the global concurrency limit ``gpu`` when missing (slots = GPUs seen, at least 1)."""
    slots = max(1, gpu_count())
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit
        except Exception:  # noqa: BLE001 - ObjectNotFound: first run against this server
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))
            return slots
        except Exception:  # noqa: BLE001 - created meanwhile by a concurrent run: use that one
            return client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit


@task(name="plan-training", **RETRY)
def plan_training_task(settings: Settings):
    plan = plan_models(settings.lake(), settings.train)
    prepare_splits(settings.lake(), settings.train)
    for name, why in plan.skipped.items():
        get_run_logger().warning("skipped %s: %s", name, why)
    return plan


@task(name="train-model", **RETRY)
def train_model_task(name: str, settings: Settings):
    return train_model(settings.lake(), name, settings.train)


@task(name="train-deep-model", tags=["gpu"], **RETRY)
def train_gpu_model_task(name: str, settings: Settings):
    with concurrency(GPU_LIMIT, occupy=1, strict=True):   # a second run waits for the card
        return train_model(settings.lake(), name, settings.train)


@task(name="train-stack", **RETRY)
def train_stack_task(name: str, results: list, settings: Settings):
    return train_stack(settings.lake(), results, settings.train, name=name)


@task(name="report", cache_policy=NO_CACHE, persist_result=False)
def finish_training_task(results: list, skipped: dict, settings: Settings) -> dict:
    summary = finish(settings.lake(), results, settings.train, skipped)
    create_markdown_artifact(summary.markdown(), key="leaderboard", description="Stage 5 leaderboard")
    board = table_rows(summary.leaderboard.drop("run_id", strict=False))
    create_table_artifact(board, key="leaderboard-table",
                          description="Stage 5 leaderboard, one row per model, best out-of-fold AUC first")
    create_markdown_artifact(figures_markdown(summary), key="report-figures",
                             description="ROC and precision-recall curves of every model")
    return {"models": len(results), "best": summary.best, "registered_version": summary.registered_version}


@task(name="explore", cache_policy=NO_CACHE, persist_result=False)
def explore_task(settings: Settings) -> dict:
    ex = explore(settings.lake())
    create_markdown_artifact(ex.markdown(embed=True), key="explore",
                             description="The corpus: balance, encodings, groups, failures")
    create_table_artifact(table_rows(ex.cues), key="encoding-cues",
                          description="Could encoding alone separate the corpus? Single-cue ROC AUCs")
    return {"page": str(ex.path), "encoding_auc": ex.combined_auc}


@flow(name="train")
def train_stage(settings: Settings) -> dict:
    plan = plan_training_task(settings)
    if any(plan.on_gpu(n) for n in plan.base):
        ensure_gpu_limit()
    results = [(train_gpu_model_task if plan.on_gpu(name) else train_model_task)(name, settings)
               for name in plan.base]
    results += [train_stack_task(name, results, settings) for name in plan.stacks]
    return finish_training_task(results, plan.skipped, settings)


@flow(name="fvc", log_prints=True)
def fvc(config: Settings = Settings()) -> list[dict]:
    """The whole pipeline: ingest, augment, features, scale, scaled features, train."""
    settings = config.resolved()
    summary: list[dict] = []
    if "ingest" in settings.stages:
        summary.append({"stage": "ingest", **ingest_task(settings)})
    stages = [s for s in VIDEO_STAGES if s in settings.stages]
    if stages:
        with dask_cluster(settings) as address:
            if settings.dask_address:
                check_scheduler(address)   # a user error, not retried tracebacks from every task
            runner_for_stages = DaskTaskRunner(address=address)
            for stage in stages:
                summary.append(video_stage.with_options(task_runner=runner_for_stages)(stage, settings))
    if ("ingest" in settings.stages or stages) and settings.lake().index.exists():
        explore_task(settings)
    if "train" in settings.stages:
        summary.append({"stage": "train", **train_stage(settings)})
    create_table_artifact(summary, key="fvc-run", description="Every stage of this run")
    return summary
