"""Learned where-in-frame evidence (issue 22, part 2): tile labels from a real pseudo-fake's mask,
the per-video summaries against a plain computation, and the canary: the tile model never sees a
tile of an evaluated video."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fvcflow.config import TrainConfig
from fvcflow.errors import FvcError
from fvcflow.models import get_model_spec
from fvcflow.schema import TILE, TILE_COLUMNS
from fvcflow.stages.augment import blend_video, draw_blend_params, read_masks
from fvcflow.stages.tiles import TILE_FEATURES, video_tiles
from fvcflow.store import write_parquet_atomic
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.tiles import TileEvidence, tile_summaries
from fvcflow.training.run import select_models
from fvcflow.video import sample_indices
from tests.feature_tables import write_lake
from tests.leakage_tables import ci_config, paired_table
from tests.media import write_video


def test_tiles_of_a_pseudo_fake_are_labelled_from_its_kept_mask(tmp_path):
    src = write_video(tmp_path / "real.mp4", n=12, width=256, height=192, seed=4)
    fake, mask = tmp_path / "fake.mp4", tmp_path / "fake-mask.mkv"
    blend_video(src, fake, mask, draw_blend_params("real", 1))
    tiles = video_tiles(fake, mask_path=mask, video_id="fake")
    masks = np.concatenate(list(read_masks(mask)))
    wanted = sample_indices(len(masks))
    assert tiles["frame"].unique().sort().to_list() == wanted.tolist()
    assert tiles.height == len(wanted) * (192 // TILE) * (256 // TILE)
    for r in tiles.filter(pl.col("frame") == int(wanted[2])).iter_rows(named=True):
        block = masks[r["frame"], r["ty"] * TILE:(r["ty"] + 1) * TILE, r["tx"] * TILE:(r["tx"] + 1) * TILE]
        assert r["blended"] == float((block > 127).mean() >= 0.5)
    assert 0 < tiles["blended"].sum() < tiles.height
    # without a mask: a real's tiles are clean, a fake's unknown
    assert video_tiles(src, label=0)["blended"].to_list() == [0.0] * tiles.height
    assert video_tiles(src, label=1)["blended"].is_nan().all()
    # deviation from the rest of the frame: robust z of the tile's value among its frame's tiles
    f = tiles.filter(pl.col("frame") == 0)
    v = f["t_noise"].to_numpy()
    med = np.median(v)
    z = (v - med) / (1.4826 * np.median(np.abs(v - med)) + 1e-6)
    np.testing.assert_allclose(f["d_noise"].to_numpy(), z)


def test_summaries_match_a_plain_computation():
    rng = np.random.default_rng(3)
    rows = [(v, f, float(s)) for v in ("a", "b") for f in range(3 if v == "a" else 2)
            for s in rng.random(6) * (0.6 if f else 1.0)]
    got = tile_summaries(pl.DataFrame(rows, schema=["video_id", "frame", "score"], orient="row"))
    for vid in ("a", "b"):
        frames = {}
        for v, f, s in rows:
            if v == vid:
                frames.setdefault(f, []).append(s)
        every = [s for fr in frames.values() for s in fr]
        want = {"te_peak": max(every),
                "te_peak_mean": sum(max(fr) for fr in frames.values()) / len(frames),
                "te_extent": sum(sum(s >= 0.5 for s in fr) / len(fr) for fr in frames.values()) / len(frames),
                "te_persistence": sum(any(s >= 0.5 for s in fr) for fr in frames.values()) / len(frames),
                "te_mean": sum(every) / len(every)}
        row = got.filter(pl.col("video_id") == vid).row(0, named=True)
        assert row == pytest.approx({"video_id": vid, **want})
    assert got.columns == ["video_id", *TILE_COLUMNS]


def _tiles(t, rng) -> pl.DataFrame:
    """Tile tables of every video of ``t``: 2 frames of 12 tiles; a fake's 3 blended tiles per frame
    stand out of their frame in ``d_noise`` and ``t_noise``."""
    parts = []
    for vid, y in zip(t.video_id, t.y):
        X = rng.normal(0.0, 1.0, (24, len(TILE_FEATURES)))
        blended = np.zeros(24)
        if y:
            blended[[0, 1, 2, 12, 13, 14]] = 1.0
            X[blended == 1, :2] += 2.5
        parts.append(pl.DataFrame({"video_id": [vid] * 24, "frame": np.repeat([0, 1], 12),
                                   "ty": np.tile(np.arange(12) // 4, 2), "tx": np.tile(np.arange(12) % 4, 2),
                                   **{c: X[:, i] for i, c in enumerate(TILE_FEATURES)}, "blended": blended}))
    return pl.concat(parts)


def _fold_predictions(t, cfg, tiles) -> dict[int, np.ndarray]:
    spec = get_model_spec("logreg_s2lt")
    hook = TileEvidence(tiles, folds=2, params={"n_estimators": 15, "max_depth": 2})
    oof = cross_validate(spec, t, cfg, fold_hook=hook).predictions
    oof = oof.filter(pl.col("split") == "oof").sort("video_id")
    return {k: oof.filter(pl.col("fold") == k)["prob_fake"].to_numpy() for k in t.folds}


def test_canary_evaluated_tiles_never_train_the_tile_model():
    """Tiles of the evaluated fold relabelled at random leave that fold's predictions (so its AUC)
    exactly as they were; relabelling a training fold's tiles moves them (the canary can fail)."""
    t = paired_table(8, signal=0.0, feature_set="s2lt", seed=5, folds=2)
    cfg = ci_config(["logreg_s2lt"])
    tiles = _tiles(t, np.random.default_rng(0))
    base = _fold_predictions(t, cfg, tiles)
    assert all(np.isfinite(p).all() for p in base.values())

    def scrambled(fold: int) -> pl.DataFrame:
        ids = list(t.video_id[t.fold == fold])
        noise = np.random.default_rng(fold + 11).integers(0, 2, tiles.height).astype(float)
        return tiles.with_columns(blended=pl.when(pl.col("video_id").is_in(ids)).then(pl.Series(noise))
                                  .otherwise(pl.col("blended")))

    moved = _fold_predictions(t, cfg, scrambled(0).sample(fraction=1.0, shuffle=True, seed=2))
    np.testing.assert_array_equal(moved[0], base[0])   # evaluated tiles never fitted on (rows in any order)
    assert not np.array_equal(moved[1], base[1])                      # fold 0 trains fold 1's tile model


def test_a_tile_model_without_blended_tiles_says_what_to_turn_on():
    t = paired_table(4, feature_set="s2lt", seed=1, folds=2)
    tiles = _tiles(t, np.random.default_rng(1)).with_columns(blended=pl.lit(0.0))
    with pytest.raises(FvcError, match="augment.self_blend"):
        TileEvidence(tiles).fit(t.video_id)


def test_tile_models_are_skipped_with_the_reason_without_masks(tmp_path):
    lake = write_lake(tmp_path, n_groups=6, n_aug=0)
    names, skipped = select_models(lake, TrainConfig(models="*_s2l*"))
    assert "xgb_s2l" in names and "xgb_s2lt" not in names
    assert "augment.self_blend" in skipped["xgb_s2lt"] and "augment.self_blend" in skipped["logreg_s2lt"]
    chosen, skipped = select_models(lake, TrainConfig())          # '*' never selects them
    assert "xgb_s2lt" not in chosen and "xgb_s2lt" not in skipped
    index = pl.read_parquet(lake.index)             # the hook for a corpus's own masks
    write_parquet_atomic(index.with_columns(mask_path=pl.lit("masks/x.mkv")), lake.index)
    assert "xgb_s2lt" in select_models(lake, TrainConfig(models="xgb_s2lt"))[0]
