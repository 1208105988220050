"""``train.evaluate_on`` (issue 22, part 4): train on one corpus, AUC with intervals on another;
clear errors for a missing corpus and for one with one class."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fvcflow.config import TrainConfig
from fvcflow.errors import FvcError
from fvcflow.schema import FEATURE_SETS
from fvcflow.store import Lake, write_parquet_atomic
from fvcflow.training.evidence import report
from fvcflow.training.fitting.crosscorpus import cross_corpus
from fvcflow.training.fitting.results import TrainSummary

COLS = list(FEATURE_SETS["s2l"])
CFG = TrainConfig(folds=2, inner_folds=2, test_size=0, grids={"logreg_s2l": {"k": [None], "C": [1.0]}})


def _lake(root, n_groups: int, seed: int, *, blends: int = 0, labels=(0, 1)) -> Lake:
    """A lake of ``n_groups`` sources, one real and one fake each, whose stage 2 rows carry a weak
    signal in two columns; ``blends`` of its reals get a pseudo-fake (stage 1) with a stronger one."""
    rng = np.random.default_rng(seed)
    lake = Lake.at(root)
    ids = [f"{root.name}{g}-{y}" for g in range(n_groups) for y in labels]
    index = pl.DataFrame({"video_id": ids, "group_id": [i.split("-")[0] for i in ids],
                          "label": pl.Series([int(i[-1]) for i in ids], dtype=pl.Int8),
                          "variant": ["original"] * len(ids)})
    copies = pl.DataFrame({"video_id": [f"{root.name}{g}-b" for g in range(blends)],
                           "source_video_id": [f"{root.name}{g}-0" for g in range(blends)],
                           "variant": ["blend-1"] * blends})
    y = np.array([int(i[-1]) for i in ids] + [1] * blends, dtype=float)
    X = rng.normal(size=(len(y), len(COLS)))
    X[:, :2] += 1.5 * y[:, None]
    write_parquet_atomic(index, lake.index)
    if blends:
        write_parquet_atomic(copies, lake.stage1)
    write_parquet_atomic(pl.DataFrame({"video_id": ids + copies["video_id"].to_list(),
                                       **{c: X[:, j] for j, c in enumerate(COLS)}}), lake.stage2)
    return lake


def test_train_here_evaluate_there_with_intervals(tmp_path):
    a = _lake(tmp_path / "a", 10, 0, blends=4)
    b = _lake(tmp_path / "b", 12, 1)
    table = cross_corpus(a, b, CFG, models=["logreg_s2l"])
    assert table["pseudo_fakes"].to_list() == [True, False]
    assert table["n_train"].to_list() == [24, 20] and table["n_eval"].to_list() == [24, 24]
    # an independent fit of the same model on the same rows gives the same AUC on b
    tr = pl.read_parquet(a.stage2).filter(~pl.col("video_id").str.ends_with("-b")).sort("video_id")
    ev = pl.read_parquet(b.stage2).sort("video_id")
    ya, yb = [int(v[-1]) for v in tr["video_id"]], [int(v[-1]) for v in ev["video_id"]]
    mean, sd = tr.select(COLS).to_numpy().mean(0), tr.select(COLS).to_numpy().std(0)
    ref = LogisticRegression(C=1.0, l1_ratio=1.0, solver="liblinear", max_iter=5000, random_state=0)
    ref.fit((tr.select(COLS).to_numpy() - mean) / sd, ya)
    want = roc_auc_score(yb, ref.predict_proba((ev.select(COLS).to_numpy() - mean) / sd)[:, 1])
    row = table.row(1, named=True)
    assert row["roc_auc"] == pytest.approx(want, abs=0.02)
    assert row["roc_auc_lo"] < row["roc_auc"] < row["roc_auc_hi"] and row["roc_auc"] > 0.7
    assert pl.read_parquet(a.stage5 / "cross_corpus.parquet").equals(table)
    # what the user reads: the summary's table and the report's section
    summary = TrainSummary([], pl.DataFrame(), pl.DataFrame(), cross_corpus=table)
    assert f"## Cross-corpus: evaluated on {b.root}" in summary.markdown()
    assert f"| logreg_s2l | s2l | False | 20 | 24 | {row['roc_auc']:.3f}" in summary.markdown()
    section = report._cross_corpus_section(a, summary, tmp_path)
    assert section.id == "cross_corpus" and section.html.count("<tr>") == 3 and str(b.root) in section.html


def test_a_missing_or_one_class_corpus_is_one_clear_error(tmp_path):
    a = _lake(tmp_path / "a", 6, 0)
    with pytest.raises(FvcError, match=r"no video index at .*other.*fvc ingest"):
        cross_corpus(a, Lake.at(tmp_path / "other"), CFG, models=["logreg_s2l"])
    fakes = _lake(tmp_path / "fakes", 5, 2, labels=(1,))
    with pytest.raises(FvcError, match=r"fakes.*has 5 fake: the ROC AUC needs real and fake"):
        cross_corpus(a, fakes, CFG, models=["logreg_s2l"])
    with pytest.raises(FvcError, match="is this work dir"):
        cross_corpus(a, a, CFG, models=["logreg_s2l"])
