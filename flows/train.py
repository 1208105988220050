"""Prefect layer: stage 5, the training subflow (models, stacks, the report); deep models of a
``device="gpu"`` kind hold a slot of their node's ``gpu:<hostname>`` concurrency limit. The
corpus exploration is in :mod:`fvcflow.flows.explore`.

Where there are devices to lease (GPUs, or ``train.deep.devices``), the deep models are submitted
together: each task waits for a ``gpu`` slot, then leases one free device for its lifetime
(:func:`fvcflow.deep.device.lease_device`), so N GPUs train N models at once while the CPU models
train in the flow; a second run waits for a slot. Without devices, models train one after another."""

from __future__ import annotations

import socket

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency

from fvcflow.config import Settings
from fvcflow.deep.device import gpu_count
from fvcflow.deep.loop import fill_clip_caches
from fvcflow.engine import dask_cluster
from fvcflow.flows.video import RETRY
from fvcflow.models import get_model_spec
from fvcflow.training import finish, plan_models, prepare_splits, train_model, train_stack
from fvcflow.training.evidence.report import figures_markdown, table_rows
from fvcflow.training.fitting.splits import load_splits

#: the prefix of the Prefect global concurrency limits of the GPUs: one limit per node,
#: ``gpu:<hostname>``, whose slots are that node's GPUs
GPU_LIMIT = "gpu"


def gpu_limit(host: str | None = None) -> str:
    """The name of node ``host``'s GPU limit (default this machine's): two nodes sharing one
    Prefect server each count their own GPUs.

    >>> gpu_limit("node7")
    'gpu:node7'
    """
    return f"{GPU_LIMIT}:{host or socket.gethostname()}"


def ensure_gpu_limit(devices: list[int] | None = None, host: str | None = None) -> int:
    """Create node ``host``'s limit :func:`gpu_limit` when missing (slots = ``train.deep.devices``
    given, else GPUs seen, at least 1); its slots."""
    name, slots = gpu_limit(host), len(devices) if devices else max(1, gpu_count())
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except Exception:  # noqa: BLE001 - ObjectNotFound: first run of this node against this server
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
            return slots
        except Exception:  # noqa: BLE001 - created meanwhile by a concurrent run: use that one
            return client.read_global_concurrency_limit_by_name(name).limit


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
    with concurrency(gpu_limit(), occupy=1, strict=True):   # a second run of this node waits for a card
        return train_model(settings.lake(), name, settings.train)   # which leases one (deep.loop)


@task(name="fill-clips", **RETRY)
def fill_clips_task(names: list[str], settings: Settings) -> dict:
    """Decode the deep models' clips into the cache on the Dask engine, in parallel, before the GPU phase."""
    lake = settings.lake()
    with dask_cluster(settings) as address:
        return fill_clip_caches(lake, settings.train, load_splits(lake, settings.train), names, address)


def has_devices(settings: Settings) -> bool:
    """Whether deep models have devices to lease (then they train concurrently, one per device)."""
    return gpu_count() > 0 or settings.train.deep.devices is not None


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
    return {"models": len(results), "best": summary.best, "registered_version": summary.registered_version,
            "digest": summary.digests.get("predictions")}


@flow(name="train")
def train_stage(settings: Settings) -> dict:
    plan = plan_training_task(settings)
    if any(plan.on_gpu(n) for n in plan.base):
        ensure_gpu_limit(settings.train.deep.devices)
    if has_devices(settings):
        gpu = [n for n in plan.base if plan.on_gpu(n)]
        fill_clips_task([n for n in gpu if get_model_spec(n).kind == "torch_video"], settings)
        deep = {n: train_gpu_model_task.submit(n, settings) for n in gpu}
        done = {n: train_model_task(n, settings) for n in plan.base if n not in deep}
        done.update({n: future.result() for n, future in deep.items()})
        results = [done[n] for n in plan.base]
    else:
        results = [(train_gpu_model_task if plan.on_gpu(name) else train_model_task)(name, settings)
                   for name in plan.base]
    results += [train_stack_task(name, results, settings) for name in plan.stacks]
    return finish_training_task(results, plan.skipped, settings)
