"""Prefect layer: the deployment ``fvc/scan`` (parameters ``paths``, ``model``; optional ``name``):
``fvc scan`` started from the Prefect UI. The scoring itself runs on the Dask engine
(:func:`fvcflow.scan.run_scan`); the run ends with a table artifact of the top of the triage list."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from fvcflow.config import Settings, check_home
from fvcflow.scan import run_scan

#: rows of the artifact (the whole table is scores.parquet)
ARTIFACT_ROWS = 50


@task(name="scan", cache_policy=NO_CACHE, persist_result=False)
def scan_task(settings: Settings, paths: list[str], model: str | None, name: str | None) -> dict:
    res = run_scan(settings, paths, model=model, name=name)
    top = res.scores.sort("prob_fake", descending=True, nulls_last=True).head(ARTIFACT_ROWS)
    create_table_artifact(top.select("path", "prob_fake", "verdict", "calibrated", "model", "version",
                                     "error").to_dicts(),
                          key="scan", description=f"Scan {res.name}: highest P(fake) first; failures last")
    summary = {"scan": res.name, "files": res.scores.height, "computed": res.computed, "cached": res.cached,
               "failed": res.failed, "table": str(res.table), "page": str(res.page)}
    get_run_logger().info("scan: %s", summary)
    return summary


# the flow is named fvc so that the deployment is fvc/scan, beside fvc/full and the stages
@flow(name="fvc", flow_run_name="scan", log_prints=True)
def scan(paths: list[str], model: str | None = None, name: str | None = None,
         config: Settings = Settings()) -> dict:
    """Score every video under ``paths`` (files, folders, lists) with ``model`` (default the
    registered detector, latest version; ``NAME@champion``, ``models:/NAME/VERSION``)."""
    settings = config.resolved()
    check_home(settings)   # a served run: the served work dir or an allowed one, whatever its parameters
    return scan_task(settings.without_secrets(), paths, model, name)
