"""FaceForensics++, Celeb-DF, DFDC and folder adapters on tiny trees in their real layouts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from fvcflow.errors import FvcError
from fvcflow.ingest.celebdf import catalog_celebdf
from fvcflow.ingest.dfdc import catalog_dfdc
from fvcflow.ingest.ffpp import catalog_ffpp
from fvcflow.ingest.folder import catalog_folder, read_labels
from fvcflow.ingest.index import ingest
from fvcflow.store import Lake
from tests.media import write_video

_seed = iter(range(1000, 100000))


def _video(path: Path) -> Path:
    return write_video(path, n=10, width=64, height=48, seed=next(_seed))


def _by_id(lake: Lake) -> dict[str, dict]:
    return {r["video_id"]: r for r in pl.read_parquet(lake.index).iter_rows(named=True)}


# FaceForensics++ ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ffpp(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ffpp")
    for vid in ("000", "003", "010", "020"):
        _video(root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4")
    _video(root / "original_sequences/youtube/c40/videos/000.mp4")
    _video(root / "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4")
    _video(root / "manipulated_sequences/Face2Face/c23/videos/003_010.mp4")  # 000-003-010 chain
    _video(root / "original_sequences/actors/c23/videos/01__talking.mp4")
    _video(root / "original_sequences/actors/c23/videos/02__walking.mp4")
    _video(root / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__talking__ABCD1234.mp4")
    _video(root / "manipulated_sequences/Deepfakes/c23/videos/stray_name.mp4")
    (root / "splits").mkdir()
    (root / "splits/train.json").write_text(json.dumps([["000", "003"], ["003", "010"]]))
    (root / "splits/test.json").write_text(json.dumps([["020", "021"]]))
    return root


def test_ffpp_groups_follow_pairs_transitively(ffpp, tmp_path):
    lake = Lake.at(tmp_path / "home")
    summary = ingest("ffpp", ffpp, lake, workers=1)
    rows = _by_id(lake)
    assert summary.indexed == 10 and summary.unmatched_videos[0].endswith("stray_name.mp4")
    chain = ["ffpp-original-c23-000", "ffpp-original-c23-003", "ffpp-original-c23-010",
             "ffpp-original-c40-000",
             "ffpp-Deepfakes-c23-000_003", "ffpp-Face2Face-c23-003_010"]
    assert {rows[v]["group_id"] for v in chain} == {"ffpp-yt000"}
    assert rows["ffpp-original-c23-020"]["group_id"] == "ffpp-yt020"
    actors = ["ffpp-actors-c23-01__talking", "ffpp-actors-c23-02__walking",
              "ffpp-DeepFakeDetection-c23-01_02__talking__ABCD1234"]
    assert {rows[v]["group_id"] for v in actors} == {"ffpp-actor01"}
    assert [rows[v]["label"] for v in chain] == [0, 0, 0, 0, 1, 1]
    assert rows["ffpp-Deepfakes-c23-000_003"]["split"] == "train"
    assert rows["ffpp-original-c23-020"]["split"] == "test"
    # no official split for the actors: decided at ingest, by group (all of the group on one side)
    assert len({rows[v]["split"] for v in actors}) == 1 and rows[actors[0]]["split"] in ("train", "test")


def test_ffpp_rejects_other_layouts_and_bad_splits(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FvcError, match="not a FaceForensics\\+\\+ root"):
        catalog_ffpp(tmp_path / "x")
    (tmp_path / "y/original_sequences").mkdir(parents=True)
    (tmp_path / "y/splits").mkdir()
    (tmp_path / "y/splits/val.json").write_text("{not json")
    with pytest.raises(FvcError, match="val.json: expected a JSON list of \\[target, source\\] pairs"):
        catalog_ffpp(tmp_path / "y")


# Celeb-DF ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def celebdf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("celebdf")
    for name in ("id0_0000", "id1_0001", "id2_0000", "id7_0003"):
        _video(root / "Celeb-real" / f"{name}.mp4")
    for name in ("id0_id1_0000", "id1_id2_0004"):
        _video(root / "Celeb-synthesis" / f"{name}.mp4")
    _video(root / "YouTube-real" / "00170.mp4")
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id1_id2_0004.mp4\n1 Celeb-real/id7_0003.mp4\n"
        "0 Celeb-synthesis/id9_id8_0000.mp4\n")
    return root


def test_celebdf_groups_celebrities_and_marks_test_split(celebdf, tmp_path):
    lake = Lake.at(tmp_path / "home")
    summary = ingest("celebdf", celebdf, lake, workers=2)
    rows = _by_id(lake)
    assert summary.indexed == 7
    linked = ["celebdf-Celeb-real-id0_0000", "celebdf-Celeb-real-id1_0001", "celebdf-Celeb-real-id2_0000",
              "celebdf-Celeb-synthesis-id0_id1_0000", "celebdf-Celeb-synthesis-id1_id2_0004"]
    assert {rows[v]["group_id"] for v in linked} == {"celebdf-id0"}
    assert rows["celebdf-Celeb-real-id7_0003"]["group_id"] == "celebdf-id7"
    assert rows["celebdf-YouTube-real-00170"]["group_id"] == "celebdf-yt-00170"
    assert {v: r["split"] for v, r in rows.items() if r["split"] == "test"} == {
        "celebdf-YouTube-real-00170": "test", "celebdf-Celeb-synthesis-id1_id2_0004": "test",
        "celebdf-Celeb-real-id7_0003": "test"}
    assert rows["celebdf-Celeb-real-id0_0000"]["split"] == "train"
    assert [rows[v]["label"] for v in linked] == [0, 0, 0, 1, 1]
    assert summary.unmatched_rows == ["List_of_testing_videos.txt: Celeb-synthesis/id9_id8_0000.mp4 (no such "
                                      "video)"]


def test_celebdf_bad_test_list_names_the_line(tmp_path):
    (tmp_path / "Celeb-real").mkdir()
    (tmp_path / "List_of_testing_videos.txt").write_text("1 Celeb-real/a.mp4\nreal Celeb-real/b.mp4\n")
    with pytest.raises(FvcError,
                       match=r"List_of_testing_videos.txt:2: expected '<1\|0> <folder>/<file>.mp4'"):
        catalog_celebdf(tmp_path)


# DFDC --------------------------------------------------------------------------------------
def test_dfdc_fakes_share_their_originals_group(tmp_path):
    root = tmp_path / "dfdc"
    p0, p1 = root / "dfdc_train_part_0", root / "dfdc_train_part_1"
    for path in (p0 / "orig.mp4", p0 / "fakea.mp4", p1 / "fakeb.mp4", p1 / "lone.mp4", p1 / "extra.mp4"):
        _video(path)
    (p0 / "metadata.json").write_text(json.dumps({
        "orig.mp4": {"label": "REAL", "split": "train", "original": None},
        "fakea.mp4": {"label": "FAKE", "split": "train", "original": "orig.mp4"}}))
    (p1 / "metadata.json").write_text(json.dumps({
        "fakeb.mp4": {"label": "FAKE", "split": "train", "original": "orig.mp4"},
        "lone.mp4": {"label": "REAL", "split": "train", "original": None},
        "gone.mp4": {"label": "FAKE", "split": "train", "original": "lone.mp4"}}))
    lake = Lake.at(tmp_path / "home")
    summary = ingest("dfdc", root, lake, workers=1)
    rows = _by_id(lake)
    assert sorted(rows) == ["dfdc-fakea", "dfdc-fakeb", "dfdc-lone", "dfdc-orig"]
    assert rows["dfdc-fakea"]["group_id"] == rows["dfdc-fakeb"]["group_id"] == rows["dfdc-orig"]["group_id"]
    assert rows["dfdc-lone"]["group_id"] != rows["dfdc-orig"]["group_id"]
    assert [rows[v]["label"] for v in ("dfdc-fakea", "dfdc-orig")] == [1, 0]
    assert rows["dfdc-orig"]["split"] == "train"
    assert summary.unmatched_videos == [str(p1 / "extra.mp4")]
    assert summary.unmatched_rows == ["dfdc_train_part_1/metadata.json: gone.mp4 (no such video)"]


def test_dfdc_bad_metadata(tmp_path):
    part = tmp_path / "dfdc_train_part_3"
    part.mkdir()
    (part / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "MAYBE"}}))
    with pytest.raises(FvcError, match="metadata.json: entry 'a.mp4' has no label REAL or FAKE"):
        catalog_dfdc(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FvcError, match="not a DFDC root"):
        catalog_dfdc(tmp_path / "empty")


# folder ------------------------------------------------------------------------------------
def test_folder_labels_groups_and_unlisted(tmp_path):
    root = tmp_path / "corpus"
    for name in ("a.mp4", "sub/b.webm", "c.avi"):
        _video(root / name)
    _video(root / "unlisted.mp4")
    (root / "labels.csv").write_text("path,label,group\na.mp4,REAL,g1\nsub/b.webm,1,g1\nc.avi,fake,\n"
                                     "missing.mp4,real,g2\n")
    lake = Lake.at(tmp_path / "home")
    summary = ingest("folder", root, lake, labels=root / "labels.csv", workers=1)
    rows = {Path(r["path"]).name: r for r in _by_id(lake).values()}
    assert set(rows) == {"a.mp4", "b.webm", "c.avi"}
    assert [rows[n]["label"] for n in ("a.mp4", "b.webm", "c.avi")] == [0, 1, 1]
    assert rows["a.mp4"]["group_id"] == rows["b.webm"]["group_id"] == "g1"
    c = rows["c.avi"]
    assert c["group_id"] == c["video_id"] == "folder-" + c["content_hash"][:16]
    assert rows["b.webm"]["codec"] == "vp9" and rows["c.avi"]["codec"] == "mpeg4"
    assert summary.unmatched_rows == ["labels.csv:5: missing.mp4 (no such file)"]
    assert summary.unmatched_videos == [str(root / "unlisted.mp4")]


@pytest.mark.parametrize("text, message", [
    ("a.mp4,real\nb.mp4,maybe\n", r"labels.csv:2: label 'maybe' is not one of real, fake, 0, 1"),
    ("a.mp4\n", r"labels.csv:1: expected path,label\[,group\[,split\]\], found 1 fields"),
    ("path,label\n/abs/a.mp4,real\n", r"labels.csv:2: path '/abs/a.mp4' must be relative"),
    ("path,label\n../a.mp4,real\n", r"labels.csv:2: path '../a.mp4' must be relative"),
    ("a.mp4,real\na.mp4,fake\n", r"labels.csv:2: a.mp4 is already listed on line 1"),
    ("path,label\n", r"labels.csv: no rows"),
])
def test_folder_bad_labels_csv_names_the_line(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(FvcError, match=message):
        read_labels(tmp_path / "labels.csv")


def test_folder_needs_an_existing_labels_csv(tmp_path):
    with pytest.raises(FvcError, match="needs --labels"):
        catalog_folder(tmp_path, None)
    with pytest.raises(FvcError, match="labels CSV not found"):
        catalog_folder(tmp_path, tmp_path / "nope.csv")
