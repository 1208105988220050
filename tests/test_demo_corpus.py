"""The built-in demo corpus: its shape (probed from the files), determinism, the fake regions,
reuse, and what a user sees on bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fvcflow.cli import main
from fvcflow.errors import FvcError
from fvcflow.ingest.demo import load_demo_corpus, make_demo_corpus
from fvcflow.ingest.demo_scenes import CATALOGUE, render_sources
from fvcflow.ingest.demo_swap import color_match, detect_faces, feather_alpha, swap
from fvcflow.ingest.folder import catalog_folder

SUFFIX_CODEC = {".mp4": "h264", ".webm": "vp9", ".avi": "mpeg4"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_demo_corpus(tmp_path_factory.mktemp("demo") / "small", small=True)


def probe(path: Path) -> dict:
    """Codec, size, fps and decoded frame count, read with PyAV (independently of fvcflow.video)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return {"codec": s.codec_context.name, "width": s.width, "height": s.height,
                "fps": float(s.average_rate), "n": n}


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def read_labels(root: Path) -> list[dict]:
    with open(root / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def check_shape(root: Path, n_videos: int, min_groups: int, max_seconds: float) -> list[dict]:
    rows = read_labels(root)
    assert len(rows) == n_videos
    assert set(rows[0]) == {"path", "label", "group"}
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in SUFFIX_CODEC)
    assert on_disk == sorted(r["path"] for r in rows)
    labels = [r["label"] for r in rows]
    assert labels.count("real") == labels.count("fake") == n_videos // 2
    groups = {r["group"] for r in rows}
    assert len(groups) >= min_groups
    for g in groups:  # the real and fake videos of a source share its group
        assert {r["label"] for r in rows if r["group"] == g} == {"real", "fake"}
    probes = []
    for r in rows:
        info = probe(root / r["path"])
        assert info["codec"] == SUFFIX_CODEC[Path(r["path"]).suffix], r["path"]
        assert 96 <= info["width"] <= 320 and 72 <= info["height"] <= 240, (r["path"], info)
        assert 12 <= info["fps"] <= 25, (r["path"], info)
        assert 0.9 <= info["n"] / info["fps"] <= max_seconds, (r["path"], info)
        probes.append({**r, **info})
    for label in ("real", "fake"):  # every codec in both classes
        assert {p["codec"] for p in probes if p["label"] == label} == {"h264", "vp9", "mpeg4"}
    assert any(p["width"] % 2 or p["height"] % 2 for p in probes), "no odd frame size"
    return probes


def test_small_corpus_shape(small):
    probes = check_shape(small.root, 16, 8, 1.1)
    assert small.reused is False
    assert [v.path for v in small.videos] == [p["path"] for p in probes]
    readme = (small.root / "README.md").read_text()
    assert "seed 0" in readme and "haarcascade_frontalface_default.xml" in readme
    assert "carphone_pristine.mp4" in readme


@pytest.mark.slow  # about 10 s of CPU (64 encodes, 64 decodes); over 20 s on a busy machine
def test_full_corpus_counts(tmp_path):
    corpus = make_demo_corpus(tmp_path / "full")
    probes = check_shape(corpus.root, 64, 16, 3.1)
    assert len(corpus.groups) == 16
    sizes = {(p["width"], p["height"]) for p in probes}
    assert len(sizes) >= 10
    footage = {v.source for v in corpus.videos if v.source.split("-")[0] in ("carphone", "bikes", "bunny")}
    assert len(footage) == 8


def test_the_folder_adapter_reads_the_corpus(small):
    cat = catalog_folder(small.root, small.labels_csv, source="demo")
    assert not cat.unmatched_rows and not cat.unmatched_videos
    got = sorted((c.path.relative_to(small.root).as_posix(), c.label_raw, c.group_id) for c in cat.candidates)
    assert got == sorted((v.path, v.label, v.group) for v in small.videos)


def test_same_seed_same_corpus_other_seed_other_frames(small, tmp_path):
    again = make_demo_corpus(tmp_path / "again", small=True)
    assert (again.root / "labels.csv").read_bytes() == (small.root / "labels.csv").read_bytes()
    assert (again.root / "README.md").read_bytes() == (small.root / "README.md").read_bytes()
    for a, b in zip(small.videos, again.videos):
        assert (a.path, a.quality, a.donor, a.track) == (b.path, b.quality, b.donor, b.track)
        np.testing.assert_array_equal(decode(small.root / a.path), decode(again.root / b.path), err_msg=a.path)
        if not a.path.endswith(".webm"):  # the WebM muxer writes random track UIDs
            assert (small.root / a.path).read_bytes() == (again.root / b.path).read_bytes(), a.path
    other = make_demo_corpus(tmp_path / "other", seed=1, small=True)
    pan = next(v.path for v in other.videos if v.source == "pan" and v.label == "real")
    assert not np.array_equal(decode(small.root / pan), decode(other.root / pan))


def test_fakes_differ_from_their_real_inside_the_region_only(small):
    pairs = [v for v in small.videos if v.label == "fake" and v.counterpart]
    assert len(pairs) >= 3
    for fake in pairs:
        f = decode(small.root / fake.path).astype(np.float64)
        r = decode(small.root / fake.counterpart).astype(np.float64)
        assert f.shape == r.shape and len(fake.track) == len(f)
        inside, outside = [], []
        for i, (x, y, w, h) in enumerate(fake.track):
            diff = np.abs(f[i] - r[i]).mean(axis=-1)
            core = diff[y + h // 4:y + 3 * h // 4, x + w // 4:x + 3 * w // 4]
            away = np.ones(diff.shape, bool)
            away[max(0, y - 8):y + h + 8, max(0, x - 8):x + w + 8] = False  # codec blocks bleed a little
            inside.append(core.mean())
            outside.append(diff[away].mean())
        # inside: other content; outside: only the two encodings' different losses
        assert np.mean(inside) > 12 and np.mean(inside) > 4 * np.mean(outside), (fake.path, inside, outside)
        assert np.mean(outside) < 10, (fake.path, outside)


def test_swap_changes_only_the_boxes_and_blends_softly():
    rng = np.random.default_rng(3)
    target = np.full((3, 90, 120, 3), 100, np.uint8) + rng.integers(0, 20, (3, 90, 120, 3), np.uint8)
    donor = rng.integers(0, 255, (2, 60, 80, 3), np.uint8)
    track = np.array([[30, 20, 50, 60], [32, 21, 50, 60], [34, 22, 48, 58]])
    out = swap(target, track, donor, np.tile([10, 10, 40, 40], (2, 1)))
    for i, (x, y, w, h) in enumerate(track):
        outside = np.ones((90, 120), bool)
        outside[y:y + h, x:x + w] = False
        np.testing.assert_array_equal(out[i][outside], target[i][outside])
        centre = out[i, y + h // 2 - 5:y + h // 2 + 5, x + w // 2 - 5:x + w // 2 + 5].astype(int)
        assert np.abs(centre - target[i, y + h // 2 - 5:y + h // 2 + 5, x + w // 2 - 5:x + w // 2 + 5]).mean() > 5
    alpha = feather_alpha(50, 60)
    assert alpha[30, 25] > 0.99 and alpha[0].max() == 0 and alpha[:, 0].max() == 0
    assert 0.05 < alpha[30, 25 - int(0.35 * 50)] < 0.95  # soft at the ellipse's edge


def test_color_match_gives_the_reference_lab_statistics():
    rng = np.random.default_rng(0)
    patch = cv2.GaussianBlur(rng.integers(0, 120, (40, 40, 3), np.uint8), (0, 0), 1)
    ref = cv2.GaussianBlur(rng.integers(90, 250, (40, 40, 3), np.uint8), (0, 0), 2)
    out = color_match(patch, ref, np.ones((40, 40), np.float32))
    lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)
    lab_ref = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)
    np.testing.assert_allclose(lab_out.mean(0), lab_ref.mean(0), atol=2.0)
    np.testing.assert_allclose(lab_out.std(0), lab_ref.std(0), atol=1.5)


def test_haar_finds_the_carphone_face_and_no_face_in_a_texture():
    carphone, plasma = (next(s for s in CATALOGUE if s.name == n) for n in ("carphone-a", "plasma"))
    clips = render_sources([carphone, plasma], seed=0, small=True)
    track = detect_faces(clips["carphone-a"])
    assert track is not None and detect_faces(clips["plasma"]) is None
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    hits = cascade.detectMultiScale(cv2.cvtColor(clips["carphone-a"][0], cv2.COLOR_RGB2GRAY), 1.1, 4)
    x, y, w, h = max(hits, key=lambda b: b[2] * b[3])
    tx, ty, tw, th = track[0]
    overlap = max(0, min(x + w, tx + tw) - max(x, tx)) * max(0, min(y + h, ty + th) - max(y, ty))
    assert overlap > 0.6 * w * h


def test_rerun_reuses_and_other_seed_rebuilds(tmp_path):
    first = make_demo_corpus(tmp_path / "d", small=True, n_sources=3)
    stamp = {v.path: (first.root / v.path).stat().st_mtime_ns for v in first.videos}
    second = make_demo_corpus(tmp_path / "d", small=True, n_sources=3)
    assert second.reused and second.videos == first.videos
    assert stamp == {v.path: (first.root / v.path).stat().st_mtime_ns for v in first.videos}
    (first.root / first.videos[0].path).write_bytes(b"broken")  # a damaged corpus is rebuilt
    third = make_demo_corpus(tmp_path / "d", small=True, n_sources=3)
    assert not third.reused and third.videos == first.videos
    fourth = make_demo_corpus(tmp_path / "d", seed=7, small=True, n_sources=3)
    assert not fourth.reused and load_demo_corpus(tmp_path / "d").seed == 7
    assert len(read_labels(tmp_path / "d")) == 6


def test_an_interrupted_build_is_redone(tmp_path):
    def interrupt(line):
        if "videos" in line:  # after the first source's videos are written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_demo_corpus(tmp_path / "d", small=True, n_sources=2, log=interrupt)
    assert any((tmp_path / "d" / "videos").rglob("*.*")) and not (tmp_path / "d" / "labels.csv").exists()
    assert load_demo_corpus(tmp_path / "d") is None
    corpus = make_demo_corpus(tmp_path / "d", small=True, n_sources=2)
    assert not corpus.reused and len(read_labels(tmp_path / "d")) == 4
    assert not (tmp_path / "d" / ".building").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_sources": 1}, "n_sources must be an integer between 2 and 16"),
    ({"n_sources": 17}, "n_sources must be an integer between 2 and 16"),
    ({"n_sources": 3.5}, "n_sources must be an integer between 2 and 16"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(FvcError, match=message):
        make_demo_corpus(tmp_path / "x", small=True, **kwargs)


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FvcError, match="not empty and holds no demo corpus"):
        make_demo_corpus(tmp_path, small=True)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def fvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fvcflow", *args], capture_output=True, text=True, timeout=300)


def test_cli_on_a_file_gives_one_line_error(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    done = fvc("demo-corpus", str(target))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {target}: not a folder; the demo corpus needs a "
                                                "folder to write into"]
    assert "Traceback" not in done.stderr
    below = fvc("demo-corpus", str(target / "sub"))
    assert below.returncode == 2 and "Traceback" not in below.stderr
    assert below.stderr.strip().splitlines() == [f"error: {target / 'sub'}: cannot create the demo corpus folder "
                                                 "(Not a directory)"]


def test_cli_builds_then_reuses(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["demo-corpus", str(out), "--small", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "built demo corpus" in printed and "16 videos (8 real, 8 fake), 8 groups, seed 2" in printed
    assert len(read_labels(out)) == 16
    assert main(["demo-corpus", str(out), "--small", "--seed", "2"]) == 0
    assert "reused demo corpus" in capsys.readouterr().out
