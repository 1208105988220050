"""The `fvc` flow end to end: a real Prefect test server, a real Dask LocalCluster, real videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import mlflow
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)

from fvcflow.config import Settings
from fvcflow.digest import lake_digests, parquet_digest
from fvcflow.flows.pipeline import fvc
from fvcflow.flows.train import gpu_limit
from fvcflow.stages.features import feature_columns
from fvcflow.store import Lake
from fvcflow.training import TrainConfig
from tests.corpus import TINY, make_tiny_corpus

pytestmark = pytest.mark.slow
VIDEO_STAGES = ["augment", "features", "scale", "scaled_features"]
FEATURE_TABLES = ("stage1", "stage2", "stage3", "stage4")


@pytest.fixture(scope="module")
def run(prefect_server, dask_address, tmp_path_factory):
    """One first run of ingest + stages 1-4 on the tiny corpus (2 copies per video), on the session's
    Dask cluster (2 workers; every later run here reuses it through these settings)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    corpus = make_tiny_corpus(tmp / "corpus")
    settings = Settings(home=tmp / "fvc-data", workers=2, dask_address=dask_address,
                        corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"},
                        stages=["ingest", *VIDEO_STAGES], augment={"copies": 2})
    state = fvc(config=settings, return_state=True)
    return settings, state


def by_stage(summary: list[dict]) -> dict[str, dict]:
    return {row["stage"]: row for row in summary}


def tables(lake: Lake) -> dict[str, pl.DataFrame]:
    paths = {"stage1": lake.stage1, "stage2": lake.stage2, "stage3": lake.stage3, "stage4": lake.stage4}
    return {k: pl.read_parquet(p).drop("seconds", strict=False).sort("video_id") for k, p in paths.items()}


def test_flow_completes_and_counts_the_bad_input(run):
    settings, state = run
    assert state.is_completed(), state.message
    summary = by_stage(state.result())
    assert summary["ingest"]["indexed"] == len(TINY)
    failures = pl.read_parquet(settings.lake().failures)
    bad = failures.filter(pl.col("path").str.ends_with("notes.mp4"))
    assert bad["stage"].to_list() == ["ingest"]
    assert "not a video" in bad["reason"][0]


def test_the_run_summary_carries_each_published_table_s_digest(run):
    settings, state = run
    summary = by_stage(state.result())
    digests = lake_digests(settings.lake())
    assert summary["ingest"]["digest"] == digests["index"]
    for stage, table in zip(VIDEO_STAGES, FEATURE_TABLES):
        assert summary[stage]["digest"] == digests[table], stage


def test_stage_tables_rows_columns_and_group_inheritance(run):
    settings, _ = run
    lake = settings.lake()
    index = pl.read_parquet(lake.index)
    t = tables(lake)
    n = index.height
    trains = index.filter(pl.col("split") != "test")["video_id"]
    # stage 1: two copies of every labelled original outside the test hold-out, inheriting group and label
    aug = t["stage1"]
    assert aug.height == 2 * trains.len() and set(aug["source_video_id"]) == set(trains)
    joined = aug.join(index, left_on="source_video_id", right_on="video_id", suffix="_src")
    assert joined.height == aug.height
    assert (joined["group_id"] == joined["group_id_src"]).all()
    assert (joined["label"] == joined["label_src"]).all()
    assert sorted(set(aug["variant"])) == ["aug-1", "aug-2"]
    assert all(Path(p).exists() for p in aug["path"])
    # stage 2: originals + copies, keys + 51 features, sampled frames decoded
    s2 = t["stage2"]
    assert s2.height == n + aug.height
    assert set(feature_columns()) <= set(s2.columns)
    assert {"video_id", "group_id", "label", "source", "variant", "n_sampled", "n_decoded"} <= set(s2.columns)
    assert s2.select(pl.col("noise_energy_mean").is_nan().sum()).item() == 0
    assert (s2["n_sampled"] >= 5).all()
    # stage 3: every video letterboxed to 256x256, flags consistent with the source size
    s3 = t["stage3"]
    assert s3.height == n + aug.height
    with av.open(s3["path"][0]) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (256, 256)
    longest = s3.select(pl.max_horizontal("src_width", "src_height")).to_series()
    assert (s3["is_upscaled"] == (longest < 256)).all() and (s3["is_downscaled"] == (longest > 256)).all()
    assert s3["is_downscaled"].any() and s3["is_upscaled"].any()
    # stage 4: the same kernels with the s4_ prefix, plus the flags
    s4 = t["stage4"]
    assert s4.height == n + aug.height
    assert set(feature_columns("s4_")) <= set(s4.columns)
    assert {"is_upscaled", "is_downscaled"} <= set(s4.columns)


def test_each_stage_publishes_a_table_artifact(run):
    keys = ["ingest-summary", "augment-summary", "features-summary", "scale-summary",
            "scaled-features-summary", "fvc-run"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert {a.key for a in found} == set(keys)
    assert all(a.type == "table" for a in found)


def test_rerun_recomputes_nothing_and_force_recomputes(run):
    settings, _ = run
    lake = settings.lake()
    before = tables(lake)
    again = fvc(config=settings.model_copy(update={"stages": VIDEO_STAGES}), return_state=True)
    assert again.is_completed()
    for stage, row in by_stage(again.result()).items():
        assert row["done"] == 0 and row["cached"] == row["videos in"] > 0, (stage, row)
    after = tables(lake)
    for k in FEATURE_TABLES:
        assert_frame_equal(before[k], after[k])

    forced = fvc(config=settings.model_copy(update={"stages": ["augment", "features"], "force": ["augment"]}),
                 return_state=True)
    rows = by_stage(forced.result())
    assert rows["augment"]["done"] == rows["augment"]["videos in"] == before["stage1"].height
    # deterministic augmentation: the recomputed copies are the same files, so stage 2 stays cached
    assert rows["features"]["done"] == 0
    assert_frame_equal(before["stage1"].drop("seconds", strict=False), tables(lake)["stage1"])


def test_train_stage_through_the_flow(run):
    settings, _ = run
    lake = settings.lake()
    train = TrainConfig(folds=2, inner_folds=2, test_size=0.0,
                        models="logreg_s2,logreg_s24,xgb_s24,stack_s24")
    state = fvc(config=settings.model_copy(update={"stages": ["train"], "train": train}), return_state=True)
    assert state.is_completed(), state.message
    row = by_stage(state.result())["train"]
    assert row["models"] == 4 and row["registered_version"] is not None
    assert row["digest"] == parquet_digest(lake.predictions)
    preds = pl.read_parquet(lake.predictions)
    assert set(preds["model"]) == {"logreg_s2", "logreg_s24", "xgb_s24", "stack_s24"}
    splits = pl.read_parquet(lake.splits)
    featured = pl.read_parquet(lake.stage2)["video_id"]
    originals = splits.filter((pl.col("variant") == "original") & ~pl.col("is_test")
                              & pl.col("video_id").is_in(featured)).height
    oof = preds.filter(pl.col("split") == "oof")
    assert oof.group_by("model").len()["len"].to_list() == [originals] * 4  # originals only, each once
    assert oof["video_id"].n_unique() == originals
    client = mlflow.MlflowClient(tracking_uri=lake.mlflow_uri)
    assert client.get_registered_model("fvc-detector").latest_versions
    with get_client(sync_client=True) as prefect_client:    # this run's (its train subflow's) leaderboard
        board = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["leaderboard"])),
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(
                any_=[state.state_details.flow_run_id])))
    assert len(board) == 1 and board[0].type == "markdown" and f"**{row['best']}**" in board[0].data


def test_deep_models_train_through_the_flow_beside_a_tabular_one(run):
    """Two deep models as gpu-tagged tasks under the node's global limit `gpu:<host>` (CPU here), one
    tabular."""
    settings, _ = run
    lake = settings.lake()
    models = "logreg_s2,naive_3dcnn,variable_aspect_cnn"
    clip = {"frames": 4, "clips": 2, "size": 32}
    deep = {"device": "cpu", "epochs": 2, "patience": 1, "batch_size": 4, "workers": 0, "lr": 1e-3,
            "clip": {"naive_3dcnn": clip, "variable_aspect_cnn": {**clip, "size": None}}}
    train = TrainConfig(folds=2, inner_folds=2, test_size=0.0, models=models, deep=deep, register_best=False)
    state = fvc(config=settings.model_copy(update={"stages": ["train"], "train": train}), return_state=True)
    assert state.is_completed(), state.message
    preds = pl.read_parquet(lake.predictions)
    assert set(preds["model"]) == set(models.split(","))
    splits = pl.read_parquet(lake.splits)
    scaled = pl.read_parquet(lake.stage3)["video_id"]
    originals = splits.filter((pl.col("variant") == "original") & pl.col("video_id").is_in(scaled.to_list()))
    for name in ("naive_3dcnn", "variable_aspect_cnn"):   # every out-of-fold original, in its own fold
        oof = preds.filter((pl.col("model") == name) & (pl.col("split") == "oof")).join(
            splits, on="video_id", suffix="_s")
        assert sorted(oof["video_id"]) == sorted(originals["video_id"])
        assert (oof["fold"] == oof["fold_s"]).all()
    client = mlflow.MlflowClient(tracking_uri=lake.mlflow_uri)
    exp = client.get_experiment_by_name(train.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`fvc.kind` = 'torch_video'", max_results=50)
    parents = [r for r in runs if r.data.tags["fvc.role"] == "model"]
    assert sorted(r.data.tags["fvc.model"] for r in parents)[-2:] == ["naive_3dcnn", "variable_aspect_cnn"]
    fold_run = next(r for r in runs if r.data.tags["fvc.role"] == "fold")
    assert client.get_metric_history(fold_run.info.run_id, "val_loss")
    assert client.list_artifacts(fold_run.info.run_id, "checkpoints")
    with get_client(sync_client=True) as prefect_client:
        key = ArtifactFilter(key=ArtifactFilterKey(any_=["leaderboard"]))
        board = prefect_client.read_artifacts(artifact_filter=key)
        limit = prefect_client.read_global_concurrency_limit_by_name(gpu_limit())   # this node's
        tasks = prefect_client.read_task_runs()
    latest = max(board, key=lambda a: a.created)
    assert all(f"| {m} |" in latest.data for m in models.split(","))    # deep and tabular side by side
    assert limit.limit >= 1
    deep_tasks = [t for t in tasks if t.name.startswith("train-deep-model")]
    assert len(deep_tasks) >= 2 and all("gpu" in t.tags for t in deep_tasks)


def test_a_video_that_breaks_mid_run_is_recorded_and_the_run_completes(run, tmp_path):
    settings, _ = run
    lake = settings.lake()
    index = pl.read_parquet(lake.index)
    victim = index.filter(pl.col("path").str.ends_with("real_a.mp4"))
    path = Path(victim["path"][0])
    saved = tmp_path / "saved.mp4"
    shutil.copy(path, saved)
    path.write_bytes(b"\x00" * 100)  # the file is damaged after it was indexed
    try:
        state = fvc(config=settings.model_copy(update={"stages": ["features"], "force": ["features"]}),
                    return_state=True)
    finally:
        shutil.copy(saved, path)
    assert state.is_completed()
    row = by_stage(state.result())["features"]
    assert row["failed"] == 1 and row["done"] == row["videos in"] - 1
    failures = pl.read_parquet(lake.failures).filter(pl.col("stage") == "features")
    assert failures["video_id"].to_list() == victim["video_id"].to_list()
    s2 = pl.read_parquet(lake.stage2)  # the table holds what this run could vouch for
    assert s2.height == row["videos in"] - 1 and victim["video_id"][0] not in s2["video_id"].to_list()
