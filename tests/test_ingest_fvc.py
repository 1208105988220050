"""The FVC adapter: URL ids, the three CSVs' quirks, and ingest from the archives end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from fvcflow.errors import ArchiveError, FvcError
from fvcflow.ingest.fvc import catalog_fvc
from fvcflow.ingest.fvc_meta import parse_video_url, read_fvc_csv
from fvcflow.ingest.index import INDEX_SCHEMA, ingest
from fvcflow.store import Lake
from tests.fvc_archive import PASSWORD, build_mini_fvc


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return build_mini_fvc(tmp_path_factory.mktemp("fvc"))


@pytest.mark.parametrize("url, expected", [
    ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", ("youtube", "dQw4w9WgXcQ")),
    ("https://m.youtube.com/watch?feature=share&v=a-b_c1234XY", ("youtube", "a-b_c1234XY")),
    ("https://youtu.be/dQw4w9WgXcQ?t=10", ("youtube", "dQw4w9WgXcQ")),
    ("https://www.youtube.com/shorts/Ab3_Zz9-xQ1", ("youtube", "Ab3_Zz9-xQ1")),
    ("https://www.youtube.com/embed/dQw4w9WgXcQ", ("youtube", "dQw4w9WgXcQ")),
    ("youtube.com/watch?v=dQw4w9WgXcQ", ("youtube", "dQw4w9WgXcQ")),
    ("https://www.facebook.com/watch/?v=10155800486246049", ("facebook", "10155800486246049")),
    ("https://www.facebook.com/video.php?v=10153231379946729", ("facebook", "10153231379946729")),
    ("https://www.facebook.com/CNN/videos/10155800486246049/", ("facebook", "10155800486246049")),
    ("https://www.facebook.com/Page.Name/videos/some-slug-here/1784569201829183/",
     ("facebook", "1784569201829183")),
    ("https://www.facebook.com/page/videos/vb.123456789/10154958473526240/?type=2",
     ("facebook", "10154958473526240")),
    ("https://twitter.com/user/status/845262839453794304", ("twitter", "845262839453794304")),
    ("https://mobile.twitter.com/user/statuses/845262839453794304/video/1",
     ("twitter", "845262839453794304")),
    ("https://x.com/user/status/1200000000000000002", ("twitter", "1200000000000000002")),
    ("https://www.youtube.com/watch?v=short", ("youtube", None)),
    ("https://vimeo.com/12345678", (None, None)),
])
def test_parse_video_url(url, expected):
    assert parse_video_url(url) == expected


def test_csvs_keep_their_quirks(mini, tmp_path):
    meta = tmp_path / "m"
    subprocess.run(["unzip", "-q", "-P", PASSWORD, str(mini.archives / "Metadata.zip"), "-d", str(meta)],
                   check=True)
    assert b"\r\n" in (meta / "Metadata" / "FVC_dup.csv").read_bytes()
    assert b"\r\n" not in (meta / "Metadata" / "FVC.csv").read_bytes()
    rows, bad = read_fvc_csv(meta / "Metadata" / "FVC_text_queries.csv")
    assert bad == []
    assert [(r.cascade_id, r.label_raw, r.video_id) for r in rows] == [
        ("f1", "fake", "dQw4w9WgXcQ"), ("r1", "real", "1234567890123"), ("r3", "real", "1200000000000000002")]
    dup, _ = read_fvc_csv(meta / "Metadata" / "FVC_dup.csv")
    assert {r.label_raw for r in dup} == {"fake", "uncertain", "debunked", "parody"}
    assert all(not r.url.endswith("\r") for r in dup)


def test_csv_bad_header_and_bad_rows(tmp_path):
    bad = tmp_path / "FVC.csv"
    bad.write_text("id,url,label\nf1,https://youtu.be/dQw4w9WgXcQ,fake\n")
    with pytest.raises(FvcError,
                       match=r"FVC.csv: expected a header starting with cascade_id,video_url,label"):
        read_fvc_csv(bad)
    bad.write_text("cascade_id,video_url,label\nnot-a-cascade,https://youtu.be/dQw4w9WgXcQ,fake\n"
                   "f2,https://example.com/v,real\n")
    rows, problems = read_fvc_csv(bad)
    assert problems[0].startswith("FVC.csv:2: not cascade_id,video_url,label")
    assert problems[1] == "FVC.csv:3: no video id in URL 'https://example.com/v'"


def _index(lake: Lake) -> pl.DataFrame:
    return pl.read_parquet(lake.index)


def test_ingest_archives_end_to_end(mini, tmp_path):
    lake = Lake.at(tmp_path / "home")
    lines: list[str] = []
    summary = ingest("fvc", mini.archives, lake, password=PASSWORD.encode(), workers=2, progress=lines.append)
    df = _index(lake)
    assert dict(df.schema) == INDEX_SCHEMA
    assert sorted(df["video_id"]) == sorted(mini.expected)
    for row in df.iter_rows(named=True):
        want = mini.expected[row["video_id"]]
        assert {k: row[k] for k in want} == want
        assert row["source"] == "fvc" and row["variant"] == "original"
        assert Path(row["path"]).is_file() and Path(row["path"]).is_relative_to(lake.raw / "fvc")
        assert (row["width"], row["height"], row["n_frames"]) == (64, 48, 10)
        assert row["codec"] in ("h264", "vp9") and len(row["content_hash"]) == 32
    assert (summary.found, summary.indexed, summary.n_failed) == (8, 7, 0)
    assert [Path(v).parent.name for v in summary.unmatched_videos] == [mini.unmatched_video]
    assert sorted(u.split(": ",
                          1)[1].split(" (")[0] for u in summary.unmatched_rows) == sorted(mini.unmatched_urls)
    failures = pl.read_parquet(lake.failures)
    assert failures["error_type"].to_list() == ["Unmatched"] and mini.unmatched_video in failures["path"][0]
    text = summary.format()
    assert "8 videos found, 7 indexed, 0 failed" in text and "metadata rows with no video: 3" in text
    assert any("extracting FVC1.zip" in line for line in lines)
    listed = Path(summary.unmatched_path).read_text().splitlines()
    assert listed == ([f"video\t{v}" for v in summary.unmatched_videos]
                      + [f"row\t{r}" for r in summary.unmatched_rows])
    assert "... and 1 more (all in" in summary.format(limit=2)


def test_reingest_skips_extraction_and_replaces_rows(mini, tmp_path):
    lake = Lake.at(tmp_path / "home")
    ingest("fvc", mini.archives, lake, password=PASSWORD.encode(), workers=1)
    first = _index(lake)
    mtimes = {p: p.stat().st_mtime_ns for p in (lake.raw / "fvc").rglob("video.*")}
    lines: list[str] = []
    ingest("fvc", mini.archives, lake, password=PASSWORD.encode(), workers=1, progress=lines.append)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert "  FVC1.zip: 0 extracted, 3 already there" in lines
    assert _index(lake).equals(first)


def test_extracted_tree_is_ingested_without_password(mini, tmp_path):
    tree = tmp_path / "tree"
    for name in ("FVC1", "FVC2", "FVC3", "Metadata"):
        subprocess.run(["unzip", "-q", "-P", PASSWORD, str(mini.archives / f"{name}.zip"), "-d", str(tree)],
                       check=True)
    cat = catalog_fvc(tree)
    assert sorted(c.video_id for c in cat.candidates) == sorted(mini.expected)
    lake = Lake.at(tmp_path / "home")
    summary = ingest("fvc", tree, lake, workers=1)
    assert summary.indexed == 7 and not lake.raw.exists()


def test_loose_csvs_next_to_the_archives(mini, tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    for name in ("FVC1", "FVC2", "FVC3"):
        shutil.copy(mini.archives / f"{name}.zip", folder)
    subprocess.run(["unzip", "-q", "-j", "-P", PASSWORD, str(mini.archives / "Metadata.zip"), "-d",
                    str(folder)],
                   check=True)
    summary = ingest("fvc", folder, Lake.at(tmp_path / "home"), password=PASSWORD.encode(), workers=1)
    assert (summary.indexed, len(summary.unmatched_rows)) == (7, 3)


def test_wrong_password_extracts_nothing(mini, tmp_path):
    lake = Lake.at(tmp_path / "home")
    with pytest.raises(ArchiveError, match="wrong password"):
        ingest("fvc", mini.archives, lake, password=b"wrong-one")
    assert not lake.raw.exists() and not lake.index.exists()


def test_missing_folder_and_missing_csv(tmp_path):
    with pytest.raises(FvcError, match="not a folder"):
        ingest("fvc", tmp_path / "nope", Lake.at(tmp_path / "home"))
    (tmp_path / "tree" / "FVC2" / "abc").mkdir(parents=True)
    with pytest.raises(FvcError, match="no FVC.csv found"):
        catalog_fvc(tmp_path / "tree")


def _cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fvcflow", *args], env=env, cwd=cwd, capture_output=True,
                          timeout=300)


def test_cli_never_reveals_the_password(mini, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "FVC_ZIP_PASSWORD": PASSWORD}
    done = _cli(["--home", str(home), "ingest", "fvc", str(mini.archives), "--workers", "2"], env, tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert b"7 indexed" in done.stdout
    secret = PASSWORD.encode()
    assert secret not in done.stdout and secret not in done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written) and any(p.name.endswith(".jsonl") for p in written)
    assert [p for p in written if secret in p.read_bytes()] == []
    wrong = _cli(["--home", str(tmp_path / "home2"), "ingest", "fvc", str(mini.archives)],
                 {**env, "FVC_ZIP_PASSWORD": "nope-" + PASSWORD}, tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.decode().startswith("error: ")
    assert b"wrong password" in wrong.stderr and b"Traceback" not in wrong.stderr
    assert secret not in wrong.stderr and secret not in wrong.stdout
