"""XGBoost on frozen deep embeddings: embeddings computed once per backbone, one row per video,
never fitted on an evaluated video; the trainer's predictions cover every out-of-fold video."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from fvcflow import progress
from fvcflow.deep.clips import ClipCache
from fvcflow.deep.embedding_model import EmbeddingModel
from fvcflow.deep.embeddings import Backbone, embedding_table, table_path
from fvcflow.deep.loop import _source
from fvcflow.models import get_model_spec, list_models, register_model, skops_safe, unregister_model
from fvcflow.models.torch_common import clip_spec
from fvcflow.store import read_parquet
from fvcflow.training import train_model
from tests.deep_lake import deep_rows, tiny_deep_config, write_deep_lake

TINY_CLIP = {"frames": 4, "clips": 2, "size": 32}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("emb") / "fvc-data", n_groups=8)


def _backbone(seed: int = 0) -> Backbone:
    return Backbone("i3d_r50", clip_spec("i3d_r50", TINY_CLIP), None, (("width", 8),), seed)


def _sources(lake):
    return [_source(r) for r in deep_rows(lake, tiny_deep_config("i3d_r50")).to_dicts()]


def test_embedding_models_are_registered_with_their_backbones():
    names = list_models(kind="embedding")
    assert {"emb_xgb_inception", "emb_xgb_i3d", "emb_xgb_r2plus1d", "emb_xgb_vit",
            "emb_xgb_vit_gru"} <= set(names)
    for name in names:
        assert get_model_spec(name).extra["backbone"] in list_models(kind="torch_video")


def test_embeddings_are_computed_once_one_row_per_video(lake, monkeypatch, tmp_path):
    sources = _sources(lake)
    first = embedding_table(lake, _backbone(), sources, cache=ClipCache(tmp_path / "clips"))
    assert first.height == len(sources) == first["video_id"].n_unique()
    assert first.select(pl.col("^emb_.*$")).width == 8 * 32
    assert first.select(pl.col("^emb_.*$")).null_count().sum_horizontal().item() == 0
    path = table_path(lake, _backbone())
    assert path.parent == lake.stage5 / "embeddings" and read_parquet(path).height == len(sources)

    def no_build(self, device="cpu"):
        raise AssertionError("the backbone ran again")

    monkeypatch.setattr(Backbone, "build", no_build)
    again = embedding_table(lake, _backbone(), sources)
    assert again.equals(first)
    # another seed (another random backbone) is another table, computed anew
    monkeypatch.undo()
    other = embedding_table(lake, _backbone(seed=1), sources[:2])
    assert table_path(lake, _backbone(seed=1)) != path
    assert not np.allclose(other.select(pl.col("^emb_.*$")).to_numpy(),
                           first.head(2).select(pl.col("^emb_.*$")).to_numpy())


def test_a_video_s_embedding_does_not_depend_on_the_other_videos(lake, tmp_path):
    # frozen (eval mode, no labels): computed alone it is the same as computed with every video
    sources = _sources(lake)
    lake_b = type(lake).at(tmp_path / "other")
    alone = embedding_table(lake_b, _backbone(), sources[3:4])
    full = embedding_table(lake, _backbone(), sources)
    row = full.filter(pl.col("video_id") == sources[3].video_id)
    assert np.allclose(alone.select(pl.col("^emb_.*$")).to_numpy(),
                       row.select(pl.col("^emb_.*$")).to_numpy(), atol=1e-5)


class Recorder(ClassifierMixin, BaseEstimator):
    """Records the rows of every fit, between the trainer's fold events (which fold fitted what)."""

    events: list = []

    def fit(self, X, y):
        Recorder.events.append(("fit", np.asarray(X, dtype=np.float64).copy()))
        self.classes_ = np.array([0, 1])
        self.mean_ = float(np.mean(y))
        return self

    def predict_proba(self, X):
        n = len(X)
        return np.column_stack([np.full(n, 1 - self.mean_), np.full(n, self.mean_)])


@pytest.fixture
def recorder(monkeypatch):
    def test_emb_recorder(seed=0, n_jobs=1):
        return Recorder()

    # a model logs only types of fvcflow's trusted list (no pickle): this test's estimator joins it
    monkeypatch.setattr(skops_safe, "TRUSTED_TYPES", skops_safe.TRUSTED_TYPES | {f"{__name__}.Recorder"})

    register_model(kind="embedding", mlflow_flavor="pyfunc", extra={"backbone": "i3d_r50"})(test_emb_recorder)
    Recorder.events.clear()
    yield
    unregister_model("test_emb_recorder")


def _fits_by_fold() -> list[list[np.ndarray]]:
    """Fitted row blocks of outer fold 0, 1, ..., then of the final refit (last)."""
    out, current = [], []
    for kind, value in Recorder.events:
        if kind == "fit":
            current.append(value)
        else:
            out.append(current)
            current = []
    return out + [current]


@pytest.mark.slow
def test_no_evaluated_video_s_embedding_is_in_its_fold_s_fit(lake, recorder):
    cfg = tiny_deep_config("i3d_r50")
    cfg.models = "test_emb_recorder"
    cfg.params = {"i3d_r50": {"width": 8}}
    sink = lambda event, fields: Recorder.events.append((event, fields)) if event == "fold_end" else None  # noqa: E731
    with progress.listening(sink):
        result = train_model(lake, "test_emb_recorder", cfg)
    assert isinstance(result.model, EmbeddingModel) and result.run_id
    table = read_parquet(table_path(lake, Backbone("i3d_r50", clip_spec("i3d_r50", TINY_CLIP), None,
                                                   (("width", 8),), cfg.seed)))
    emb = dict(zip(table["content_hash"], table.select(pl.col("^emb_.*$")).to_numpy()))
    rows = deep_rows(lake, cfg)
    vector = {v: emb[h] for v, h in zip(rows["video_id"], rows["content_hash"])}
    oof = result.predictions.filter(pl.col("split") == "oof")
    originals = rows.filter(~pl.col("is_test") & (pl.col("variant") == "original"))["video_id"]
    assert sorted(oof["video_id"]) == sorted(originals)

    def fitted_on(blocks: list[np.ndarray], video: str) -> bool:
        # the pipeline drops constant and duplicate columns but passes the values on unchanged: a
        # fitted row is a video's embedding when all of its values are among that embedding's
        e = vector[video].astype(np.float64)
        return any(np.isin(row, e).all() for b in blocks for row in b)

    *per_fold, final = _fits_by_fold()
    folds = sorted(oof["fold"].unique())
    assert len(per_fold) == len(folds) and all(per_fold) and final
    test_ids = rows.filter(pl.col("is_test"))["video_id"].to_list()
    for k, blocks in zip(folds, per_fold):
        evaluated = oof.filter(pl.col("fold") == k)["video_id"].to_list()
        assert not any(fitted_on(blocks, v) for v in evaluated + test_ids)
        trained_on = oof.filter(pl.col("fold") != k)["video_id"].to_list()
        assert all(fitted_on(blocks, v) for v in trained_on)      # the check can see a fitted video
    assert not any(fitted_on(final, v) for v in test_ids)
