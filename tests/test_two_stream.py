"""Two-stream RGB + optical flow: flow clips computed once and cached like RGB clips, the Dataset's
flow channels, and the two-stream model training through the deep loop on a small real-video lake."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from fvcflow.deep import clips as clips_mod
from fvcflow.deep.clips import ClipCache, ClipSource, cache_config, decode_clips
from fvcflow.deep.data import ClipDataset, augment, normalise
from fvcflow.deep.flow import FLOW_BOUND, decode_flow, flow_windows, spec_flow_method
from fvcflow.training import run_training
from tests.deep_lake import FLOW, RGB, deep_rows, tiny_deep_config, write_deep_lake

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("two-stream") / "fvc-data", n_groups=6)


def _sources(lake) -> list[ClipSource]:
    rows = deep_rows(lake, tiny_deep_config("two_stream_i3d"))
    return [ClipSource(r["video_id"], r["path"], r["content_hash"], r["n_frames"]) for r in rows.to_dicts()]


def test_flow_clips_are_rgb_plus_the_flow_of_those_frames(lake):
    src = _sources(lake)[0]
    rgb = decode_clips(src, RGB)
    both = decode_clips(src, FLOW)
    assert both.shape == (*rgb.shape[:4], 5) and both.dtype == np.uint8
    assert np.array_equal(both[..., :3], rgb)
    assert np.array_equal(both[..., 3:], flow_windows(rgb, spec_flow_method("farneback")))
    assert cache_config(FLOW) != cache_config(RGB)                  # their own cache files
    assert cache_config(FLOW)["flow"]["method"] == "farneback"


def test_flow_clips_are_computed_once_then_read_from_the_cache(lake, tmp_path, monkeypatch):
    sources = _sources(lake)
    cache = ClipCache(tmp_path / "clips")
    first = [np.asarray(cache.load(s, FLOW)) for s in sources]
    assert (cache.decoded, cache.reused) == (len(sources), 0)
    files = sorted((tmp_path / "clips").rglob("*.clip"))
    assert len(files) == len(sources)
    mtimes = [f.stat().st_mtime_ns for f in files]

    def no_flow(*args, **kwargs):
        raise AssertionError("flow computed again")

    monkeypatch.setattr(clips_mod, "with_flow", no_flow)
    again = ClipCache(tmp_path / "clips")
    second = [np.asarray(again.load(s, FLOW)) for s in sources]
    assert (again.decoded, again.reused) == (0, len(sources))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_dataset_items_carry_decoded_flow_and_a_mirror_negates_dx(lake):
    ds = ClipDataset(_sources(lake)[:2], [0, 1], FLOW, ClipCache(None), train=False).prepare()
    x, _, _ = ds[0]
    assert x.shape == (5, 4, 32, 32)
    assert x[3:].abs().max() <= 1.0                                   # units of FLOW_BOUND pixels
    # a clip whose flow is 2 px to the right everywhere: mirrored, it is 2 px to the left
    clip = torch.zeros(5, 2, 8, 8)
    code = float(np.rint(128 + 127 * 2.0 / FLOW_BOUND))
    clip[3], clip[4] = code / 255.0, 128 / 255.0
    flipped = None
    for seed in range(20):                                            # find a draw that mirrors
        out = augment(clip.clone(), torch.Generator().manual_seed(seed))
        if out[3].mean() < 0.5:
            flipped = normalise(out, FLOW)
            break
    assert flipped is not None
    dx = flipped[3] * FLOW_BOUND
    assert torch.allclose(dx, torch.full_like(dx, -2.0), atol=FLOW_BOUND / 127)
    unflipped = normalise(clip.clone(), FLOW)[3] * FLOW_BOUND
    assert torch.allclose(unflipped, torch.tensor(2.0), atol=FLOW_BOUND / 127)
    assert np.allclose(decode_flow(np.array([128], np.uint8)), 0.0)


@pytest.mark.slow
def test_two_stream_model_trains_through_the_training_stage(lake):
    cfg = tiny_deep_config("two_stream_i3d")
    cfg.params = {"two_stream_i3d": {"width": 8}}
    cfg.register_best = False
    cfg.report = False
    summary = run_training(lake, cfg)
    result = next(r for r in summary.results if r.name == "two_stream_i3d")
    assert result.model.clip.channels == "rgb+flow"
    oof = result.predictions.filter(pl.col("split") == "oof")
    train_originals = deep_rows(lake, cfg).filter(~pl.col("is_test") & (pl.col("variant") == "original"))
    assert sorted(oof["video_id"].to_list()) == sorted(train_originals["video_id"].to_list())
    assert oof["prob_fake"].is_between(0, 1).all()
    assert all(len(h) >= 1 for h in result.fold_history)
