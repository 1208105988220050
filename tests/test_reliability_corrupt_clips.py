"""A damaged clip-cache entry of the deep models (issue 15, clip files): a truncated or bit-flipped
cached clip array (RGB, or RGB + flow of the two-stream model) or embedding table is detected by
the checksum recorded at write time, reported (a warning naming the file and the video), removed
and recomputed from the video: the arrays are those of the undamaged cache, never damaged pixels."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fvcflow.deep.clips import ClipCache, ClipSource, save_clips
from fvcflow.deep.data import ClipDataset
from fvcflow.deep.embeddings import Backbone, embedding_table, table_path
from fvcflow.deep.loop import _source, prepare_sources
from fvcflow.models.torch_common import clip_spec
from fvcflow.store import CorruptEntry, checked_writer, read_checked_bytes, read_parquet, verify_checked_file
from tests.deep_lake import FLOW, RGB, deep_rows, tiny_deep_config, write_deep_lake
from tests.media import write_video
from tests.test_reliability_corrupt import flip, truncate

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("corrupt-clips") / "fvc-data", n_groups=6)


def _videos(folder: Path, n: int = 4) -> list[ClipSource]:
    out = []
    for i in range(n):
        path = write_video(folder / f"v{i}.mp4", n=10 + i, width=48, height=40, seed=i)
        out.append(ClipSource(f"v{i}", str(path), f"hash{i}", 10 + i))
    return out


def _warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_damaged_clip_files_are_reported_removed_and_decoded_again(tmp_path, caplog):
    sources = _videos(tmp_path / "videos")
    jobs = [(s, RGB) for s in sources] + [(sources[0], FLOW)]
    first = ClipCache(tmp_path / "clips")
    originals = [np.array(first.load(s, spec)) for s, spec in jobs]
    paths = [first.path(s, spec) for s, spec in jobs]
    whole = [p.read_bytes() for p in paths]
    assert first.decoded == len(jobs) and all(p.suffix == ".clip" for p in paths)

    truncate(paths[0])                                  # a truncated RGB entry
    flip(paths[1])                                      # one bit of the pixels
    flip(paths[4], 0.9)                                 # one bit of the two-stream (RGB + flow) entry
    np.save(paths[2].with_suffix(".npy"), np.zeros((2, 5, 32, 32, 3), np.uint8))
    paths[2].with_suffix(".npy").replace(paths[2])      # an unchecked .npy where a checked file belongs
    damaged = {0, 1, 2, 4}

    again = ClipCache(tmp_path / "clips")
    with caplog.at_level(logging.WARNING, logger="fvcflow.deep"):
        got = [np.array(again.load(s, spec)) for s, spec in jobs]
    warned = _warnings(caplog)
    for i, (s, _) in enumerate(jobs):
        line = f"clips: damaged cache entry {paths[i]} for {s.video_id}: "
        assert (line in warned) == (i in damaged), warned
    assert "truncated" in warned and "differs from the checksum" in warned and "not a checked file" in warned
    assert warned.count("; recomputed") == len(damaged)
    assert again.damaged == [str(paths[i]) for i in sorted(damaged)]
    assert (again.decoded, again.reused) == (len(damaged), len(jobs) - len(damaged))
    for a, b in zip(got, originals):
        assert a.dtype == np.uint8 and np.array_equal(a, b)
    assert [p.read_bytes() for p in paths] == whole     # the files are whole again, byte for byte
    assert not list((tmp_path / "clips").rglob("*.tmp"))


def test_an_entry_damaged_after_this_cache_checked_it_is_checked_again(tmp_path, caplog):
    """The cache verifies a file once and maps it later without hashing; a file changed since
    (another modification time or size) is verified again before a single pixel is read."""
    src = _videos(tmp_path / "videos", 1)[0]
    cache = ClipCache(tmp_path / "clips")
    original = np.array(cache.load(src, RGB))
    assert np.array_equal(cache.load(src, RGB), original) and cache.reused == 1
    path = cache.path(src, RGB)
    flip(path, 0.6)
    with caplog.at_level(logging.WARNING, logger="fvcflow.deep"):
        got = cache.load(src, RGB, mmap=False)
    assert f"damaged cache entry {path} for v0" in _warnings(caplog)
    assert np.array_equal(got, original) and cache.decoded == 2 and cache.damaged == [str(path)]


def test_the_training_path_recomputes_damaged_clips_and_reads_whole_ones(lake, caplog):
    """``prepare_sources`` (what the deep trainer and the embedding kind call first) on a lake
    whose clip cache was damaged: no video is lost or recorded as failed, and the Dataset's
    items are those of the undamaged cache."""
    cfg = tiny_deep_config("naive_3dcnn")
    clip = clip_spec("naive_3dcnn", cfg.deep.clip["naive_3dcnn"])
    rows = deep_rows(lake, cfg)
    sources = [_source(r) for r in rows.to_dicts()]
    cache = ClipCache(lake.cache_dir("clips"))
    prepare_sources(lake, rows, clip, cache)
    reference = ClipDataset(sources, [0] * len(sources), clip, cache, train=False)
    expected = [reference[i][0] for i in range(len(reference))]
    paths = [cache.path(s, clip) for s in sources]
    truncate(paths[1], 0.3)
    flip(paths[3], 0.5)

    cache = ClipCache(lake.cache_dir("clips"))
    with caplog.at_level(logging.WARNING, logger="fvcflow.deep"):
        kept = prepare_sources(lake, rows, clip, cache)
    warned = _warnings(caplog)
    for i in (1, 3):
        assert f"clips: damaged cache entry {paths[i]} for {sources[i].video_id}: " in warned
    assert kept["video_id"].to_list() == rows["video_id"].to_list()
    assert read_parquet(lake.failures) is None
    assert (cache.decoded, len(cache.damaged)) == (2, 2)
    ds = ClipDataset(sources, [0] * len(sources), clip, cache, train=False)
    for i, x in enumerate(expected):
        assert np.array_equal(ds[i][0].numpy(), x.numpy())
    for p in paths:
        with open(p, "rb") as fh:
            verify_checked_file(fh, p)


def test_a_damaged_embedding_table_is_recomputed(lake, tmp_path, caplog):
    backbone = Backbone("i3d_r50", clip_spec("i3d_r50", {"frames": 4, "clips": 2, "size": 32}), None,
                        (("width", 8),), 0)
    sources = [_source(r) for r in deep_rows(lake, tiny_deep_config("i3d_r50")).to_dicts()]
    cache = ClipCache(tmp_path / "clips")
    first = embedding_table(lake, backbone, sources, cache=cache)
    path = table_path(lake, backbone)
    flip(path, 0.5)
    with caplog.at_level(logging.WARNING, logger="fvcflow.deep"):
        again = embedding_table(lake, backbone, sources, cache=cache)
    assert f"embeddings: damaged cache entry {path}: " in _warnings(caplog)
    assert again.equals(first)
    assert read_parquet(path).sort("content_hash").equals(first.drop("video_id").sort("content_hash"))
    # a table of an fvcflow before the checks (no digest) is embedded again, not trusted
    pl.read_parquet(path).with_columns(pl.col("^emb_.*$") * 0).write_parquet(path)
    assert embedding_table(lake, backbone, sources, cache=cache).equals(first)


def test_a_streamed_checked_file_is_a_checked_blob_and_refuses_damage(tmp_path):
    arr = np.arange(2 * 3 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 4, 3)
    path = tmp_path / "a.clip"
    save_clips(path, arr)
    payload = read_checked_bytes(path)                  # the store's blob format, streamed
    assert payload[:6] == b"\x93NUMPY" and np.array_equal(np.load(io.BytesIO(payload)), arr)
    with checked_writer(tmp_path / "b.bin") as fh:
        for part in (b"abc", memoryview(b"defg"), bytearray(b"h")):
            fh.write(part)
    assert read_checked_bytes(tmp_path / "b.bin") == b"abcdefgh"
    for damage, reason in ((lambda p: flip(p, 0.8), "differs from the checksum"),
                           (lambda p: truncate(p, 0.9), "truncated"),
                           (lambda p: p.write_bytes(p.read_bytes() + b"x"), "more than")):
        save_clips(path, arr)
        damage(path)
        with open(path, "rb") as fh, pytest.raises(CorruptEntry, match=reason):
            verify_checked_file(fh, path)
