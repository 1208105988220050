"""A tiny lake for the deep-model tests: real letterboxed stage 3 videos, index and splits.

Fakes are brighter than reals (a trivially separable cue), so a few epochs of any model learn it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from fvcflow.models.torch_common import ClipSpec
from fvcflow.store import Lake, file_hash, write_parquet_atomic
from fvcflow.training import TrainConfig, make_splits
from tests.media import write_video

#: the tiny clip specs of the clip-cache tests: RGB, and RGB + optical flow (two-stream)
RGB = ClipSpec(frames=4, clips=2, size=32)
FLOW = replace(RGB, channels="rgb+flow")


def clip_frames(n: int, side: int, label: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = 60 + 120 * label
    frames = rng.normal(base, 20, (n, side, side, 3))
    for i in range(n):                                  # a moving square, as in real motion
        y = (i * 2) % (side // 2)
        frames[i, y:y + side // 4, y:y + side // 4] = 255 - base
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_deep_lake(root: Path, *, n_groups: int = 8, side: int = 32, n_frames: int = 12,
                    folds: int = 2, test_size: float = 0.2, seed: int = 0) -> Lake:
    """``n_groups`` groups of one real and one fake stage 3 video each, then the splits."""
    lake = Lake.at(root)
    index, scaled = [], []
    for g in range(n_groups):
        for label in (0, 1):
            vid = f"demo-g{g}-{'fake' if label else 'real'}"
            path = lake.stage3_videos / f"{vid}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            n = n_frames + (g % 3)                      # lengths differ
            write_video(path, frames=clip_frames(n, side, label, seed * 1000 + 2 * g + label), fps=10)
            index.append({"video_id": vid, "group_id": f"g{g}", "label": label, "variant": "original",
                          "source": "demo", "split": None})
            scaled.append({"video_id": vid, "path": str(path), "content_hash": file_hash(path), "n_frames": n,
                           "src_width": side, "src_height": side, "group_id": f"g{g}", "label": label,
                           "variant": "original", "is_upscaled": False, "is_downscaled": False})
    index_df = pl.DataFrame(index, schema_overrides={"label": pl.Int8, "split": pl.Utf8})
    write_parquet_atomic(index_df, lake.index)
    write_parquet_atomic(pl.DataFrame(scaled, schema_overrides={"label": pl.Int8}), lake.stage3)
    make_splits(lake, TrainConfig(folds=folds, test_size=test_size, seed=seed))
    return lake


def tiny_deep_config(models: str, **deep) -> TrainConfig:
    """2 folds, 3 epochs, batch 4, tiny clips, no workers: seconds per model on a CPU."""
    clip = {"frames": 4, "clips": 2, "size": 32}
    base = dict(epochs=3, patience=2, batch_size=4, workers=0, device="cpu", lr=1e-3,
                clip={m: clip for m in models.split(",")})
    base.update(deep)
    return TrainConfig(folds=2, models=models, test_size=0.2, deep=base, reuse_splits=True)


def deep_rows(lake: Lake, cfg: TrainConfig) -> pl.DataFrame:
    """The deep layer's video rows of the lake's splits (the torch layer takes the splits as an argument)."""
    from fvcflow.deep.loop import video_rows
    from fvcflow.training.fitting.splits import load_splits

    return video_rows(lake, cfg, load_splits(lake, cfg))


def video_cv(lake: Lake, spec, cfg: TrainConfig, **kw):
    """:func:`fvcflow.deep.loop.cross_validate_video` on the lake's splits."""
    from fvcflow.deep.loop import cross_validate_video
    from fvcflow.training.fitting.splits import load_splits

    return cross_validate_video(lake, spec, cfg, load_splits(lake, cfg), **kw)


def resume_store(lake: Lake, spec, cfg: TrainConfig):
    """The deep model's resume cache on the lake's splits."""
    from fvcflow.deep.loop import resume_cache
    from fvcflow.training.fitting.splits import load_splits

    return resume_cache(lake, spec, cfg, load_splits(lake, cfg))
