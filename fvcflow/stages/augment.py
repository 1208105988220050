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
