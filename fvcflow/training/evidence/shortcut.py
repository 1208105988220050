"""The shortcut check: how far the codec and container cues alone separate real from fake.

A corpus whose fakes were encoded differently from its reals (another codec, bitrate, GOP,
resolution, container) can be "solved" without looking at a pixel. The best tabular model's
registered spec is cross-validated again, the same grouped folds and test set, on the encoding
cues only: stage 2's ``codec_bpp``, ``codec_gop``, ``codec_fps``, the index's width, height, bit
rate and bytes per second, and one-hot codec, container and pixel format. Its out-of-fold and test
ROC AUC (grouped bootstrap intervals) sit beside the full model's in the report and the card.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from fvcflow.config import TrainConfig
from fvcflow.models import get_model_spec
from fvcflow.schema import CODEC_COLUMNS, ORIGINAL
from fvcflow.store import Lake, read_parquet
from fvcflow.training.fitting.bootstrap import grouped_bootstrap
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.data import TrainTable
from fvcflow.training.fitting.results import ModelResult

log = logging.getLogger("fvcflow.training")

#: numeric container cues of the index (what a probe reads without decoding)
INDEX_CUES = ("width", "height", "bit_rate")
#: categorical container cues, one-hot encoded
CATEGORICAL_CUES = ("codec", "container", "pix_fmt")
#: a cue-only AUC at or above this is called a shortcut risk
RISK_AUC = 0.7


def cue_frame(lake: Lake) -> pl.DataFrame:
    """``video_id`` and the numeric encoding cues of every indexed video with stage 2 features."""
    s2 = read_parquet(lake.stage2)
    if s2 is None:
        return pl.DataFrame()
    out = s2.select("video_id", *[pl.col(c).cast(pl.Float64) for c in CODEC_COLUMNS if c in s2.columns])
    index = read_parquet(lake.index)
    if index is None:
        return out
    cols = [pl.col(c).cast(pl.Float64).alias(f"cue_{c}") for c in INDEX_CUES if c in index.columns]
    if {"size_bytes", "duration"} <= set(index.columns):
        cols.append((pl.col("size_bytes").cast(pl.Float64) / pl.col("duration").cast(pl.Float64))
                    .alias("cue_bytes_per_s"))
    for c in CATEGORICAL_CUES:
        if c in index.columns:
            for v in sorted(index[c].drop_nulls().unique().to_list()):
                cols.append((pl.col(c) == v).cast(pl.Float64).fill_null(0.0).alias(f"cue_{c}={v}"))
    out = out.join(index.select("video_id", *cols), on="video_id", how="left")
    return out.with_columns([pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c)
                             for c in out.columns if c != "video_id"])


def cue_table(lake: Lake, splits: pl.DataFrame) -> TrainTable | None:
    """The originals of ``splits`` with their encoding cues, as a :class:`TrainTable`."""
    cues = cue_frame(lake)
    if not cues.height:
        return None
    df = (splits.filter(pl.col("variant") == ORIGINAL).join(cues, on="video_id", how="inner")
          .sort("video_id"))
    cols = [c for c in cues.columns if c != "video_id" and df[c].drop_nulls().n_unique() > 1]
    if not cols or df.height == 0:
        return None
    return TrainTable(video_id=df["video_id"].to_numpy(), group_id=df["group_id"].to_numpy(),
                      y=df["label"].cast(pl.Int64).to_numpy(),
                      fold=df["fold"].fill_null(-1).cast(pl.Int64).to_numpy(),
                      is_test=df["is_test"].to_numpy(), is_original=np.ones(df.height, bool),
                      X=df.select(cols).to_pandas().astype("float64"), feature_set="cues")


@dataclass
class ShortcutCheck:
    """The cue-only model beside the full one (ROC AUC with grouped bootstrap intervals)."""

    model: str                       # the registered spec used for both
    full_model: str                  # the result it is compared with
    columns: list[str]
    rows: pl.DataFrame               # what, split, roc_auc, lo, hi, n_videos
    predictions: pl.DataFrame

    def auc(self, what: str, split: str = "oof") -> tuple[float, float, float]:
        r = self.rows.filter((pl.col("what") == what) & (pl.col("split") == split))
        return (r["roc_auc"][0], r["lo"][0], r["hi"][0]) if r.height else (math.nan, math.nan, math.nan)

    @property
    def at_risk(self) -> bool:
        cue, _, _ = self.auc("codec/container cues only")
        full, _, _ = self.auc("full features")
        return bool(cue >= RISK_AUC or (np.isfinite(full) and cue >= full - 0.05))

    def sentence(self) -> str:
        cue, clo, chi = self.auc("codec/container cues only")
        full, flo, fhi = self.auc("full features")
        head = (f"{self.model} on the {len(self.columns)} codec/container cues alone: out-of-fold ROC AUC "
                f"{cue:.3f} [{clo:.3f}, {chi:.3f}]; {self.full_model} on all features: {full:.3f} "
                f"[{flo:.3f}, {fhi:.3f}].")
        if self.at_risk:
            return head + (" The encoding alone separates this corpus: the model may be reading "
                           "codec cues rather than manipulation traces.")
        return head + " The encoding alone does not explain the model's score."


def _rows(what: str, pred: pl.DataFrame) -> list[dict]:
    out = []
    for split in ("oof", "test"):
        part = pred.filter(pl.col("split") == split)
        if part.height and part["label"].n_unique() == 2:
            iv = grouped_bootstrap(part["label"].to_numpy(), part["prob_fake"].to_numpy(),
                                   part["group_id"].to_numpy(), metrics=("roc_auc",))["roc_auc"]
            out.append({"what": what, "split": split, "roc_auc": iv.estimate, "lo": iv.lo, "hi": iv.hi,
                        "n_videos": part.height})
    return out


def shortcut_check(lake: Lake, results: list[ModelResult], cfg: TrainConfig,
                   splits: pl.DataFrame) -> ShortcutCheck | None:
    """Cross-validate the best tabular model's spec on the encoding cues only (None without one)."""
    tabular = [r for r in results
               if r.kind == "tabular" and np.isfinite(r.oof_metrics.get("roc_auc", np.nan))]
    t = cue_table(lake, splits)
    if not tabular or t is None or np.unique(t.y[~t.is_test]).size < 2:
        return None
    best = max(tabular, key=lambda r: r.oof_metrics["roc_auc"])
    spec = get_model_spec(best.name)
    cv = cross_validate(spec, t, cfg)
    rows = _rows("codec/container cues only", cv.predictions) + _rows("full features", best.predictions)
    check = ShortcutCheck(spec.name, best.name, list(t.X.columns), pl.DataFrame(rows), cv.predictions)
    log.info("shortcut check: %s", check.sentence())
    return check
