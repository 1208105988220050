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
from fvcflow.demo.corpus import load_demo_corpus, make_demo_corpus
from fvcflow.demo.scenes import CATALOGUE, render_sources
from fvcflow.demo.swap import (
    SwapStyle,
    SwapStyleB,
    box_alpha,
    color_match,
    detect_faces,
    feather_alpha,
    jpeg_misaligned,
    render_face,
    swap,
    swap_b,
)
from fvcflow.errors import FvcError
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


@pytest.mark.slow  # about 15 s of CPU (80 encodes, 80 decodes); over 25 s on a busy machine
def test_full_corpus_counts(tmp_path):
    corpus = make_demo_corpus(tmp_path / "full")
    probes = check_shape(corpus.root, 80, 20, 3.1)
    assert len(corpus.groups) == 20
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
        assert (a.path, a.quality, a.donor, a.track, a.style) == (b.path, b.quality, b.donor, b.track,
                                                                  b.style)
        np.testing.assert_array_equal(decode(small.root / a.path), decode(again.root / b.path),
                                      err_msg=a.path)
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
        assert np.abs(centre - target[i, y + h // 2 - 5:y + h // 2 + 5,
                                      x + w // 2 - 5:x + w // 2 + 5]).mean() > 5
    alpha = feather_alpha(50, 60)
    assert alpha[30, 25] > 0.99 and alpha[0].max() == 0 and alpha[:, 0].max() == 0
    assert 0.05 < alpha[30, 25 - int(0.44 * 50)] < 0.95  # soft at the ellipse's edge


def test_fake_regions_cover_a_face_sized_share_of_the_frame_and_reals_are_untouched(small):
    for v in small.videos:
        if v.label == "real":
            assert v.track is None and v.style is None and v.donor is None
            continue
        t = np.asarray(v.track, float)
        ellipse = np.pi * 0.44 ** 2 * t[:, 2] * t[:, 3] / (v.width * v.height)  # the mask's ellipse
        assert 0.2 <= ellipse.mean() <= 0.42, (v.path, ellipse.mean())
        assert v.style["gen_size"] in (32, 40, 48) and 30 <= v.style["jpeg_quality"] <= 50
        assert 1 <= v.style["grid_phase"] <= 7  # never on the frame's own 8x8 grid


def high_pass_energy(gray: np.ndarray) -> float:
    """mean(R^2) of the 3x3 high-pass of docs/FEATURES.md, written out with slices."""
    g = gray.astype(np.float64)
    h, w = g.shape
    r = 9 * g[1:-1,
              1:-1] - sum(g[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return float(np.mean(r ** 2))


def test_the_swapped_face_is_rendered_at_low_resolution_and_lacks_the_grain_around_it():
    rng = np.random.default_rng(5)
    grainy = np.clip(128 + rng.normal(0, 12, (2, 120, 160, 3)), 0, 255).astype(np.uint8)
    track = np.tile([30, 20, 100, 80], (2, 1))
    out = swap(grainy, track, grainy[::-1].copy(), track, style=SwapStyle(jpeg_quality=95, jpeg_jitter=0))
    core = (slice(40, 80), slice(60, 110))
    gray = lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)  # noqa: E731
    assert high_pass_energy(gray(out[0][core])) < 0.1 * high_pass_energy(gray(grainy[0][core]))
    face = render_face(grainy[0], (0, 0, 96, 96), (90, 90), 48)
    low = cv2.resize(grainy[0, :96, :96], (22, 22), interpolation=cv2.INTER_AREA)  # capped at 90 // 4
    np.testing.assert_array_equal(face, cv2.resize(low, (90, 90), interpolation=cv2.INTER_LINEAR))


def test_double_compression_leaves_an_8x8_grid_off_the_frames_grid():
    ramp = np.tile(np.linspace(40, 70, 64, dtype=np.float32), (48, 1))  # a gentle ramp: steps show
    patch = np.repeat(ramp[..., None], 3, axis=2).astype(np.uint8)  # smooth, as an upscaled face is
    for x, phase in ((13, 3), (16, 5), (5, 1)):
        out = cv2.cvtColor(jpeg_misaligned(patch, 30, x=x, y=7, phase=phase),
                           cv2.COLOR_RGB2GRAY).astype(float)
        jumps = np.abs(np.diff(out, axis=1)).mean(axis=0)  # jumps[c]: between patch columns c and c + 1
        frame_col = x + np.arange(1, out.shape[1])  # the frame column on the right of each jump
        on_grid = (frame_col % 8) == phase
        assert jumps[on_grid].mean() > 2.5 * jumps[~on_grid].mean(), (x, phase)
        assert (frame_col[on_grid] % 8 != 0).all()  # not the frame's own block edges


def test_the_fake_region_flickers_and_keeps_a_colour_shift():
    rng = np.random.default_rng(1)
    still = np.repeat(cv2.GaussianBlur(rng.integers(60, 200, (1, 90, 120, 3), np.uint8)[0], (0, 0), 3)[None],
                      6, 0)
    track = np.tile([20, 15, 80, 60], (6, 1))
    style = SwapStyle(lab_shift=(0.0, 12.0, 0.0), flicker=0.05)
    out = swap(still, track, still.copy(), track, style=style, rng=np.random.default_rng(0))
    core = out[:, 35:55, 45:75]
    assert np.abs(np.diff(core.astype(float), axis=0)).mean() > 0.5  # a still scene, a changing face
    np.testing.assert_array_equal(out[:, :, :20], still[:, :, :20])
    lab = lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float).mean(0)  # noqa: E731
    shift = np.mean([lab(np.ascontiguousarray(c)) - lab(np.ascontiguousarray(still[0, 35:55, 45:75]))
                     for c in core], axis=0)
    assert 8 < shift[1] < 16 and abs(shift[2]) < 4, shift


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
    ({"n_sources": 1}, "n_sources must be an integer between 2 and 20"),
    ({"n_sources": 21}, "n_sources must be an integer between 2 and 20"),
    ({"n_sources": 3.5}, "n_sources must be an integer between 2 and 20"),
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
    return subprocess.run([sys.executable, "-m", "fvcflow", *args], capture_output=True, text=True,
                          timeout=300)


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
    assert below.stderr.strip().splitlines() == [f"error: {target / 'sub'}: cannot create the demo corpus "
                                                 "folder (Not a directory)"]


def test_cli_builds_then_reuses(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["demo-corpus", str(out), "--small", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "built demo corpus" in printed and "16 videos (8 real, 8 fake), 8 groups, seed 2" in printed
    assert len(read_labels(out)) == 16
    assert main(["demo-corpus", str(out), "--small", "--seed", "2"]) == 0
    assert "reused demo corpus" in capsys.readouterr().out


# ---------------------------------------------------------------- generator b (issue 22's protocol)
def test_generator_b_blends_a_histogram_matched_box_with_a_wide_linear_feather():
    rng = np.random.default_rng(4)
    target = np.full((2, 90, 120, 3), 90, np.uint8) + rng.integers(0, 30, (2, 90, 120, 3), np.uint8)
    donor = rng.integers(0, 255, (2, 60, 80, 3), np.uint8)
    track = np.array([[30, 20, 50, 60], [33, 22, 50, 60]])
    style = SwapStyleB(gen_size=24, power=4.0, feather=0.3)
    out = swap_b(target, track, donor, np.tile([10, 10, 40, 40], (2, 1)), style=style)
    for i, (x, y, w, h) in enumerate(track):
        outside = np.ones((90, 120), bool)
        outside[y:y + h, x:x + w] = False
        np.testing.assert_array_equal(out[i][outside], target[i][outside])
        core = out[i, y + 20:y + 40, x + 15:x + 35].astype(float)
        region = target[i, y:y + h, x:x + w].astype(float)
        assert np.abs(core - target[i, y + 20:y + 40, x + 15:x + 35]).mean() > 5       # donor content
        # histogram matching: the core's per-channel range is the region's, not the donor's 0..255
        assert core.min() >= region.min() - 2 and core.max() <= region.max() + 2
    a, b = box_alpha(50, 60, power=4.0, feather=0.3), feather_alpha(50, 60)
    assert a[30, 25] == 1.0 and a[0].max() == 0 and a[:, 0].max() == 0
    row = a[30, :25]
    assert (np.diff(row) >= 0).all()
    assert ((a > 0) & (a < 1)).sum() > 2 * ((b > 0) & (b < 0.99)).sum()     # a wider ramp than a's


def test_generator_b_corpus_keeps_the_reals_and_changes_only_the_fakes(tmp_path):
    a = make_demo_corpus(tmp_path / "a", small=True, n_sources=2)
    b = make_demo_corpus(tmp_path / "b", small=True, n_sources=2, generator="b")
    assert b.generator == "b" and load_demo_corpus(tmp_path / "b").generator == "b"
    assert [(v.path, v.label, v.group) for v in a.videos] == [(v.path, v.label, v.group) for v in b.videos]
    for va, vb in zip(a.videos, b.videos):
        same = np.array_equal(decode(a.root / va.path), decode(b.root / vb.path))
        assert same == (va.label == "real"), va.path
        if vb.label == "fake":
            assert vb.style["generator"] == "b" and va.style["generator"] == "a" and vb.track == va.track
    assert "fake generator b" in (tmp_path / "b" / "README.md").read_text()
    assert make_demo_corpus(tmp_path / "b", small=True, n_sources=2, generator="b").reused
    with pytest.raises(FvcError, match="generator must be one of a, b"):
        make_demo_corpus(tmp_path / "c", small=True, generator="c")
