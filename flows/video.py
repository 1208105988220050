"""Prefect layer: ingest and the video stages (1-4) as a subflow whose ``videos`` tasks run on Dask.

Its own module, light on imports: Dask workers import the module of the tasks they run, and a
worker of a video stage needs neither torch, scikit-learn nor MLflow (the training tasks are in
:mod:`fvcflow.flows.train`)."""

from __future__ import annotations

from distributed import KilledWorker
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.tasks import exponential_backoff

from fvcflow.config import STAGES, Settings
from fvcflow.engine import scheduler_lost
from fvcflow.errors import FvcError, WorkerDied
from fvcflow.stages import guard, runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.stages.specs import SPECS

VIDEO_STAGES = tuple(s for s in STAGES if s in SPECS)   # the stages the runner runs on Dask


def transient(task, task_run, state) -> bool:
    """Retry what may pass (I/O hiccups); never a user's mistake, nor a dead worker: Dask has run
    the task again already, and the flow splits a batch whose worker died (:mod:`fvcflow.stages.guard`)."""
    try:
        state.result()
    except (FvcError, KilledWorker):
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


RETRY = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
             retry_condition_fn=transient, cache_policy=NO_CACHE, persist_result=False)


@task(name="ingest", **RETRY)
def ingest_task(settings: Settings, address: str | None = None) -> dict:
    summary = ingest_corpus(settings.with_process_secrets(), address)  # a served run gets no secrets
    get_run_logger().info(summary.format())
    rows = [{**row, "digest": summary.digest} for row in summary.as_rows()]
    create_table_artifact(rows, key="ingest-summary",
                          description="Ingest: videos found, indexed, failed; the index's content digest")
    return rows[0]


@task(name="plan", cache_policy=NO_CACHE, persist_result=False)
def plan_task(stage: str, settings: Settings) -> runner.StagePlan:
    return runner.plan(stage, settings)


@task(name="videos", tags=["video"], **RETRY)
def batch_task(stage: str, jobs: list[runner.Job], settings: Settings, token: str) -> runner.BatchOutcome:
    return guard.guarded_batch(stage, jobs, settings, token)


def run_batches(stage: str, batches: list[list[runner.Job]], settings: Settings):
    """The outcomes of ``batches`` as they finish. A batch of several videos whose worker died
    (``WorkerDied`` from its next attempt, or the scheduler's ``KilledWorker``) runs again as one
    task per video; a one-video task whose worker died is that video's failure row."""
    tokens: list[str] = []
    requeued: dict[tuple, int] = {}
    try:
        while batches:
            pending = {}
            for b in batches:
                tokens.append(guard.new_token())
                pending[batch_task.submit(stage, b, settings, tokens[-1])] = (b, tokens[-1])
            batches = []
            for future in as_completed(list(pending)):
                jobs, token = pending[future]
                try:
                    yield future.result()
                except (WorkerDied, KilledWorker) as exc:
                    ids = tuple(j.video_id for j in jobs)
                    if (isinstance(exc, KilledWorker) and not guard.started(settings.home, token)
                            and requeued.get(ids, 0) < 3):
                        # the scheduler gave up on a task that never began (it waited on the dead
                        # worker, allowed-failures = 0): it runs again as it was (three times at most)
                        requeued[ids] = requeued.get(ids, 0) + 1
                        batches.append(jobs)
                    elif len(jobs) > 1:
                        get_run_logger().warning("%s: a worker died running %d videos; running them "
                                                 "one per task", stage, len(jobs))
                        batches.extend([j] for j in jobs)
                    else:
                        get_run_logger().warning("%s: %s killed its worker", stage, jobs[0].path)
                        yield guard.killed_outcome(stage, jobs[0])
    finally:
        guard.forget(settings.home, tokens)


@task(name="publish", cache_policy=NO_CACHE, persist_result=False)
def finish_task(plan: runner.StagePlan, outcomes: list[runner.BatchOutcome], settings: Settings) -> dict:
    report = runner.finish(plan, outcomes, settings)
    create_table_artifact(report.as_rows(), key=f"{plan.stage.replace('_', '-')}-summary",
                          description=f"Stage {plan.stage}: videos in, done, cached, failed, seconds, "
                                      "the published table's content digest")
    get_run_logger().info("%s: %s", plan.stage, report.as_rows()[0])
    return report.as_rows()[0]


@flow(name="video-stage", flow_run_name="{stage}")
def video_stage(stage: str, settings: Settings) -> dict:
    settings = settings.without_secrets()   # the tasks' settings are pickled to the Dask workers
    try:
        plan = plan_task(stage, settings)
        jobs = runner.batches(plan.todo, settings.n_workers())
        outcomes = runner.collect(plan, run_batches(stage, jobs, settings))  # as they finish
        return finish_task(plan, outcomes, settings)
    except Exception as exc:
        runner.release(stage, settings)     # the stage did not finish: its claim goes (fvcflow.stages.claim)
        raise (scheduler_lost(settings.dask_address, exc) or exc) from None
