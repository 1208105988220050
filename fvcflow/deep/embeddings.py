"""Frozen deep embeddings of videos, for XGBoost on deep features (the ``embedding`` kind).

A video's embedding is the mean over its evaluation clips (the deterministic clips of
:mod:`fvcflow.deep.clips`, the backbone's own normalisation) of the backbone's ``features`` of
each clip: one row per video. The backbone is frozen: eval mode, no gradient, never fitted, and
no label reaches it, so the embedding of a video does not depend on which videos are trained on
or evaluated (it is the same function of the video in every fold).

Embeddings are computed once per backbone, weights, constructor keywords, clip spec and seed,
and cached as content-addressed Parquet: ``stage5/embeddings/<backbone>-<key>.parquet`` (``key``
hashes all of those, the weights by their file's content), with one row per video content hash.
A rerun reads them; a video added to the lake is embedded and appended, nothing else. The table
is a checked Parquet file (:func:`fvcflow.store.write_checked_parquet`: a digest of the whole
file in its footer, verified before it is parsed): a truncated or bit-flipped table is logged
(``embeddings: damaged cache entry <path>: <reason>; recomputed``), removed and every video is
embedded again; a table of an fvcflow before the checks (no digest) is recomputed once too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from fvcflow.deep.clips import ClipCache, ClipSource
from fvcflow.deep.data import ClipDataset, make_loader
from fvcflow.models.torch_common import ClipSpec, build_video_model
from fvcflow.models.weights import is_named, resolve
from fvcflow.schema import EMBEDDING_PREFIX
from fvcflow.store import (
    CorruptEntry,
    Lake,
    cache_key,
    file_hash,
    read_checked_parquet,
    write_checked_parquet,
)

log = logging.getLogger("fvcflow.deep")

EMBEDDING_VERSION = 1
PREFIX = EMBEDDING_PREFIX


@dataclass(frozen=True)
class Backbone:
    """Which frozen network embeds the videos: a registered deep model and how it is built."""

    name: str
    clip: ClipSpec
    weights: str | None = None
    params: tuple[tuple[str, Any], ...] = ()
    seed: int = 0

    def config(self) -> dict[str, Any]:
        """What makes two embeddings differ (the weights by content, not by path)."""
        return {"backbone": self.name, "clip": self.clip.as_dict(), "params": dict(self.params),
                "weights": self.weights_digest(), "seed": self.seed,
                "v": EMBEDDING_VERSION}

    def weights_digest(self) -> str:
        """"random", a local file's content hash, or a named weight's name and SHA-256 (its cached file)."""
        if not self.weights:
            return "random"
        if is_named(self.weights):
            return f"{self.weights}@{resolve(self.name, self.weights, dict(self.params)).sha256}"
        return file_hash(self.weights)

    def key(self) -> str:
        return cache_key("", "embeddings", self.config())

    def build(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        model = build_video_model(self.name, clip=self.clip, weights=self.weights, seed=self.seed,
                                  **dict(self.params))
        return model.eval().requires_grad_(False).to(device)


def embedding_columns(dim: int) -> list[str]:
    return [f"{PREFIX}{i:04d}" for i in range(dim)]


def table_path(lake: Lake, backbone: Backbone) -> Path:
    return lake.embeddings / f"{backbone.name}-{backbone.key()[:20]}.parquet"


@torch.no_grad()
def embed_sources(model: torch.nn.Module, sources: list[ClipSource], clip: ClipSpec, cache: ClipCache, *,
                  device: torch.device | str = "cpu", batch_size: int = 8, workers: int = 0) -> np.ndarray:
    """``float32[len(sources), D]``: each video's mean clip embedding (evaluation clips)."""
    ds = ClipDataset(sources, [0] * len(sources), clip, cache, train=False).prepare()   # no labels
    loader = make_loader(ds, batch_size=batch_size, shuffle=False, workers=workers, pin_memory=False)
    total: torch.Tensor | None = None
    count = torch.zeros(len(sources), dtype=torch.float64)
    for x, _, v in loader:
        if isinstance(x, list):             # clips of different shapes (variable aspect): one by one
            feats = torch.cat([model.features(c.unsqueeze(0).to(device)) for c in x])
        else:
            feats = model.features(x.to(device))
        feats = feats.double().cpu()
        if total is None:
            total = torch.zeros(len(sources), feats.shape[1], dtype=torch.float64)
        total.index_add_(0, v, feats)
        count.index_add_(0, v, torch.ones_like(v, dtype=torch.float64))
    return (total / count.clamp(min=1)[:, None]).float().numpy()


def embedding_table(lake: Lake, backbone: Backbone, sources: list[ClipSource], *,
                    device: torch.device | str = "cpu", batch_size: int = 8, workers: int = 0,
                    cache: ClipCache | None = None) -> pl.DataFrame:
    """``video_id``, ``content_hash`` and the ``emb_*`` columns of every source (computed once).

    Rows of the cached table whose content hash is among ``sources`` are reused; the others are
    embedded now and the table is rewritten atomically with them.
    """
    path = table_path(lake, backbone)
    cached = _read_table(path)
    have = set(cached["content_hash"].to_list()) if cached is not None else set()
    todo = [s for s in sources if s.content_hash not in have]
    if todo:
        log.info("%s: embedding %d videos (%d cached) into %s", backbone.name, len(todo), len(have), path)
        if backbone.weights is None:
            log.warning("%s: frozen backbone with random weights (no train.deep.weights given)",
                        backbone.name)
        model = backbone.build(device)
        emb = embed_sources(model, todo, backbone.clip, cache or ClipCache(lake.cache_dir("clips")),
                            device=device, batch_size=batch_size, workers=workers)
        new = pl.DataFrame({"content_hash": [s.content_hash for s in todo]}).with_columns(
            pl.DataFrame(emb, schema=embedding_columns(emb.shape[1])))
        full = new if cached is None else pl.concat([cached, new], how="vertical_relaxed")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_checked_parquet(full.unique("content_hash", keep="last"), path)
        (path.with_suffix(".json")).write_text(json.dumps(backbone.config(), indent=2, default=list))
        cached = full
    ids = pl.DataFrame({"video_id": [s.video_id for s in sources],
                        "content_hash": [s.content_hash for s in sources]})
    return ids.join(cached.unique("content_hash", keep="last"), on="content_hash", how="left")


def _read_table(path: Path) -> pl.DataFrame | None:
    """The cached embeddings at ``path``, verified; None when absent or damaged (then removed)."""
    try:
        return read_checked_parquet(path)
    except CorruptEntry as exc:
        if exc.legacy:
            log.info("embeddings: %s has no checksum (an older fvcflow wrote it); recomputed", path)
        else:
            log.warning("embeddings: damaged cache entry %s: %s; recomputed", path, exc.reason)
        path.unlink(missing_ok=True)
        return None


@torch.no_grad()
def video_embedding(model: torch.nn.Module, clip: ClipSpec, path: str | Path, *, src_width: int | None = None,
                    src_height: int | None = None) -> np.ndarray:
    """``float32[D]``: the mean embedding of a video file's evaluation clips (``fvc predict``)."""
    from fvcflow.deep.clips import clip_offsets, decode_clips, eval_offset
    from fvcflow.deep.data import normalise
    from fvcflow.video import probe

    src = ClipSource("predict", str(path), "", probe(path).n_frames, src_width, src_height)
    windows = decode_clips(src, clip)[:, clip_offsets(clip, eval_offset(clip))]
    x = torch.from_numpy(np.ascontiguousarray(windows)).permute(0, 4, 1, 2, 3).float().div_(255.0)
    x = torch.stack([normalise(c, clip) for c in x])
    model.eval()
    return model.features(x.to(next(model.parameters()).device)).double().mean(0).float().cpu().numpy()


def columns_of(table: pl.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(PREFIX)]
