"""Self-blended pseudo-fakes in the splits and the trainers (issue 22): trained on, never evaluated.

A synthetic lake (``tests/feature_tables``) gets, for every real, pseudo-fakes as stage 1 writes
them (variant ``blend-k``, labelled fake in stage 1, the real's group); every registered model
that reads a feature table (and the stacks over them) is trained with its first grid point, and
no pseudo-fake may appear in any out-of-fold or test row of any model, while each model's
training rows held them as fakes.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fvcflow.models import get_model_spec, list_models
from fvcflow.schema import BLEND_PREFIX, ORIGINAL, blend_variant, blended_id
from fvcflow.training.fitting.data import load_features, train_table
from fvcflow.training.fitting.splits import assign_splits, make_splits
from fvcflow.training.fitting.trainers import TRAINERS
from tests.feature_tables import synthetic_corpus, write_lake
from tests.leakage_tables import ci_config

FEATURE_KINDS = ("tabular",)
BASES = [n for n in list_models() if get_model_spec(n).kind in FEATURE_KINDS]
STACKS = [n for n in list_models() if get_model_spec(n).kind_spec.uses_bases]
K = 2


def with_pseudo_fakes(tables: dict[str, pl.DataFrame], k: int = K, seed: int = 0) -> dict[str, pl.DataFrame]:
    """``tables`` with ``k`` pseudo-fakes of every labelled real, as stage 1 writes them: their
    source's features shifted a little (a blend) in stages 2 and 4."""
    rng = np.random.default_rng(seed)
    reals = tables["videos"].filter(pl.col("label") == 0)
    rows = [{"video_id": blended_id(r["video_id"], c), "source_video_id": r["video_id"],
             "group_id": r["group_id"], "label": 1, "variant": blend_variant(c)}
            for c in range(1, k + 1) for r in reals.iter_rows(named=True)]
    blends = pl.DataFrame(rows, schema=tables["augmented"].schema)
    out = dict(tables, augmented=pl.concat([tables["augmented"], blends]))
    for stage in ("stage2", "stage4"):
        t = tables[stage]
        src = (blends.select("video_id", "source_video_id", "variant", "label")
               .join(t.drop("variant", "label"), left_on="source_video_id", right_on="video_id")
               .drop("source_video_id"))
        feats = [c for c in t.columns if t[c].dtype == pl.Float64]
        src = src.with_columns(**{c: pl.col(c) + pl.Series(rng.normal(0.3, 0.05, src.height)) for c in feats})
        out[stage] = pl.concat([t, src.select(t.columns)], how="vertical_relaxed")
    return out


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    tables = with_pseudo_fakes(synthetic_corpus(n_groups=30, n_aug=1, signal=2.0, seed=5))
    return write_lake(tmp_path_factory.mktemp("pseudo"), tables)


def test_pseudo_fakes_are_fakes_of_their_source_s_group_and_fold(lake):
    cfg = ci_config(BASES)
    splits = make_splits(lake, cfg)
    blends = splits.filter(pl.col("variant").str.starts_with(BLEND_PREFIX))
    originals = splits.filter(pl.col("variant") == ORIGINAL)
    reals = originals.filter(pl.col("label") == 0)
    assert blends.height == K * reals.height
    assert blends["label"].to_list() == [1] * blends.height
    src = blends.with_columns(source=pl.col("video_id").str.replace(r"~blend\d+$", "")).join(
        originals, left_on="source", right_on="video_id", suffix="_src")
    assert src.height == blends.height
    assert (src["group_id"] == src["group_id_src"]).all()
    assert (src["fold"].fill_null(-1) == src["fold_src"].fill_null(-1)).all()
    assert (src["is_test"] == src["is_test_src"]).all()
    # a blend of a fake (never made by stage 1) would keep no label of its own: fakes are not blended
    assert set(src["label_src"].to_list()) == {0}


def test_the_training_table_holds_pseudo_fakes_only_as_non_originals(lake):
    cfg = ci_config(BASES)
    t = train_table(load_features(lake, "s2"), make_splits(lake, cfg), "s2")
    blend = np.char.find(t.video_id.astype(str), "~blend") >= 0
    assert blend.any() and not t.is_original[blend].any() and (t.y[blend] == 1).all()
    # without augmented copies (train.use_augmented = false) they are left out with them
    t = train_table(load_features(lake, "s2"), make_splits(lake, cfg), "s2", use_augmented=False)
    assert not (np.char.find(t.video_id.astype(str), "~blend") >= 0).any()


@pytest.mark.slow          # every feature-table model and the stacks: minutes on two cores
def test_no_pseudo_fake_is_ever_evaluated_by_any_model(lake):
    names = BASES + STACKS
    cfg = ci_config(names, test_size=0.2)
    make_splits(lake, cfg)
    results = {}
    for name in BASES:
        spec = get_model_spec(name)
        results[name] = TRAINERS[spec.kind](lake, spec, cfg, [], lambda r: r)
    for name in STACKS:
        spec = get_model_spec(name)
        results[name] = TRAINERS[spec.kind](lake, spec, cfg, [results[b] for b in BASES], lambda r: r)
    for name, r in results.items():
        preds = r.predictions
        assert set(preds["split"].unique().to_list()) == {"oof", "test"}, name
        leaked = preds.filter(pl.col("video_id").str.contains("~blend"))
        assert leaked.height == 0, f"{name}: pseudo-fakes among its evaluated rows: {leaked['video_id'][:3]}"
        if r.inner_oof.height:
            assert not r.inner_oof["video_id"].str.contains("~blend").any(), name
    # and they were training rows: every base model's training set counts them
    n_blend_train = make_splits(lake, cfg).filter(
        pl.col("variant").str.starts_with(BLEND_PREFIX) & ~pl.col("is_test")).height
    assert n_blend_train > 0
    for name in BASES:
        n_orig_train = make_splits(lake, cfg).filter(~pl.col("is_test")).height
        assert results[name].n_train_rows == n_orig_train, name


def test_assign_splits_labels_blends_fake_whatever_stage1_carried():
    videos = pl.DataFrame({"video_id": [f"v{i}" for i in range(8)],
                           "group_id": [f"g{i // 2}" for i in range(8)], "label": [0, 1] * 4},
                          schema_overrides={"label": pl.Int8})
    aug = pl.DataFrame({"video_id": ["v0~blend1", "v0~aug1"], "source_video_id": ["v0", "v0"],
                        "variant": ["blend-1", "aug-1"]})
    from fvcflow.training import TrainConfig

    s = assign_splits(videos, aug, TrainConfig(folds=2, test_size=0.0))
    labels = dict(zip(s["video_id"].to_list(), s["label"].to_list()))
    assert (labels["v0"], labels["v0~aug1"], labels["v0~blend1"]) == (0, 0, 1)
