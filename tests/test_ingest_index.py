"""The index writer: schema and keys, failures, duplicates, merging corpora, the CLI's surface."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest

from fvcflow.cli import main
from fvcflow.errors import FvcError
from fvcflow.ingest.index import INDEX_SCHEMA, ingest
from fvcflow.store import Lake, file_hash
from fvcflow.video import probe
from tests.media import truncate, write_video


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture
def messy(tmp_path) -> Path:
    """A folder corpus with good videos, an exact copy, and every kind of unusable file."""
    root = tmp_path / "corpus"
    write_video(root / "good.mp4", n=10, seed=1)
    write_video(root / "other.webm", n=10, seed=2)
    shutil.copy(root / "good.mp4", root / "zz_copy.mp4")
    (root / "empty.mp4").write_bytes(b"")
    truncate(write_video(root / "cut.mp4", n=10, seed=3), 0.3)
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    _audio_only(root / "audio.mp4")
    names = ["good.mp4", "other.webm", "zz_copy.mp4", "empty.mp4", "cut.mp4", "text.mp4", "audio.mp4"]
    (root / "labels.csv").write_text("".join(f"{n},{'real' if i % 2 else 'fake'},g{i}\n" for i,
                                             n in enumerate(names)))
    return root


def test_index_schema_keys_and_values_match_the_probe(messy, tmp_path):
    lake = Lake.at(tmp_path / "home")
    ingest("folder", messy, lake, labels=messy / "labels.csv", workers=2)
    df = pl.read_parquet(lake.index)
    assert list(df.columns) == list(INDEX_SCHEMA) and dict(df.schema) == INDEX_SCHEMA
    assert df["video_id"].n_unique() == df.height == 2
    assert df.select(pl.col("video_id", "group_id", "source", "variant",
                            "content_hash").is_null().any()).row(0) \
        == (False,) * 5
    for row in df.iter_rows(named=True):
        info = probe(row["path"])
        assert {k: row[k] for k in info.as_row()} == info.as_row()
        assert row["content_hash"] == file_hash(row["path"])
        assert row["video_id"] == "folder-" + row["content_hash"][:16]


def test_unusable_files_become_failures_with_reasons(messy, tmp_path):
    lake = Lake.at(tmp_path / "home")
    summary = ingest("folder", messy, lake, labels=messy / "labels.csv", workers=1)
    fails = {Path(r["path"]).name: r for r in pl.read_parquet(lake.failures).iter_rows(named=True)}
    assert set(fails) == {"empty.mp4", "cut.mp4", "text.mp4", "audio.mp4", "zz_copy.mp4"}
    assert all(r["stage"] == "ingest" for r in fails.values())
    assert fails["empty.mp4"]["reason"] == "empty file (0 bytes)"
    assert "no video stream" in fails["audio.mp4"]["reason"]
    assert fails["text.mp4"]["error_type"] == "VideoError" and fails["cut.mp4"]["error_type"] == "VideoError"
    good = pl.read_parquet(lake.index).filter(pl.col("path").str.ends_with("good.mp4"))
    assert fails["zz_copy.mp4"]["reason"] == f"duplicate of {good['video_id'][0]}"
    assert (summary.found, summary.indexed, summary.n_failed) == (7, 2, 5)
    assert summary.failed["empty file (0 bytes)"] == 1
    assert summary.failed["duplicate (exact copy of an indexed video)"] == 1
    assert summary.as_rows() == [{"source": "folder", "found": 7, "indexed": 2, "failed": 5,
                                  "unmatched_videos": 0, "unmatched_rows": 0}]


def test_one_id_for_two_different_files_is_refused(tmp_path):
    root = tmp_path / "dfdc"
    for part, seed in (("dfdc_train_part_0", 1), ("dfdc_train_part_1", 2)):
        write_video(root / part / "same.mp4", n=10, seed=seed)
        (root / part / "metadata.json").write_text(json.dumps({"same.mp4": {"label": "REAL",
                                                                            "original": None}}))
    lake = Lake.at(tmp_path / "home")
    with pytest.raises(FvcError, match="video id dfdc-same names two different files"):
        ingest("dfdc", root, lake, workers=1)
    assert not lake.index.exists()


def test_corpora_merge_and_reingest_replaces_only_its_own_rows(messy, tmp_path):
    lake = Lake.at(tmp_path / "home")
    ingest("folder", messy, lake, labels=messy / "labels.csv", workers=1)
    demo = tmp_path / "demo"
    for i in range(3):
        write_video(demo / f"d{i}.mp4", n=10, seed=50 + i)
    (demo / "labels.csv").write_text("d0.mp4,real,a\nd1.mp4,fake,a\nd2.mp4,fake,b\n")
    ingest("folder", demo, lake, labels=demo / "labels.csv", source="demo", workers=1)
    df = pl.read_parquet(lake.index)
    assert df.group_by("source").len().sort("source").rows() == [("demo", 3), ("folder", 2)]
    (demo / "labels.csv").write_text("d0.mp4,real,a\n")
    (demo / "d1.mp4").write_bytes(b"")
    summary = ingest("folder", demo, lake, labels=demo / "labels.csv", source="demo", workers=1)
    df = pl.read_parquet(lake.index)
    assert df.group_by("source").len().sort("source").rows() == [("demo", 1), ("folder", 2)]
    assert len(summary.unmatched_videos) == 2  # d1 (now empty) and d2 are no longer listed
    fails = pl.read_parquet(lake.failures)
    # the other corpus's failures stay
    assert fails.filter(pl.col("path").str.contains("/corpus/")).height == 5


def test_cli_prints_summary(messy, tmp_path, capsys):
    assert main(["--home", str(tmp_path / "home"), "ingest", "folder", str(messy), "--labels",
                 str(messy / "labels.csv"), "--workers", "1"]) == 0
    out = capsys.readouterr()
    assert "folder: 7 videos found, 2 indexed, 5 failed" in out.out
    assert "failed (1): empty file (0 bytes)" in out.out
    assert "ingest: probing 7 videos of folder" in out.err            # the progress display (stderr)
    assert "ingest: done, 7 videos of folder: 2 indexed, 5 failed" in out.err


@pytest.mark.parametrize("args, message", [
    (["ingest", "ffpp", "{tmp}/nope"], "error: {tmp}/nope: not a folder"),
    (["ingest", "folder", "{tmp}"], "error: fvc ingest folder needs --labels CSV"),
    (["ingest", "dfdc", "{tmp}", "--labels", "x.csv"], "error: --labels applies to folder corpora only"),
    (["ingest", "folder", "{tmp}", "--labels", "{tmp}/missing.csv"],
     "error: {tmp}/missing.csv: labels CSV not found"),
    (["ingest", "folder", "{tmp}", "--labels", "{tmp}/bad.csv"],
     "error: {tmp}/bad.csv:3: label 'unknown' is not one of real, fake, 0, 1"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
    (tmp_path / "bad.csv").write_text("path,label\na.mp4,real\nb.mp4,unknown\n")
    code = main(["--home", str(tmp_path / "home"), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == message.format(tmp=tmp_path) or (
        err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1)


def test_cli_rejects_bad_workers(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["ingest", "ffpp", str(tmp_path), "--workers", "0"])
    assert "--workers must be a positive integer" in capsys.readouterr().err


def test_a_copy_with_a_conflicting_label_keeps_neither_and_says_so(tmp_path, capsys):
    """a.mp4 real and its exact copy b.mp4 fake: a conflict, both in failures with both paths and
    labels, neither indexed (so neither is trained on), and the CLI prints it (issue 16, item 3)."""
    root = tmp_path / "corpus"
    write_video(root / "a.mp4", n=10, seed=1)
    shutil.copy(root / "a.mp4", root / "b.mp4")
    write_video(root / "c.mp4", n=10, seed=2)
    shutil.copy(root / "c.mp4", root / "d.mp4")          # a copy with the same label stays a duplicate
    (root / "labels.csv").write_text("a.mp4,real,g1\nb.mp4,fake,g2\nc.mp4,real,g3\nd.mp4,real,g4\n")
    home = tmp_path / "home"
    assert main(["--home", str(home), "ingest", "folder", str(root), "--labels", str(root / "labels.csv"),
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    lake = Lake.at(home)
    assert [Path(p).name for p in pl.read_parquet(lake.index)["path"]] == ["c.mp4"]
    fails = {Path(r["path"]).name: r for r in pl.read_parquet(lake.failures).iter_rows(named=True)}
    assert set(fails) == {"a.mp4", "b.mp4", "d.mp4"}
    assert fails["d.mp4"]["error_type"] == "Duplicate"
    for name in ("a.mp4", "b.mp4"):
        row = fails[name]
        assert row["error_type"] == "LabelConflict"
        for piece in (str(root / "a.mp4"), str(root / "b.mp4"), "real", "fake"):
            assert piece in row["reason"], row["reason"]
    assert "label conflict" in out and str(root / "a.mp4") in out and str(root / "b.mp4") in out


def test_the_cli_names_each_failed_file_and_points_to_the_failures_query(messy, tmp_path, capsys):
    """Not only a reason: which files (the first few and a count), and where to see all (item 11)."""
    for i in range(7):
        (messy / f"empty{i}.mp4").write_bytes(b"")
    with open(messy / "labels.csv", "a") as fh:
        fh.writelines(f"empty{i}.mp4,real,e{i}\n" for i in range(7))
    assert main(["--home", str(tmp_path / "home"), "ingest", "folder", str(messy), "--labels",
                 str(messy / "labels.csv"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = lines.index("  failed (8): empty file (0 bytes)")
    named = [line.strip() for line in lines[at + 1:at + 7]]
    empties = ["empty.mp4", *(f"empty{i}.mp4" for i in range(7))]
    assert named[:5] == sorted(str(messy / n) for n in empties)[:5]
    assert named[5] == "... and 3 more"
    cut = lines.index(next(line for line in lines if line.startswith("  failed (1): truncated or corrupt")))
    assert lines[cut + 1].strip() == str(messy / "cut.mp4")
    assert "fvc sql -q failures" in out
