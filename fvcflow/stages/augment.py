"""Stage 1: augmented copies of a video (the notebook's design), chunk by chunk.

Each copy applies a random subset of the spatial operations (rotation, horizontal flip,
brightness/contrast/saturation, Gaussian noise, Gaussian blur, affine, elastic deformation,
cutout) and at most one temporal operation (frame dropping, frame duplication, reversal).
The parameters are drawn once per (video, copy) from a seed derived from the video id
(:func:`draw_params`), so a rerun gives the same copies and every chunk gets the same transform.

Memory is constant in video length: frames are decoded ``chunk`` at a time (at most
``max_chunk_mb`` of RGB per chunk), transformed and encoded before the next chunk is read.
Reversal uses two passes: the first writes each transformed chunk to a lossless temporary
segment (``libx264rgb``, ``qp=0``, RGB, so nothing is lost and the result does not depend on
the chunk size), the second reads the segments back last to first and writes each one's frames
in reverse order; peak memory stays at about one chunk. The temporary segments take disk space
(a lossless copy of the video) next to ``dst`` and are removed afterwards.

Output frames keep the source size, except that H.264 in ``yuv420p`` needs even sizes: a
source with an odd width or height loses its last column or row (cropped before the transforms).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from fvcflow import video
from fvcflow.video.limits import chunk_frames
from fvcflow.video.write import STAGE_PRESET

SPATIAL_OPS = ("rotate", "hflip", "color", "noise", "blur", "affine", "elastic", "cutout")
TEMPORAL_OPS = ("drop", "duplicate", "reverse")
P_SPATIAL = 0.35  # probability of each spatial op (at least one is always applied)
P_TEMPORAL = 0.5  # probability of one temporal op
RANGES = {  # uniform ranges of the drawn parameters
    "rotation": (-10.0, 10.0),  # degrees, counter-clockwise
    "brightness": (-25.0, 25.0),  # added levels
    "contrast": (0.8, 1.2),  # factor around mid-grey 128
    "saturation": (0.7, 1.3),  # factor around the BT.601 luma
    "noise_sigma": (2.0, 10.0),  # levels
    "blur_sigma": (0.5, 1.5),  # pixels
    "translate": (-0.05, 0.05),  # fraction of width / height
    "scale": (0.9, 1.1),
    "shear": (-8.0, 8.0),  # degrees
    "elastic": (0.005, 0.02),  # displacement amplitude, fraction of the short side
    "cutout_size": (0.1, 0.25),  # fraction of height / width
    "drop": (0.05, 0.25),  # fraction of frames dropped
    "duplicate": (0.05, 0.25),  # fraction of frames shown twice
}
ELASTIC_GRID = 4  # cells of the coarse random displacement grid, smoothly interpolated
LUMA = np.array([0.299, 0.587, 0.114])
LOSSLESS = {"codec": "libx264rgb", "pix_fmt": "rgb24",
            "options": {"qp": "0", "preset": "ultrafast"}}  # reversal
_BORDER = cv2.BORDER_REFLECT_101


@dataclass(frozen=True)
class AugmentParams:
    """The transform of one augmented copy; ``None`` / ``False`` means the op is not applied.

    Parameters
    ----------
    video_id, copy : the source video and the copy number.
    seed : the copy seed (drives the per-frame noise, the elastic field and the frame maps).
    rotation : degrees, counter-clockwise. hflip : mirror left-right.
    color : (brightness levels added, contrast factor, saturation factor).
    noise_sigma, blur_sigma : Gaussian noise (levels) and blur (pixels).
    affine : (translate x, translate y as fractions of width/height, scale, shear degrees).
    elastic : displacement amplitude as a fraction of the short side.
    cutout : (top, left, height, width) as fractions of the frame; filled with black.
    temporal : ``"drop"``, ``"duplicate"``, ``"reverse"`` or None; temporal_rate : fraction of
        frames dropped or duplicated.

    Examples
    --------
    >>> p = AugmentParams("v1", 1, seed=7, hflip=True, temporal="reverse")
    >>> AugmentParams.from_json(p.to_json()) == p
    True
    """

    video_id: str
    copy: int
    seed: int
    rotation: float | None = None
    hflip: bool = False
    color: tuple[float, float, float] | None = None
    noise_sigma: float | None = None
    blur_sigma: float | None = None
    affine: tuple[float, float, float, float] | None = None
    elastic: float | None = None
    cutout: tuple[float, float, float, float] | None = None
    temporal: str | None = None
    temporal_rate: float | None = None

    def __post_init__(self):
        if self.temporal not in (None, *TEMPORAL_OPS):
            raise ValueError(f"temporal must be one of {TEMPORAL_OPS} or None, got {self.temporal!r}")
        rate = self.temporal_rate
        if self.temporal in ("drop", "duplicate") and not (rate is not None and 0.0 <= rate < 1.0):
            raise ValueError(f"temporal_rate must be in [0, 1) for {self.temporal!r}, got {rate!r}")
        for name, size in (("color", 3), ("affine", 4), ("cutout", 4)):
            value = getattr(self, name)
            if value is not None and len(value) != size:
                raise ValueError(f"{name} must have {size} values, got {value!r}")

    @property
    def ops(self) -> tuple[str, ...]:
        """Names of the ops this copy applies, spatial first, in the order they run."""
        on = {"rotate": self.rotation is not None, "hflip": self.hflip, "color": self.color is not None,
              "noise": self.noise_sigma is not None, "blur": self.blur_sigma is not None,
              "affine": self.affine is not None, "elastic": self.elastic is not None,
              "cutout": self.cutout is not None}
        return tuple(op for op in SPATIAL_OPS if on[op]) + ((self.temporal,) if self.temporal else ())

    def to_json(self) -> str:
        """The parameters as a JSON object (sorted keys)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AugmentParams:
        """Parameters back from :meth:`to_json`."""
        d = json.loads(text)
        for name in ("color", "affine", "cutout"):
            if d.get(name) is not None:
                d[name] = tuple(d[name])
        return cls(**d)


def copy_seed(video_id: str, copy: int, seed: int = 0) -> int:
    """Stable 63-bit seed of one copy: blake2b of ``f"{seed}:{video_id}:{copy}"``.

    Examples
    --------
    >>> copy_seed("v1", 1) == copy_seed("v1", 1) != copy_seed("v1", 2)
    True
    """
    digest = hashlib.blake2b(f"{seed}:{video_id}:{copy}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def draw_params(video_id: str, copy: int, *, seed: int = 0) -> AugmentParams:
    """Draw the transform of copy ``copy`` of ``video_id``, the same on every call.

    Each spatial op is chosen with probability ``P_SPATIAL`` (at least one), one temporal op
    with probability ``P_TEMPORAL``; values are uniform within ``RANGES``.

    Examples
    --------
    >>> p = draw_params("v1", 3)
    >>> p == draw_params("v1", 3) and len(p.ops) >= 1 and abs(p.rotation or 0) <= 10
    True
    """
    s = copy_seed(video_id, copy, seed)
    rng = np.random.default_rng(s)
    chosen = rng.random(len(SPATIAL_OPS)) < P_SPATIAL
    if not chosen.any():
        chosen[rng.integers(len(SPATIAL_OPS))] = True
    on = dict(zip(SPATIAL_OPS, chosen.tolist()))
    # every value is drawn whether used or not, so one op's choice never shifts another's value
    u = {k: float(rng.uniform(*r)) for k, r in RANGES.items()}
    size = [float(rng.uniform(*RANGES["cutout_size"])) for _ in range(2)]
    corner = [float(rng.uniform(0.0, 1.0 - f)) for f in size]
    temporal = TEMPORAL_OPS[int(rng.integers(3))] if rng.random() < P_TEMPORAL else None
    return AugmentParams(
        video_id=video_id, copy=copy, seed=s,
        rotation=u["rotation"] if on["rotate"] else None,
        hflip=on["hflip"],
        color=(u["brightness"], u["contrast"], u["saturation"]) if on["color"] else None,
        noise_sigma=u["noise_sigma"] if on["noise"] else None,
        blur_sigma=u["blur_sigma"] if on["blur"] else None,
        affine=(u["translate"], float(rng.uniform(*RANGES["translate"])), u["scale"], u["shear"])
        if on["affine"] else None,
        elastic=u["elastic"] if on["elastic"] else None,
        cutout=(corner[0], corner[1], size[0], size[1]) if on["cutout"] else None,
        temporal=temporal,
        temporal_rate=u.get(temporal) if temporal in ("drop", "duplicate") else None,
    )


# ---- per-frame transforms ------------------------------------------------------------------
def geometry_matrix(params: AugmentParams, height: int, width: int) -> np.ndarray:
    """Forward 3x3 matrix of flip, shear, scale, rotation and translation (source -> output).

    Rotation, scale and shear are about the frame centre ``((width-1)/2, (height-1)/2)``.

    Examples
    --------
    >>> p = AugmentParams("v", 0, 0, rotation=0.0)
    >>> bool(np.allclose(geometry_matrix(p, 4, 6), np.eye(3)))
    True
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    m = np.eye(3)
    if params.hflip:
        m = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    lin = np.eye(3)
    shift = np.zeros(2)
    if params.affine is not None:
        tx, ty, scale, shear = params.affine
        lin = np.array([[scale, scale * math.tan(math.radians(shear)), 0], [0, scale, 0], [0, 0, 1]])
        shift = np.array([tx * width, ty * height])
    if params.rotation is not None:
        a = math.radians(params.rotation)
        c, s = math.cos(a), math.sin(a)
        lin = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]) @ lin
    to_centre = np.array([[1.0, 0, -cx], [0, 1.0, -cy], [0, 0, 1.0]])
    back = np.array([[1.0, 0, cx + shift[0]], [0, 1.0, cy + shift[1]], [0, 0, 1.0]])
    return back @ lin @ to_centre @ m


def elastic_field(seed: int, amplitude: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth displacement field (dx, dy), float32[H, W], the same for every frame of a copy.

    A coarse ``ELASTIC_GRID`` grid of uniform(-1, 1) displacements from ``seed``, interpolated
    bicubically to the frame and scaled by ``amplitude * min(height, width)`` pixels.

    Examples
    --------
    >>> dx, dy = elastic_field(1, 0.02, 48, 64)
    >>> dx.shape, bool(np.abs(dx).max() <= 0.02 * 48 * 1.3)
    ((48, 64), True)
    """
    coarse = np.random.default_rng([seed, 1]).uniform(-1.0, 1.0, (2, ELASTIC_GRID + 1, ELASTIC_GRID + 1))
    amp = amplitude * min(height, width)
    return tuple(cv2.resize(c.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC) * amp
                 for c in coarse)


def geometry_maps(params: AugmentParams, height: int, width: int):
    """Fixed-point ``cv2.remap`` maps of all geometric ops at once, or None when there are none.

    Examples
    --------
    >>> geometry_maps(AugmentParams("v", 0, 0, blur_sigma=1.0), 8, 8) is None
    True
    """
    if not (params.hflip or params.rotation is not None or params.affine is not None
            or params.elastic is not None):
        return None
    inv = np.linalg.inv(geometry_matrix(params, height, width))
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    if params.elastic is not None:
        dx, dy = elastic_field(params.seed, params.elastic, height, width)
        xs, ys = xs + dx, ys + dy
    map_x = (inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]).astype(np.float32)
    map_y = (inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]).astype(np.float32)
    return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)


def color_matrix(brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """3x4 ``cv2.transform`` matrix: saturation about luma, contrast about 128, then brightness.

    Examples
    --------
    >>> frame = np.full((2, 2, 3), 100, np.uint8)
    >>> int(cv2.transform(frame, color_matrix(10.0, 1.0, 1.0))[0, 0, 0])
    110
    """
    sat = saturation * np.eye(3) + (1.0 - saturation) * np.outer(np.ones(3), LUMA)
    offset = 128.0 * (1.0 - contrast) + brightness
    return np.hstack([contrast * sat, np.full((3, 1), offset)]).astype(np.float32)


def frame_seed(seed: int, index: int) -> int:
    """31-bit seed of the noise of frame ``index`` of a copy (for ``cv2.setRNGSeed``)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") >> 1


def frame_counts(params: AugmentParams, n_frames: int) -> np.ndarray:
    """How many times each source frame is written: 0 (dropped), 1, or 2 (duplicated).

    ``floor(temporal_rate * n_frames)`` frames (never all of them) are chosen without
    replacement by a generator seeded from the copy seed. Reversal keeps every frame once.

    Examples
    --------
    >>> c = frame_counts(AugmentParams("v", 0, 5, temporal="drop", temporal_rate=0.25), 100)
    >>> int((c == 0).sum()), int(c.sum())
    (25, 75)
    """
    counts = np.ones(n_frames, np.uint8)
    if params.temporal in ("drop", "duplicate") and n_frames:
        k = min(int(math.floor(params.temporal_rate * n_frames)), n_frames - 1)
        picked = np.random.default_rng([params.seed, 2]).choice(n_frames, k, replace=False)
        counts[picked] = 0 if params.temporal == "drop" else 2
    return counts


@dataclass(frozen=True)
class _Plan:  # everything per-frame work needs, built once per copy and frame size
    maps: tuple | None
    color: np.ndarray | None
    blur: float | None
    noise: float | None
    cutout: tuple[slice, slice] | None
    seed: int


def make_plan(params: AugmentParams, height: int, width: int) -> _Plan:
    """Precompute the per-copy state (remap maps, colour matrix, cutout box) for a frame size."""
    cut = None
    if params.cutout is not None:
        top, left, h, w = params.cutout
        y0, x0 = int(round(top * height)), int(round(left * width))
        cut = (slice(y0, y0 + max(1, int(round(h * height)))), slice(x0, x0 + max(1, int(round(w * width)))))
    return _Plan(maps=geometry_maps(params, height, width),
                 color=None if params.color is None else color_matrix(*params.color),
                 blur=params.blur_sigma, noise=params.noise_sigma, cutout=cut, seed=params.seed)


def transform_frames(frames: np.ndarray, first_index: int, plan: _Plan,
                     keep: np.ndarray | None = None) -> np.ndarray:
    """Apply the spatial ops to ``frames`` (uint8[n, H, W, 3], source indices from ``first_index``).

    Works in place when ``frames`` is writeable; frames where ``keep`` is False are skipped.
    Order: geometry (one remap), colour, blur, noise (per frame, seeded by the source frame
    index), cutout.

    Examples
    --------
    >>> f = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    >>> out = transform_frames(f.copy(), 0, make_plan(AugmentParams("v", 0, 0, hflip=True), 4, 6))
    >>> bool((out == f[:, :, ::-1]).all())
    True
    """
    out = frames if frames.flags.writeable else frames.copy()
    noise = np.empty(out.shape[1:], np.int16) if plan.noise else None
    for k in range(len(out)):
        if keep is not None and not keep[k]:
            continue
        f = out[k]
        if plan.maps is not None:
            f = cv2.remap(f, plan.maps[0], plan.maps[1], cv2.INTER_LINEAR, borderMode=_BORDER)
        if plan.color is not None:
            f = cv2.transform(f, plan.color)
        if plan.blur:
            f = cv2.GaussianBlur(f, (0, 0), plan.blur, borderType=_BORDER)
        if plan.noise:
            cv2.setRNGSeed(frame_seed(plan.seed, first_index + k))
            cv2.randn(noise, (0.0,) * 3, (plan.noise,) * 3)
            f = cv2.add(f, noise, dtype=cv2.CV_8U)
        if plan.cutout is not None:
            f[plan.cutout] = 0
        out[k] = f
    return out


# ---- one video -----------------------------------------------------------------------------
def augment_video(src: str | Path, dst: str | Path, params: AugmentParams, *, chunk: int = 250,
                  codec: str = "libx264", crf: int = 23, max_chunk_mb: float | None = 256,
                  threads: bool | int | None = None, preset: str = STAGE_PRESET) -> dict:
    """Write the augmented copy of ``src`` described by ``params`` to ``dst``.

    Frames are read ``chunk`` at a time, but never more than ``max_chunk_mb`` MiB of RGB per
    chunk (None: no cap), so memory does not grow with the video's length or resolution.
    ``dst`` appears only when complete (``VideoWriter`` writes a hidden temporary file and
    renames it on a clean close). ``threads``: decoder threads, as in :func:`fvcflow.video.iter_rgb`.

    Returns
    -------
    dict
        ``params`` (JSON), ``ops`` (comma-separated), ``n_frames_in``, ``n_frames_out``,
        ``width``, ``height``, ``fps``, ``seconds``.

    Raises
    ------
    VideoError
        ``src`` is not a readable video (names the file); no output is left behind.

    Examples
    --------
    >>> row = augment_video("in.mp4", "out/aug1.mp4", draw_params("v1", 1))  # doctest: +SKIP
    >>> row["n_frames_out"] <= row["n_frames_in"] * 1.25  # doctest: +SKIP
    True
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    info = video.probe(src)
    height, width = info.height - info.height % 2, info.width - info.width % 2
    step = chunk_frames(chunk, height, width, max_chunk_mb)
    plan = make_plan(params, height, width)
    counts = frame_counts(params, info.n_frames)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # VideoWriter writes to a temporary name and renames on a clean close; on an error it
    # removes the partial file, so dst never holds a half-written copy
    options = {"preset": preset} if codec.startswith("libx264") else None
    with video.VideoWriter(dst, width, height, info.fps, codec=codec, crf=crf, options=options) as writer:
        if params.temporal == "reverse":
            n_in, n_out = _write_reversed(src, writer, plan, step, (height, width, info.fps), dst.parent,
                                          threads)
        else:
            n_in, n_out = _write_forward(src, writer, plan, step, (height, width), counts, threads)
    return {"params": params.to_json(), "ops": ",".join(params.ops), "n_frames_in": n_in,
            "n_frames_out": n_out, "width": width, "height": height, "fps": info.fps,
            "seconds": time.perf_counter() - t0}


def _chunks(src: Path, step: int, height: int, width: int, threads: bool | int | None):
    first = 0
    for frames in video.iter_rgb(src, chunk=step, threads=threads):
        n = len(frames)
        yield first, frames[:, :height, :width]
        del frames  # let the chunk go before the next one is decoded: one chunk in memory, not two
        first += n


def _write_forward(src, writer, plan, step, size, counts, threads) -> tuple[int, int]:
    n_in = n_out = 0
    for first, frames in _chunks(src, step, *size, threads):
        c = np.ones(len(frames), np.uint8)
        known = counts[first:first + len(frames)]  # frames past the probed count are kept once
        c[:len(known)] = known
        frames = transform_frames(frames, first, plan, keep=c > 0)
        for i in np.repeat(np.arange(len(frames)), c):
            writer.write(frames[i])
        n_in, n_out = n_in + len(frames), n_out + int(c.sum())
        del frames
    return n_in, n_out


def _write_reversed(src, writer, plan, step, geometry, workdir, threads) -> tuple[int, int]:
    height, width, fps = geometry
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".augment-") as tmp:
        segments = []
        for first, frames in _chunks(src, step, height, width, threads):  # pass 1: transform, split
            seg = Path(tmp) / f"{len(segments):08d}.mkv"
            with video.VideoWriter(seg, width, height, fps, **LOSSLESS) as seg_writer:
                seg_writer.write(transform_frames(frames, first, plan))
            segments.append((seg, len(frames)))
            del frames
        n_out = 0
        for seg, n in reversed(segments):  # pass 2: last segment first, each one backwards
            parts = list(video.iter_rgb(seg, chunk=n, threads=threads))  # one part: n frames
            for part in reversed(parts):
                writer.write(part[::-1])  # no per-frame view may outlive the loop: it pins the chunk
                n_out += len(part)
            parts = part = None
            seg.unlink()
    return sum(n for _, n in segments), n_out


# ---- self-blended pseudo-fakes (issue 22) ------------------------------------------------------
# A real frame's region blended with a transformed copy of the same frame (self-blended images,
# Shiohara and Yamasaki, CVPR 2022): what every splicing generator leaves (the blend boundary, a
# colour and sharpness mismatch, resampling traces, a misaligned compression grid), without one
# generator's fingerprint. Labelled fake (variant ``blend-k``), trained on, never evaluated.

BLEND_RANGES = {  # uniform ranges of the drawn parameters of one pseudo-fake
    "area": (0.04, 0.15),  # the region's share of the frame (a face's)
    "aspect": (0.75, 1.35),  # height / width of the region's ellipse, in pixels
    "drift": (0.0, 0.06),  # amplitude of the centre's drift, fraction of width / height
    "period": (2.0, 8.0),  # seconds per cycle of drift and breathing
    "breath": (0.0, 0.12),  # relative amplitude of the radius's breathing
    "wobble": (0.0, 0.18),  # relative amplitude of the outline's low-order harmonics
    "resample": (0.8, 1.25),  # scale of the source's down/up resampling
    "shift": (-18.0, 18.0),  # colour shift per channel, levels
    "brightness": (-20.0, 20.0),  # brightness shift, levels
    "blur": (0.6, 1.6),  # Gaussian blur sigma (when blurred), pixels
    "sharpen": (0.4, 1.2),  # unsharp-mask amount (when sharpened)
    "jpeg": (60.0, 92.0),  # JPEG quality of the source
    "feather": (0.08, 0.35),  # feather width, fraction of the region's short radius
}
OUTLINE_POINTS = 48  # vertices of the drawn region's polygon
HARMONICS = 3  # low-order Fourier terms of the outline's wobble
MASK_CODEC = LOSSLESS  # the per-frame masks: lossless RGB video, the mask in every channel


@dataclass(frozen=True)
class BlendParams:
    """One self-blended pseudo-fake: its region, the source transform and the feathering.

    Region (used when no face-track region is given): an ellipse of ``area`` of the frame and
    ``aspect`` (height / width) about ``centre`` (fractions of width, height), its outline
    wobbled by ``harmonics`` (amplitude, phase pairs), its centre drifting by ``drift`` and its
    radius breathing by ``breath`` over ``period`` seconds (``phase`` offsets them).
    Source: the same frame resampled by ``resample``, colour-shifted by ``shift`` (RGB levels),
    ``brightness``, then blurred (``blur`` sigma) or sharpened (``sharpen`` amount), then JPEG at
    ``jpeg`` quality on an 8x8 grid offset by ``grid`` (dx, dy in 1..7 pixels).
    Blend: the hard region feathered over ``feather`` of its short radius.

    Examples
    --------
    >>> p = draw_blend_params("v1", 1)
    >>> BlendParams.from_json(p.to_json()) == p and 0.8 <= p.resample <= 1.25
    True
    """

    video_id: str
    copy: int
    seed: int
    area: float
    aspect: float
    centre: tuple[float, float]
    drift: float
    period: float
    phase: float
    breath: float
    harmonics: tuple[float, ...]
    resample: float
    shift: tuple[float, float, float]
    brightness: float
    blur: float | None
    sharpen: float | None
    jpeg: int
    grid: tuple[int, int]
    feather: float

    def __post_init__(self):
        if not 0.0 < self.area < 1.0:
            raise ValueError(f"area must be in (0, 1), got {self.area!r}")
        if not all(1 <= g <= 7 for g in self.grid):
            raise ValueError(f"grid offsets must be in 1..7 (a misaligned 8x8 grid), got {self.grid!r}")
        if (self.blur is None) == (self.sharpen is None):
            raise ValueError("exactly one of blur and sharpen must be set")

    def to_json(self) -> str:
        """The parameters as a JSON object (sorted keys)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BlendParams:
        """Parameters back from :meth:`to_json`."""
        d = json.loads(text)
        for name in ("centre", "harmonics", "shift", "grid"):
            d[name] = tuple(d[name])
        return cls(**d)


def draw_blend_params(video_id: str, copy: int, *, seed: int = 0) -> BlendParams:
    """Draw pseudo-fake ``copy`` of ``video_id``, the same on every call (uniform in ``BLEND_RANGES``).

    Its seed is :func:`copy_seed` of ``"blend:" + video_id``, independent of the augmented copies'.

    Examples
    --------
    >>> draw_blend_params("v1", 2) == draw_blend_params("v1", 2) != draw_blend_params("v1", 3)
    True
    """
    s = copy_seed(f"blend:{video_id}", copy, seed)
    rng = np.random.default_rng(s)
    u = {k: float(rng.uniform(*r)) for k, r in BLEND_RANGES.items()}
    centre = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.65)))
    harmonics = tuple(float(v) for _ in range(HARMONICS)
                      for v in (rng.uniform(0.0, u["wobble"]), rng.uniform(0.0, 2 * math.pi)))
    sharpen = rng.random() < 0.5
    return BlendParams(
        video_id=video_id, copy=copy, seed=s, area=u["area"], aspect=u["aspect"], centre=centre,
        drift=u["drift"], period=u["period"], phase=float(rng.uniform(0.0, 2 * math.pi)),
        breath=u["breath"], harmonics=harmonics, resample=u["resample"],
        shift=tuple(float(v) for v in rng.uniform(*BLEND_RANGES["shift"], 3)), brightness=u["brightness"],
        blur=None if sharpen else u["blur"], sharpen=u["sharpen"] if sharpen else None,
        jpeg=int(round(u["jpeg"])), grid=(int(rng.integers(1, 8)), int(rng.integers(1, 8))),
        feather=u["feather"])


def blend_outline(params: BlendParams, index: int, fps: float, height: int, width: int) -> np.ndarray:
    """The drawn region's polygon in frame ``index``: float64[OUTLINE_POINTS, 2] of (x, y) pixels.

    An ellipse of ``area * height * width`` pixels whose centre drifts and whose radius breathes
    smoothly with time (``index / fps``), its outline wobbled by low-order harmonics.

    Examples
    --------
    >>> p = draw_blend_params("v1", 1)
    >>> poly = blend_outline(p, 0, 25.0, 120, 160)
    >>> poly.shape, bool((poly >= 0).all() and (poly[:, 0] <= 159).all() and (poly[:, 1] <= 119).all())
    ((48, 2), True)
    """
    t = 2 * math.pi * index / (fps * params.period) + params.phase
    rx = math.sqrt(params.area * height * width / (math.pi * params.aspect))
    ry = rx * params.aspect
    scale = 1.0 + params.breath * math.sin(1.7 * t)
    cx = (params.centre[0] + params.drift * math.sin(t)) * width
    cy = (params.centre[1] + params.drift * math.cos(1.3 * t)) * height
    theta = np.linspace(0.0, 2 * math.pi, OUTLINE_POINTS, endpoint=False)
    r = np.ones_like(theta)
    for h in range(len(params.harmonics) // 2):
        amp, ph = params.harmonics[2 * h], params.harmonics[2 * h + 1]
        r += amp * np.sin((h + 2) * theta + ph)
    xs = cx + scale * rx * r * np.cos(theta)
    ys = cy + scale * ry * r * np.sin(theta)
    return np.column_stack([np.clip(xs, 0, width - 1), np.clip(ys, 0, height - 1)])


def hard_mask(region: np.ndarray, height: int, width: int) -> np.ndarray:
    """A region as a uint8[H, W] mask of 0 and 1: a polygon ((x, y) pixel vertices, filled) or a
    mask (any nonzero pixel is inside).

    Examples
    --------
    >>> int(hard_mask(np.array([[1, 1], [4, 1], [4, 3], [1, 3]]), 6, 6).sum())
    12
    """
    region = np.asarray(region)
    if region.shape == (height, width) and width != 2:          # a mask, not a polygon's vertices
        return (region != 0).astype(np.uint8)
    if region.ndim != 2 or region.shape[1] != 2 or len(region) < 3:
        raise ValueError(f"a region is a polygon float[n>=3, 2] or a mask [{height}, {width}], got "
                         f"{region.dtype}{list(region.shape)}")
    out = np.zeros((height, width), np.uint8)
    cv2.fillPoly(out, [np.round(region).astype(np.int32)], 1)
    return out


def soft_mask(hard: np.ndarray, feather_px: float) -> np.ndarray:
    """The feathered blend weight of a hard mask, uint8[H, W] in 0..255 (255: all source).

    The hard mask is eroded by half the feather, then box-blurred twice over the feather's
    width (a smooth, compactly supported ramp): the weight is 0 exactly outside the hard region
    dilated by about half the feather, so a pseudo-fake differs from its real only there.

    Examples
    --------
    >>> h = np.zeros((40, 40), np.uint8); h[10:30, 10:30] = 1
    >>> m = soft_mask(h, 6.0)
    >>> int(m[20, 20]), int(m[9, 20]), bool(0 < m[12, 20] < 255)
    (255, 0, True)
    """
    r = max(1, int(round(feather_px / 2)))
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    core = cv2.erode(hard, k, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)
    size = (r + 1, r + 1)
    smooth = cv2.blur(cv2.blur(core, size, borderType=cv2.BORDER_CONSTANT), size,
                      borderType=cv2.BORDER_CONSTANT)
    return np.clip(np.round(smooth * 255.0), 0, 255).astype(np.uint8)


def blend_source(frame: np.ndarray, params: BlendParams) -> np.ndarray:
    """The transformed copy of ``frame`` (uint8[H, W, 3]) that fills the region: resampled,
    colour- and brightness-shifted, blurred or sharpened, JPEG-compressed on a misaligned grid.

    Examples
    --------
    >>> f = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    >>> s = blend_source(f, draw_blend_params("v", 1))
    >>> s.shape == f.shape and s.dtype == np.uint8 and bool((s != f).any())
    True
    """
    h, w = frame.shape[:2]
    small = (max(1, int(round(w * params.resample))), max(1, int(round(h * params.resample))))
    out = cv2.resize(cv2.resize(frame, small, interpolation=cv2.INTER_LINEAR), (w, h),
                     interpolation=cv2.INTER_LINEAR)
    offset = np.array(params.shift, np.float32) + np.float32(params.brightness)
    out = np.clip(out.astype(np.float32) + offset, 0, 255)
    if params.blur is not None:
        out = cv2.GaussianBlur(out, (0, 0), params.blur, borderType=_BORDER)
    else:
        soft = cv2.GaussianBlur(out, (0, 0), 1.0, borderType=_BORDER)
        out = out + params.sharpen * (out - soft)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    dx, dy = params.grid
    padded = cv2.copyMakeBorder(out, dy, 0, dx, 0, _BORDER)  # the JPEG grid starts dx, dy before the frame
    ok, buf = cv2.imencode(".jpg", padded[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, params.jpeg])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR image
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[dy:, dx:, ::-1])


def blend_frame(frame: np.ndarray, weight: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``frame`` with ``source`` blended in by ``weight`` (uint8[H, W], 255 = all source); pixels of
    weight 0 are ``frame``'s own, bit for bit.

    Examples
    --------
    >>> f = np.full((2, 2, 3), 10, np.uint8); s = np.full((2, 2, 3), 250, np.uint8)
    >>> blend_frame(f, np.array([[0, 255], [128, 0]], np.uint8), s)[..., 0].tolist()
    [[10, 250], [130, 10]]
    """
    a = weight.astype(np.float32)[..., None] / 255.0
    out = np.round(frame.astype(np.float32) * (1.0 - a) + source.astype(np.float32) * a)
    out = np.clip(out, 0, 255).astype(np.uint8)
    out[weight == 0] = frame[weight == 0]
    return out


def blend_in_box(frame: np.ndarray, weight: np.ndarray, params: BlendParams, margin: int = 16) -> np.ndarray:
    """:func:`blend_frame` of ``frame`` with its :func:`blend_source`, computed only on the box
    around the weight's support (``margin`` pixels wider, its corner on the frame's 8x8 grid, so the
    source's JPEG grid keeps the same misalignment with the frame as on the whole frame).

    Examples
    --------
    >>> f = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    >>> w = np.zeros((64, 80), np.uint8); w[20:40, 30:50] = 255
    >>> out = blend_in_box(f, w, draw_blend_params("v", 1))
    >>> bool((out[w == 0] == f[w == 0]).all() and (out[w == 255] != f[w == 255]).any())
    True
    """
    x, y, bw, bh = cv2.boundingRect(weight)
    if bw == 0 or bh == 0:
        return frame.copy()
    height, width = weight.shape
    x0, y0 = max(0, (x - margin) // 8 * 8), max(0, (y - margin) // 8 * 8)
    x1, y1 = min(width, x + bw + margin), min(height, y + bh + margin)
    crop = frame[y0:y1, x0:x1]
    out = frame.copy()
    out[y0:y1, x0:x1] = blend_frame(crop, weight[y0:y1, x0:x1], blend_source(crop, params))
    return out


#: the 5-point landmark hull (eyes, nose, mouth corners) grown about its centroid by this much covers
#: the inner face (brows to chin, cheek to cheek); it is then kept inside the face's detected box
FACE_HULL_GROW = 1.8


def face_hull(landmarks, box, grow: float = FACE_HULL_GROW) -> np.ndarray:
    """The blend region of one frame's face: the convex hull of its landmarks (float[5, 2] of
    (x, y) pixels) grown ``grow`` times about their centroid, clipped to its box (x, y, w, h);
    the box's inscribed ellipse where the landmarks span no area. float64[n >= 3, 2].

    Examples
    --------
    >>> lm = np.array([[40, 40], [60, 40], [50, 50], [42, 60], [58, 60]], float)
    >>> poly = face_hull(lm, (30, 25, 40, 50))
    >>> bool(poly[:, 0].min() >= 30 and poly[:, 0].max() <= 70 and poly[:, 1].max() <= 75)
    True
    >>> int(hard_mask(poly, 100, 100).sum()) > int(hard_mask(lm[[0, 1, 4, 3]], 100, 100).sum())
    True
    """
    x, y, w, h = (float(v) for v in box)
    pts = np.asarray(landmarks, np.float64).reshape(-1, 2)
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3 or cv2.contourArea(hull.astype(np.float32)) < 1.0:
        theta = np.linspace(0.0, 2 * math.pi, OUTLINE_POINTS, endpoint=False)
        return np.column_stack([x + w / 2 * (1 + np.cos(theta)), y + h / 2 * (1 + np.sin(theta))])
    c = pts.mean(axis=0)
    poly = c + grow * (hull - c)
    poly[:, 0] = np.clip(poly[:, 0], x, x + w)
    poly[:, 1] = np.clip(poly[:, 1], y, y + h)
    return poly


def face_track_region(tracks, track: int = 0):
    """``region(index)`` for :func:`blend_video` from a face track (the faces stage's table,
    :func:`fvcflow.stages.facetrack.track_video`): :func:`face_hull` of track ``track``'s box and
    landmarks, interpolated between its rows and held beyond its ends; None when it has no such
    track (the drawn region is used)."""
    from fvcflow.stages.facetrack import boxes_at

    if tracks is None or not tracks.height or track not in set(tracks["track"].to_list()):
        return None
    rows = tracks.filter(tracks["track"] == track)

    def region(index: int) -> np.ndarray:
        box, lm = boxes_at(rows, track, [index])
        return face_hull(lm[0], box[0])

    return region


def blend_weights(params: BlendParams, index: int, fps: float, height: int, width: int,
                  region=None) -> np.ndarray:
    """The blend weight (uint8[H, W]) of frame ``index``: the soft mask of ``region(index)`` (a
    face track's per-frame polygon or mask, the hook for the face stage) or of the drawn outline."""
    poly = region(index) if region is not None else blend_outline(params, index, fps, height, width)
    hard = hard_mask(poly, height, width)
    ys, xs = np.nonzero(hard)
    short = min(np.ptp(ys), np.ptp(xs)) / 2.0 if ys.size else 0.0
    return soft_mask(hard, max(1.0, params.feather * short))


def blend_video(src: str | Path, dst: str | Path, mask_dst: str | Path, params: BlendParams, *,
                region=None, chunk: int = 250, codec: str = "libx264", crf: int = 23,
                max_chunk_mb: float | None = 256, threads: bool | int | None = None,
                preset: str = STAGE_PRESET) -> dict:
    """Write the self-blended pseudo-fake of ``src`` to ``dst`` and its per-frame masks to ``mask_dst``.

    Every frame: the region (``region(index)``, a per-frame polygon float[n, 2] of (x, y) pixels
    or a mask [H, W], e.g. a face track's landmark hull; by default the drawn, drifting and
    breathing region of :func:`blend_outline`) is feathered (:func:`soft_mask`) and the frame's
    transformed copy (:func:`blend_source`) blended in (:func:`blend_frame`), on the box around
    the mask (:func:`blend_in_box`). The copy is encoded
    as the augmented copies are (``codec``, ``crf``); the masks (uint8 weights, 255 = all source)
    go to a lossless video, one frame per frame. Both files appear only when complete; memory is
    one chunk, as in :func:`augment_video`.

    Returns
    -------
    dict
        ``params`` (JSON), ``mask_path``, ``n_frames_in``, ``n_frames_out``, ``mask_area`` (mean
        share of the frame with a nonzero weight), ``width``, ``height``, ``fps``, ``seconds``.

    Raises
    ------
    VideoError
        ``src`` is not a readable video (names the file); nothing is left behind.
    """
    t0 = time.perf_counter()
    src, dst, mask_dst = Path(src), Path(dst), Path(mask_dst)
    info = video.probe(src)
    height, width = info.height - info.height % 2, info.width - info.width % 2
    step = chunk_frames(chunk, height, width, max_chunk_mb)
    dst.parent.mkdir(parents=True, exist_ok=True)
    mask_dst.parent.mkdir(parents=True, exist_ok=True)
    options = {"preset": preset} if codec.startswith("libx264") else None
    n, area = 0, 0.0
    with video.VideoWriter(dst, width, height, info.fps, codec=codec, crf=crf, options=options) as writer, \
            video.VideoWriter(mask_dst, width, height, info.fps, **MASK_CODEC) as masks:
        for first, frames in _chunks(src, step, height, width, threads):
            for i in range(len(frames)):
                w = blend_weights(params, first + i, info.fps, height, width, region)
                writer.write(blend_in_box(frames[i], w, params))
                masks.write(np.repeat(w[..., None], 3, axis=2))
                area += float((w > 0).mean())
            n += len(frames)
            del frames
    return {"params": params.to_json(), "ops": "self-blend", "mask_path": str(mask_dst), "n_frames_in": n,
            "n_frames_out": n, "mask_area": area / max(n, 1), "width": width, "height": height,
            "fps": info.fps, "seconds": time.perf_counter() - t0}


def read_masks(path: str | Path, *, chunk: int = 250):
    """The recorded blend weights of a pseudo-fake, uint8[n, H, W] chunk by chunk (255 = all source)."""
    for frames in video.iter_rgb(path, chunk=chunk):
        yield frames[..., 0]
