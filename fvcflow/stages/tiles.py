"""Tile tables: every base tile of a video's sampled frames, its statistics, its deviation from the
rest of its frame, and, where a mask says so, whether it was blended (issue 22, part 2).

One row per (video, sampled frame, tile) of the base grid (32 px, the local features' grid,
:mod:`fvcflow.stages.local`), the frames those of stage 2 (:func:`fvcflow.video.sample_indices`):

- the ten tile maps (``MAP_NAMES``: ``noise``, ``lap_var``, ``grad_energy`` as ``log(1 + x)``,
  the others as they are), named ``t_{map}``;
- each one's deviation from the rest of its frame, ``d_{map}`` (``block_phase`` excepted): the
  robust z ``(v - median) / (1.4826 MAD + 1e-6)`` over the frame's tiles, signed;
- ``d_phase``: 1.0 when the tile shows a coding grid (``block_strength`` > 1) whose
  ``block_phase`` differs from the frame's most common one among such tiles, else 0.0;
- ``blended``: 1.0 when at least half of the tile's pixels have a mask weight above 127 (of 255),
  0.0 when less; where no mask exists, 0.0 for a real video (nothing is blended in a real) and
  NaN (unknown) for a fake.

Masks come from the self-blended pseudo-fakes (``stage1/augmented.parquet``'s ``mask_path``, a
lossless video of the per-frame weights). A corpus that ships masks of its manipulated videos
(FaceForensics++ ``masks/``) gives them through the same hook: a ``mask_path`` column on the
index rows (the same lossless video form, or any video whose luma is the mask) is read the same
way. The tables are cached under ``stage5/tiles/`` by the video's content hash.

>>> TILE_FEATURES[:3], len(TILE_FEATURES)
(('t_noise', 't_lap_var', 't_grad_energy'), 20)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from fvcflow.errors import FvcError, VideoError
from fvcflow.kernels import MAP_NAMES, local_frame
from fvcflow.schema import BLEND_PREFIX, COARSE, TILE
from fvcflow.store import Lake, read_parquet, write_parquet_atomic
from fvcflow.video import iter_luma, iter_yuv, probe, sample_indices

log = logging.getLogger("fvcflow.stages")

#: maps compared as log(1 + x): energies spread over orders of magnitude
LOG_MAPS = ("noise", "lap_var", "grad_energy")
#: maps with a deviation column (block_phase is a label, not a level: ``d_phase`` instead)
DEV_MAPS = tuple(m for m in MAP_NAMES if m != "block_phase")
#: the tile model's input columns, in order
TILE_FEATURES: tuple[str, ...] = (*(f"t_{m}" for m in MAP_NAMES), *(f"d_{m}" for m in DEV_MAPS), "d_phase")
#: bump when a tile row changes meaning (part of the cache file's name)
TILE_VERSION = 1
#: a tile is blended when this share of its pixels is inside the mask (weight > MASK_LEVEL)
BLENDED_SHARE, MASK_LEVEL = 0.5, 127


def frame_tiles(maps: np.ndarray) -> dict[str, np.ndarray]:
    """The tile columns of one frame's base maps (float64[N_MAPS, ny, nx], ``MAP_NAMES`` order),
    each flattened in raster order.

    >>> m = np.ones((len(MAP_NAMES), 2, 3)); m[0, 1, 2] = 9.0
    >>> cols = frame_tiles(m)
    >>> float(cols["d_noise"][5]) > 1e5, float(cols["d_noise"][0])
    (True, 0.0)
    """
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(MAP_NAMES):
        v = maps[i].ravel().astype(np.float64)
        if name in LOG_MAPS:
            v = np.log1p(np.maximum(v, 0.0))
        out[f"t_{name}"] = v
    for name in DEV_MAPS:
        v = out[f"t_{name}"]
        with np.errstate(all="ignore"):
            med = np.nanmedian(v) if np.isfinite(v).any() else np.nan
            mad = np.nanmedian(np.abs(v - med)) if np.isfinite(v).any() else np.nan
        out[f"d_{name}"] = (v - med) / (1.4826 * mad + 1e-6)
    strength = maps[MAP_NAMES.index("block_strength")].ravel()
    phase = maps[MAP_NAMES.index("block_phase")].ravel()
    grid = strength > 1.0
    if grid.any():
        values, counts = np.unique(phase[grid], return_counts=True)
        common = values[np.argmax(counts)]
        out["d_phase"] = (grid & (phase != common)).astype(np.float64)
    else:
        out["d_phase"] = np.zeros(strength.size)
    return out


def tile_labels(mask: np.ndarray, ny: int, nx: int, tile: int = TILE) -> np.ndarray:
    """``blended`` of every base tile (raster order) from one frame's mask weights (uint8[H, W]).

    >>> m = np.zeros((64, 96), np.uint8); m[:32, 32:64] = 255; m[32:, :16] = 255
    >>> tile_labels(m, 2, 3).tolist()
    [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    """
    inside = np.asarray(mask)[:ny * tile, :nx * tile] > MASK_LEVEL
    share = inside.reshape(ny, tile, nx, tile).mean(axis=(1, 3))
    return (share >= BLENDED_SHARE).astype(np.float64).ravel()


def video_tiles(path: str | Path, *, mask_path: str | Path | None = None, label: int | None = None,
                video_id: str = "") -> pl.DataFrame:
    """The tile table of one video (module docstring): ``video_id``, ``frame``, ``ty``, ``tx``,
    :data:`TILE_FEATURES`, ``blended``.

    ``mask_path``: the video's mask video (the same frames; weight 0..255 in its luma);
    ``label``: the video's label, used where there is no mask (0: every tile 0.0, else NaN).
    Raises :class:`~fvcflow.errors.VideoError` naming the file when it has no decodable frame.
    """
    info = probe(path)
    wanted = sample_indices(info.n_frames)
    masks: dict[int, np.ndarray] = {}
    if mask_path is not None:
        masks = {int(i): m.copy() for i, m in iter_luma(mask_path, wanted)}
        if not masks:
            raise VideoError(mask_path, "the mask video has no decodable frame")
    parts = []
    for index, (gray, cb, cr) in iter_yuv(path, wanted, info=info):
        maps = local_frame(gray, cb, cr, tile=TILE, coarse=COARSE).maps
        _, ny, nx = maps.shape
        if ny == 0 or nx == 0:
            continue
        cols = frame_tiles(maps)
        if mask_path is not None:
            if int(index) not in masks:
                raise VideoError(mask_path, f"no mask for frame {int(index)} of {path}")
            blended = tile_labels(masks[int(index)], ny, nx)
        else:
            blended = np.full(ny * nx, 0.0 if label == 0 else np.nan)
        yy, xx = np.divmod(np.arange(ny * nx), nx)
        parts.append(pl.DataFrame({"video_id": [video_id] * (ny * nx),
                                   "frame": np.full(ny * nx, int(index), np.int32),
                                   "ty": yy.astype(np.int16), "tx": xx.astype(np.int16),
                                   **{c: cols[c] for c in TILE_FEATURES}, "blended": blended}))
    if not parts:
        raise VideoError(path, f"no decodable frame of at least one {TILE} px tile")
    return pl.concat(parts)


def tile_sources(lake: Lake) -> pl.DataFrame:
    """Every video whose tiles a tile model may read: ``video_id``, ``path``, ``content_hash``,
    ``mask_path`` (null without a mask), ``label`` (the originals' from the index; a pseudo-fake
    is 1, an augmented copy its source's label)."""
    index = read_parquet(lake.index)
    if index is None:
        raise FvcError(f"no video index at {lake.index}: run the ingest stage first (fvc ingest ...)")

    def pick(df: pl.DataFrame) -> pl.DataFrame:
        return df.select("video_id", "path",
                         pl.col("content_hash") if "content_hash" in df.columns else pl.lit(None, pl.Utf8)
                         .alias("content_hash"),
                         pl.col("mask_path").cast(pl.Utf8) if "mask_path" in df.columns
                         else pl.lit(None, pl.Utf8).alias("mask_path"),
                         pl.col("label").cast(pl.Int64))
    out = [pick(index)]
    copies = read_parquet(lake.stage1)
    if copies is not None and copies.height:
        labels = index.select(pl.col("video_id").alias("source_video_id"), "label")
        variant = pl.col("variant") if "variant" in copies.columns else pl.lit("aug")
        copies = copies.join(labels, on="source_video_id", how="left").with_columns(
            label=pl.when(variant.str.starts_with(BLEND_PREFIX)).then(1).otherwise(pl.col("label")))
        out.append(pick(copies))
    return pl.concat(out, how="vertical_relaxed").unique("video_id", keep="last", maintain_order=True) \
        .sort("video_id")


def _resolve(lake: Lake, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else lake.root / p


def lake_tiles(lake: Lake, video_ids) -> pl.DataFrame:
    """The tile tables of ``video_ids`` (videos of :func:`tile_sources`), concatenated; each is
    computed once and cached in ``stage5/tiles/`` under its content hash and :data:`TILE_VERSION`
    (a video without a hash: under its id). A missing video is an error naming it."""
    sources = tile_sources(lake).filter(pl.col("video_id").is_in(list(video_ids)))
    missing = sorted(set(video_ids) - set(sources["video_id"].to_list()))
    if missing:
        raise FvcError(f"{lake.index}: no video row for {len(missing)} videos of the splits "
                       f"({', '.join(missing[:3])}): rerun the augment stage")
    root = lake.stage5 / "tiles"
    parts = []
    for r in sources.iter_rows(named=True):
        name = f"{r['content_hash'] or r['video_id']}-{r['video_id']}-v{TILE_VERSION}-{TILE}.parquet"
        cached = root / name.replace("/", "_")
        table = read_parquet(cached) if cached.is_file() else None
        if table is None:
            mask = _resolve(lake, r["mask_path"]) if r["mask_path"] else None
            table = video_tiles(_resolve(lake, r["path"]), mask_path=mask, label=r["label"],
                                video_id=r["video_id"])
            write_parquet_atomic(table, cached)
        parts.append(table)
    return pl.concat(parts) if parts else pl.DataFrame()
