"""A stack over a tabular, a deep and an embedding model, through the `fvc` flow and `fvc predict`.

Real videos, a real Prefect test server and Dask cluster, MLflow on SQLite; every model tiny.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from fvcflow.cli import main as fvc_cli
from fvcflow.config import Settings
from fvcflow.flows.pipeline import fvc
from fvcflow.store import read_parquet
from fvcflow.training import TrainConfig
from tests.media import write_video

pytestmark = pytest.mark.slow
MODELS = ["logreg_s2", "i3d_r50", "emb_xgb_i3d", "stack_s24"]


def make_corpus(root, n_groups: int = 10):
    """``n_groups`` pairs of tiny real/fake videos (the fakes brighter), ``labels.csv``."""
    rows = []
    for g in range(n_groups):
        for label in ("real", "fake"):
            rel = f"g{g}/{label}.mp4"
            rng = np.random.default_rng(2 * g + (label == "fake"))
            base = 150 if label == "fake" else 70
            frames = np.clip(rng.normal(base, 25, (12, 32, 40, 3)), 0, 255).astype(np.uint8)
            write_video(root / rel, frames=frames, fps=10)
            rows.append((rel, label, f"g{g}"))
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def trained(prefect_server, dask_address, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ensembles")
    corpus = make_corpus(tmp / "corpus")
    settings = Settings(home=tmp / "fvc-data", workers=1, dask_address=dask_address,
                        corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"},
                        stages=["ingest", "features", "scale"])
    state = fvc(config=settings, return_state=True)
    assert state.is_completed(), state.message
    train = TrainConfig(folds=2, inner_folds=2, test_size=0.0, models=",".join(MODELS),
                        params={"i3d_r50": {"width": 8}, "emb_xgb_i3d": {"n_estimators": 20}},
                        deep={"epochs": 1, "patience": 1, "batch_size": 8, "workers": 0, "device": "cpu",
                              "clip": {"i3d_r50": {"frames": 4, "clips": 1, "size": 32}}})
    settings = settings.model_copy(update={"stages": ["train"], "train": train})
    state = fvc(config=settings, return_state=True)
    assert state.is_completed(), state.message
    return settings, corpus


def test_every_kind_and_the_stack_predict_every_out_of_fold_video(trained):
    settings, _ = trained
    lake = settings.lake()
    preds = pl.read_parquet(lake.predictions)
    assert set(preds["model"]) == set(MODELS)
    oof = preds.filter(pl.col("split") == "oof")
    originals = pl.read_parquet(lake.splits).filter(pl.col("variant") == "original")["video_id"]
    for model in MODELS:
        got = oof.filter(pl.col("model") == model)["video_id"]
        assert sorted(got.to_list()) == sorted(originals.to_list()), model
    # the stack's weights name all three kinds: each base reached it through its inner OOF
    client = MlflowClient(lake.mlflow_uri)
    run = client.search_runs([client.get_experiment_by_name("fvc").experiment_id],
                             "tags.`fvc.model` = 'stack_s24' and tags.`fvc.role` = 'model'")[0]
    importance = client.download_artifacts(run.info.run_id, "feature_importance.csv")
    assert set(pl.read_csv(importance)["feature"]) == {"logreg_s2", "i3d_r50", "emb_xgb_i3d"}


def test_the_embeddings_are_one_row_per_video_in_one_cached_table(trained):
    settings, _ = trained
    lake = settings.lake()
    tables = sorted((lake.stage5 / "embeddings").glob("i3d_r50-*.parquet"))
    assert len(tables) == 1
    emb = read_parquet(tables[0])
    scaled = pl.read_parquet(lake.stage3)
    assert emb.height == scaled.height and emb["content_hash"].n_unique() == emb.height
    assert set(emb["content_hash"]) == set(scaled["content_hash"])
    assert emb.select(pl.col("^emb_.*$")).width == 8 * 32            # i3d_r50 at width 8


def test_fvc_predict_runs_the_stack_over_its_three_kinds(trained, capsys):
    settings, corpus = trained
    lake = settings.lake()
    client = MlflowClient(lake.mlflow_uri)
    run = client.search_runs([client.get_experiment_by_name("fvc").experiment_id],
                             "tags.`fvc.model` = 'stack_s24' and tags.`fvc.role` = 'model'")[0]
    videos = [str(corpus / "g0" / "real.mp4"), str(corpus / "g0" / "fake.mp4")]
    code = fvc_cli(["--home", str(lake.root), "predict", *videos, "--model", f"runs:/{run.info.run_id}/model",
                    "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, [r["error"] for r in out]
    assert [r["error"] for r in out] == [None, None]
    assert all(0.0 <= r["prob_fake"] <= 1.0 for r in out)
    assert {r["model"] for r in out} == {"stack_s24"}


def test_fvc_predict_scores_a_video_with_the_embedding_model(trained, capsys):
    settings, corpus = trained
    lake = settings.lake()
    client = MlflowClient(lake.mlflow_uri)
    run = client.search_runs([client.get_experiment_by_name("fvc").experiment_id],
                             "tags.`fvc.model` = 'emb_xgb_i3d' and tags.`fvc.role` = 'model'")[0]
    assert run.data.tags["fvc.backbone"] == "i3d_r50" and run.data.tags["fvc.weights"] == "random"
    code = fvc_cli(["--home", str(lake.root), "predict", str(corpus / "g1" / "fake.mp4"), "--model",
                    f"runs:/{run.info.run_id}/model", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out[0]["error"] is None and 0.0 <= out[0]["prob_fake"] <= 1.0
