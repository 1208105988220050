"""Prefect layer: the corpus exploration task, in its own light module (no torch, MLflow or training
imports), so that a run without the train stage does not pay for loading them."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from fvcflow.config import Settings
from fvcflow.explore import explore


@task(name="explore", cache_policy=NO_CACHE, persist_result=False)
def explore_task(settings: Settings) -> dict:
    ex = explore(settings.lake())
    create_markdown_artifact(ex.markdown(embed=True), key="explore",
                             description="The corpus: balance, encodings, groups, failures")
    create_table_artifact(ex.cue_rows(), key="encoding-cues",
                          description="Could encoding alone separate the corpus? Single-cue ROC AUCs")
    return {"page": str(ex.path), "encoding_auc": ex.combined_auc}
