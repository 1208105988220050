"""Synthetic lakes for the training tests: index, augmented copies, stage 2 and stage 4 features.

The tables have the real schemas (docs/ARCHITECTURE.md, docs/FEATURES.md). A few features separate
the classes (``SIGNAL``), the rest are noise; near-duplicates of a group share a group effect
(so a split that leaks groups scores visibly better), augmented copies are near-copies of their
source, one column is an almost exact copy of another (the correlation filter's target), one is
constant, and cells are NaN at random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from fvcflow.stages.faces import face_columns
from fvcflow.stages.features import feature_columns
from fvcflow.stages.local import local_columns
from fvcflow.store import Lake, failure_row, write_parquet_atomic

#: feature -> shift of the fake class, in units of the per-video noise
SIGNAL = {"noise_energy_mean": 1.5, "dct_hf_ratio_mean": -1.2, "blockiness_mean": 1.0}
DUPLICATE = ("noise_energy_max", "noise_energy_mean")   # (copy, original): |r| > 0.99
CONSTANT = "codec_fps"


def stage2_columns() -> list[str]:
    """Every feature column a stage 2 table can hold: the 51, the local and the face columns."""
    return feature_columns() + local_columns() + face_columns()


def _features(rng, labels: np.ndarray, group_effect: np.ndarray, signal: float) -> dict[str, np.ndarray]:
    cols = stage2_columns()
    n = len(labels)
    X = group_effect + rng.normal(0.0, 0.7, (n, len(cols)))
    out = {c: X[:, j] for j, c in enumerate(cols)}
    for name, shift in SIGNAL.items():
        out[name] = out[name] + signal * shift * labels
    out[DUPLICATE[0]] = out[DUPLICATE[1]] + rng.normal(0.0, 0.01, n)
    out[CONSTANT] = np.full(n, 25.0)
    out["codec_gop"] = np.round(np.abs(out["codec_gop"]) * 10 + 1)
    return out


def _with_nans(rng, cols: dict[str, np.ndarray], frac: float, skip: set[str]) -> dict[str, np.ndarray]:
    return {c: np.where(rng.random(v.shape) < frac, np.nan, v) if c not in skip else v
            for c, v in cols.items()}


def synthetic_corpus(n_groups: int = 30, *, per_group: tuple[int, int] = (1, 3), n_aug: int = 2,
                     seed: int = 0, signal: float = 1.0, nan_frac: float = 0.03, n_unlabelled: int = 2,
                     mixed_groups: int = 2, official_test: bool = False) -> dict[str, pl.DataFrame]:
    """Index, augmented, stage 2 and stage 4 tables (polars), with the lake's schemas."""
    rng = np.random.default_rng(seed)
    n_feat = len(stage2_columns())
    group_label = rng.permutation(np.arange(n_groups) % 2)
    rows, effects, labels = [], [], []
    for g in range(n_groups):
        effect = rng.normal(0.0, 1.0, n_feat)
        for j in range(int(rng.integers(per_group[0], per_group[1] + 1))):
            label = group_label[g] if g >= mixed_groups else j % 2     # mixed: a real source + its fake
            rows.append({"video_id": f"g{g:03d}-v{j}", "group_id": f"g{g:03d}", "label": int(label)})
            effects.append(effect)
            labels.append(label)
    for u in range(n_unlabelled):
        rows.append({"video_id": f"u{u:03d}", "group_id": f"u{u:03d}", "label": None})
        effects.append(rng.normal(0.0, 1.0, n_feat))
        labels.append(0)
    videos = pl.DataFrame(rows, schema={"video_id": pl.Utf8, "group_id": pl.Utf8, "label": pl.Int8})
    n = videos.height
    split: list[str | None] = [None] * n
    if official_test:
        test_groups = {f"g{g:03d}" for g in range(0, n_groups, 5)}
        split = ["test" if gid in test_groups else "train" for gid in videos["group_id"]]
        split[-n_unlabelled - 1] = "test"   # a train-side group member listed as test: a conflict
    videos = videos.with_columns(
        path=pl.Series([f"/corpus/{v}.mp4" for v in videos["video_id"]]), source=pl.lit("demo"),
        variant=pl.lit("original"),
        label_raw=pl.col("label").replace_strict({0: "real", 1: "fake"}, default="uncertain",
                                                 return_dtype=pl.Utf8),
        split=pl.Series(split, dtype=pl.Utf8), platform=pl.lit(None, pl.Utf8), cascade_id=pl.col("group_id"),
        codec=pl.Series(rng.choice(["h264", "vp9"], n)), width=pl.Series(rng.choice([640, 1280], n)),
        height=pl.Series(rng.choice([360, 720], n)))
    lab = np.asarray(labels, float)
    s2 = _features(rng, lab, np.asarray(effects), signal)
    # augmented copies: their source's values plus a little noise, same group and label
    labelled = videos.filter(pl.col("label").is_not_null())
    idx = np.flatnonzero(videos["label"].is_not_null().to_numpy())
    aug_rows, aug_feats = [], {c: [] for c in s2}
    for k in range(1, n_aug + 1):
        for i, row in zip(idx, labelled.iter_rows(named=True)):
            aug_rows.append({"video_id": f"{row['video_id']}~aug{k}", "source_video_id": row["video_id"],
                             "group_id": row["group_id"], "label": row["label"], "variant": f"aug-{k}"})
            for c, v in s2.items():
                aug_feats[c].append(v[i] + (0.0 if c == CONSTANT else rng.normal(0.0, 0.05)))
    augmented = pl.DataFrame(aug_rows, schema={"video_id": pl.Utf8, "source_video_id": pl.Utf8,
                                               "group_id": pl.Utf8, "label": pl.Int8, "variant": pl.Utf8})
    all_keys = pl.concat([videos.select("video_id", "group_id", "label", "source", "variant"),
                          augmented.select("video_id", "group_id", "label", pl.lit("demo").alias("source"),
                                           "variant")])
    feats = {c: np.concatenate([s2[c], np.asarray(aug_feats[c], float)]) for c in s2}
    feats = _with_nans(rng, feats, nan_frac, {CONSTANT})
    m = all_keys.height
    stage2 = all_keys.with_columns(**{c: pl.Series(v) for c, v in feats.items()},
                                   n_sampled=pl.lit(10), n_decoded=pl.lit(30))
    s4 = {f"s4_{c}": 0.8 * v + rng.normal(0.0, 0.2, m) for c, v in feats.items()}
    up = rng.random(m) < 0.5
    stage4 = all_keys.with_columns(**{c: pl.Series(v) for c, v in s4.items()},
                                   s4_n_sampled=pl.lit(10), s4_n_decoded=pl.lit(30),
                                   is_upscaled=pl.Series(up), is_downscaled=pl.Series(~up))
    return {"videos": videos, "augmented": augmented, "stage2": stage2, "stage4": stage4}


def write_lake(root: str | Path, tables: dict[str, pl.DataFrame] | None = None, *, stage4: bool = True,
               **kw) -> Lake:
    """Write a synthetic corpus (``synthetic_corpus(**kw)`` by default) into a lake at ``root``."""
    lake = Lake.at(root)
    t = tables or synthetic_corpus(**kw)
    write_parquet_atomic(t["videos"], lake.index)
    write_parquet_atomic(t["augmented"], lake.stage1)
    write_parquet_atomic(t["stage2"], lake.stage2)
    if stage4:
        write_parquet_atomic(t["stage4"], lake.stage4)
    write_parquet_atomic(pl.DataFrame([failure_row("features", "/corpus/broken.mp4", "no decodable frames"),
                                       failure_row("ingest", "/corpus/empty.mp4", "empty file")]),
                         lake.failures)
    return lake
