"""Face-swap-style fakes for the demo corpus: find a region, paste a donor into it, with the
artefacts real face swaps leave.

The region is the face where OpenCV's bundled Haar cascade finds one on enough frames (the
detections are interpolated and smoothed into a track), else a central region that drifts and
breathes smoothly; either is grown to cover a face's share of a talking-head frame
(:data:`AREA`). The donor patch (the donor's own face track, or its central region) is rendered
at a generator's low resolution and upscaled (smooth, grain-free), colour-matched to the region
(per-channel mean and std in CIE Lab, measured inside the ellipse) with a residual colour shift,
JPEG-compressed on an 8x8 grid misaligned with the frame's (double compression), and blended with
a narrowly feathered elliptical alpha mask whose size and lightness flicker from frame to frame
(:class:`SwapStyle`). Pixels outside the region's box are left untouched.

A track is ``int32[n, 4]``: one ``(x, y, w, h)`` box per frame, inside the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fvcflow.cascade import haar_cascade


def detect_faces(frames: np.ndarray, *, every: int = 3, min_hits: float = 0.4) -> np.ndarray | None:
    """A face track from Haar detections on every ``every``-th frame, or None.

    None when a face is found on fewer than ``min_hits`` of the probed frames. The largest
    detection of each probed frame is kept, boxes far from the median are dropped as false
    alarms, the rest are interpolated over all frames and smoothed.

    Examples
    --------
    >>> detect_faces(np.zeros((6, 72, 96, 3), np.uint8)) is None
    True
    """
    n, h, w = frames.shape[:3]
    probes = np.arange(0, n, every)
    found, boxes = [], []
    min_side = max(16, min(h, w) // 8)
    for i in probes:
        gray = cv2.equalizeHist(cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY))
        hits = haar_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                               minSize=(min_side, min_side))
        if len(hits):
            found.append(i)
            boxes.append(max(hits, key=lambda b: b[2] * b[3]))
    if len(found) < max(1, min_hits * len(probes)):
        return None
    boxes = np.asarray(boxes, np.float64)
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    keep = np.linalg.norm(centre - np.median(centre, axis=0), axis=1) < 0.5 * np.median(boxes[:, 2])
    if keep.sum() < max(1, min_hits * len(probes)):
        return None
    found, boxes = np.asarray(found)[keep], boxes[keep]
    track = np.stack([np.interp(np.arange(n), found, boxes[:, c]) for c in range(4)], axis=1)
    track = _smooth(track)
    # a Haar box is tight around eyes and mouth: take in the forehead and chin too
    track[:, 1] -= 0.05 * track[:, 3]
    track[:, 2:] *= (1.05, 1.2)
    return clip_track(track, w, h)


def _smooth(track: np.ndarray, radius: int = 2) -> np.ndarray:
    kernel = np.ones(2 * radius + 1) / (2 * radius + 1)
    padded = np.pad(track, ((radius, radius), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(4)], axis=1)


def clip_track(track: np.ndarray, width: int, height: int) -> np.ndarray:
    """Round boxes to int32 and move/shrink them to lie inside a ``width`` x ``height`` frame."""
    t = np.rint(track).astype(np.int32)
    t[:, 2] = np.clip(t[:, 2], 8, width)
    t[:, 3] = np.clip(t[:, 3], 8, height)
    t[:, 0] = np.clip(t[:, 0], 0, width - t[:, 2])
    t[:, 1] = np.clip(t[:, 1], 0, height - t[:, 3])
    return t


def drifting_track(n: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A central face-sized region that drifts and breathes smoothly (no face found).

    Examples
    --------
    >>> t = drifting_track(10, 160, 120, np.random.default_rng(0))
    >>> t.shape, bool((t[:, 0] + t[:, 2] <= 160).all())
    ((10, 4), True)
    """
    t = np.arange(n, dtype=np.float64)
    f, phase = rng.uniform(0.03, 0.08, 3), rng.uniform(0, 2 * np.pi, 3)
    bw = rng.uniform(0.32, 0.42) * width * (1 + 0.05 * np.sin(f[2] * t + phase[2]))
    bh = np.minimum(rng.uniform(0.5, 0.62) * height, 1.35 * bw) * (1 + 0.05 * np.sin(f[2] * t + phase[2]))
    cx = width / 2 + 0.1 * width * np.sin(f[0] * t + phase[0])
    cy = height / 2 + 0.06 * height * np.sin(f[1] * t + phase[1])
    return clip_track(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1), width, height)


def fit_area(track: np.ndarray, width: int, height: int, fraction: float) -> np.ndarray:
    """Scale every box about its centre (keeping its aspect) so that the track's mean box covers
    ``fraction`` of the frame (less where the frame is too narrow), then clip into the frame.

    Examples
    --------
    >>> t = fit_area(np.tile([60, 40, 40, 40], (3, 1)), 160, 120, 0.5)
    >>> int(t[0, 2] * t[0, 3]) >= 0.45 * 160 * 120
    True
    """
    track = np.asarray(track, np.float64)
    scale = np.sqrt(fraction * width * height / np.mean(track[:, 2] * track[:, 3]))
    centre = track[:, :2] + track[:, 2:] / 2
    size = track[:, 2:] * scale
    size *= np.minimum(1.0, np.minimum(width / size[:, :1], height / size[:, 1:]))  # fit, keep aspect
    return clip_track(np.concatenate([centre - size / 2, size], axis=1), width, height)


#: the swap covers 20-40 % of the frame, as a face in a talking-head shot does: the ellipse of
#: :func:`feather_alpha` fills ``pi * 0.44**2`` (61 %) of its box
AREA = (0.30, 0.40)


def region_track(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The swap region of a clip and how it was found: ``(track, "haar-face" | "central")``.

    The face (or central region) is grown to a box whose ellipse covers 30-40 % of the frame.

    Examples
    --------
    >>> track, how = region_track(np.zeros((4, 72, 96, 3), np.uint8), np.random.default_rng(0))
    >>> track.shape, how
    ((4, 4), 'central')
    """
    h, w = frames.shape[1:3]
    ellipse = rng.uniform(*AREA)
    faces = detect_faces(frames)
    track, how = (faces, "haar-face") if faces is not None else (drifting_track(len(frames), w, h, rng),
                                                                 "central")
    return fit_area(track, w, h, ellipse / (np.pi * 0.44 ** 2)), how


def feather_alpha(w: int, h: int, *, axes: float = 0.44, feather: float = 0.008) -> np.ndarray:
    """Alpha mask float32[h, w]: a filled ellipse, Gaussian-blurred, exactly 0 at the box edge.

    ``axes`` is the ellipse's semi-axis as a fraction of the box side, ``feather`` the blur's
    sigma as a fraction of the shorter side (a narrow feather: the seam stays visible).

    Examples
    --------
    >>> a = feather_alpha(40, 50)
    >>> float(a[25, 20]) > 0.99, float(a[0, 0]) == 0.0
    (True, True)
    """
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (max(1, int(axes * w)), max(1, int(axes * h))), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(mask, (0, 0), max(0.5, feather * min(w, h)), borderType=cv2.BORDER_CONSTANT)
    edge = max(alpha[0].max(), alpha[-1].max(), alpha[:, 0].max(), alpha[:, -1].max())
    alpha = np.clip((alpha - edge) / max(1.0 - edge, 1e-6), 0.0, 1.0)  # exactly 0 on the box's edge
    alpha[alpha < 1e-3] = 0.0
    return alpha


def color_match(patch: np.ndarray, reference: np.ndarray, weight: np.ndarray,
                shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Give ``patch`` the per-channel Lab mean and std of ``reference`` (both uint8 RGB, same size),
    measured where ``weight`` > 0.5, then add ``shift`` to the Lab means (OpenCV's 8-bit Lab units).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p, r = rng.integers(0, 100, (8, 8, 3), np.uint8), rng.integers(100, 255, (8, 8, 3), np.uint8)
    >>> out = color_match(p, r, np.ones((8, 8), np.float32))
    >>> bool(abs(out.mean() - r.mean()) < abs(p.mean() - r.mean()))
    True
    """
    inside = weight > 0.5
    src = cv2.cvtColor(patch, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = src[inside].mean(axis=0), src[inside].std(axis=0)
    r_mean, r_std = ref[inside].mean(axis=0), ref[inside].std(axis=0)
    out = (src - s_mean) * (r_std / np.maximum(s_std, 1.0)) + r_mean + np.asarray(shift, np.float32)
    return cv2.cvtColor(np.clip(np.rint(out), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def jpeg_misaligned(patch: np.ndarray, quality: int, x: int, y: int, phase: int) -> np.ndarray:
    """JPEG-compress an RGB ``patch`` that sits at ``(x, y)`` in its frame so that the JPEG's 8x8
    grid starts at frame columns and rows ``== phase (mod 8)``: misaligned with the frame's own
    grid when ``phase`` is 1..7 (the patch is padded by edge replication, then cropped back).

    Examples
    --------
    >>> p = np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)
    >>> jpeg_misaligned(p, 40, x=5, y=9, phase=3).shape
    (20, 30, 3)
    """
    sx, sy = (x - phase) % 8, (y - phase) % 8
    padded = cv2.copyMakeBorder(patch, sy, 0, sx, 0, cv2.BORDER_REPLICATE)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(padded, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV without a JPEG codec
        raise RuntimeError("OpenCV could not JPEG-encode a patch")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)[sy:, sx:]


@dataclass(frozen=True)
class SwapStyle:
    """How one fake is generated (every field is a real face-swap tell).

    ``gen_size``: the generator's working resolution (the donor face is rendered at
    ``gen_size`` x ``gen_size`` and upscaled: smoother, grain-free); ``jpeg_quality``: the donor
    content was JPEG-compressed at about this quality before blending (per-frame jitter
    ``+-jpeg_jitter``), on a grid at ``grid_phase`` (mod 8) in frame pixels, misaligned with the
    frame's; ``lab_shift``: colour shift left after colour matching; ``flicker``: per-frame
    jitter of the mask's size (fraction) and of the lightness (Lab units, std).
    """

    gen_size: int = 48
    jpeg_quality: int = 40
    jpeg_jitter: int = 8
    grid_phase: int = 4
    lab_shift: tuple[float, float, float] = (3.0, 4.0, -4.0)
    flicker: float = 0.03

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "SwapStyle":
        """A style drawn from ``rng`` (the ranges of the demo corpus).

        >>> SwapStyle.draw(np.random.default_rng(0)).gen_size in (32, 40, 48)
        True
        """
        return cls(gen_size=int(rng.choice([32, 40, 48])), jpeg_quality=int(rng.integers(30, 51)),
                   jpeg_jitter=int(rng.integers(8, 16)), grid_phase=int(rng.integers(1, 8)),
                   lab_shift=tuple(float(v) for v in
                                   np.round(rng.choice([-1, 1], 3) * rng.uniform(3, 6, 3), 1)),
                   flicker=float(np.round(rng.uniform(0.03, 0.07), 3)))


def render_face(donor_frame: np.ndarray, box, size: tuple[int, int], gen_size: int) -> np.ndarray:
    """The donor's region rendered at ``gen_size`` square (at most a quarter of the target's
    shorter side) and upscaled to ``size = (w, h)``: a generated face's resolution mismatch.

    >>> render_face(np.zeros((60, 80, 3), np.uint8), (10, 10, 40, 40), (50, 30), 48).shape
    (30, 50, 3)
    """
    dx, dy, dw, dh = (int(v) for v in box)
    w, h = size
    g = max(8, min(gen_size, min(w, h) // 4))
    low = cv2.resize(donor_frame[dy:dy + dh, dx:dx + dw], (g, g), interpolation=cv2.INTER_AREA)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)


def swap(target: np.ndarray, target_track: np.ndarray, donor: np.ndarray, donor_track: np.ndarray, *,
         style: SwapStyle | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Paste the donor's region into the target's region on every frame; returns new frames.

    Frame ``i`` takes donor frame ``i`` (looping over a shorter donor): rendered at low
    resolution and upscaled (:func:`render_face`), colour-matched with a residual colour shift,
    JPEG-compressed on a misaligned grid (:func:`jpeg_misaligned`) and blended with a narrow
    feathered elliptical mask whose size and lightness flicker from frame to frame (``rng``
    draws the flicker; default: seeded from the track). Outside each target box the result
    equals ``target`` exactly.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.integers(0, 255, (2, 4, 60, 80, 3), np.uint8)
    >>> track = np.tile([20, 10, 40, 40], (4, 1))
    >>> out = swap(a, track, b, track)
    >>> bool((out[:, :, :20] == a[:, :, :20]).all()), bool((out != a).any())
    (True, True)
    """
    style = style or SwapStyle()
    rng = rng or np.random.default_rng(np.asarray(target_track, np.int64).ravel()[:64] % 1000)
    out = target.copy()
    for i in range(len(target)):
        x, y, w, h = (int(v) for v in target_track[i])
        patch = render_face(donor[i % len(donor)], donor_track[i % len(donor)], (w, h), style.gen_size)
        alpha = feather_alpha(w, h, axes=0.44 * (1 + style.flicker * rng.uniform(-1, 1)))
        region = target[i, y:y + h, x:x + w]
        shift = np.add(style.lab_shift, (rng.normal(0, 1.0 + 40 * style.flicker), 0.0, 0.0))
        patch = color_match(patch, region, alpha, tuple(shift))
        quality = style.jpeg_quality + int(rng.integers(-style.jpeg_jitter, style.jpeg_jitter + 1))
        patch = jpeg_misaligned(patch, int(np.clip(quality, 5, 95)), x, y,
                                style.grid_phase).astype(np.float32)
        blended = alpha[..., None] * patch + (1 - alpha[..., None]) * region
        out[i, y:y + h, x:x + w] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------- generator B (issue 22's protocol)
# A second fake generator with other artefacts, for the cross-manipulation protocol: train on
# one generator's fakes, evaluate on the other's. Its blend is a rounded box (a superellipse)
# with a wide linear feather instead of a narrowly feathered ellipse; the donor is resampled
# nearest-neighbour down and bicubic up instead of area/bilinear; the colour is transferred by
# per-channel histogram matching in RGB instead of Lab mean and std; nothing is JPEG-compressed
# (no double compression); the mask does not flicker.


@dataclass(frozen=True)
class SwapStyleB:
    """How one fake of generator B is made: ``gen_size`` (the donor's working resolution),
    ``power`` (the superellipse's exponent: 2 an ellipse, larger a rounder box) and ``feather``
    (the linear ramp's width, a fraction of the box's half side)."""

    gen_size: int = 48
    power: float = 4.0
    feather: float = 0.3

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "SwapStyleB":
        """A style drawn from ``rng``.

        >>> s = SwapStyleB.draw(np.random.default_rng(0)); s.gen_size in (24, 56, 64), 3 <= s.power <= 6
        (True, True)
        """
        return cls(gen_size=int(rng.choice([24, 56, 64])), power=float(np.round(rng.uniform(3, 6), 2)),
                   feather=float(np.round(rng.uniform(0.2, 0.4), 3)))


def box_alpha(w: int, h: int, *, power: float = 4.0, feather: float = 0.3,
              extent: float = 0.92) -> np.ndarray:
    """Alpha float32[h, w]: 1 inside a superellipse of ``extent`` of the box's half sides, falling
    linearly to 0 over ``feather`` of them; exactly 0 at the box's edge.

    >>> a = box_alpha(40, 50)
    >>> float(a[25, 20]), float(a[0, 0]), bool(0 < a[25, 3] < 1)
    (1.0, 0.0, True)
    """
    u = np.abs(np.linspace(-1, 1, w, dtype=np.float32))[None, :]
    v = np.abs(np.linspace(-1, 1, h, dtype=np.float32))[:, None]
    rho = (u ** power + v ** power) ** (1.0 / power)
    return np.clip((extent - rho) / max(feather, 1e-3), 0.0, 1.0).astype(np.float32)


def histogram_match(patch: np.ndarray, reference: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``patch`` (uint8 RGB) with each channel's histogram mapped onto ``reference``'s, both
    measured where ``weight`` > 0.5.

    >>> rng = np.random.default_rng(0)
    >>> p, r = rng.integers(0, 100, (8, 8, 3), np.uint8), rng.integers(100, 255, (8, 8, 3), np.uint8)
    >>> out = histogram_match(p, r, np.ones((8, 8), np.float32))
    >>> bool(out.min() >= r.min() and abs(out.mean() - r.mean()) < 5)
    True
    """
    inside = weight > 0.5
    out = np.empty_like(patch)
    q = np.linspace(0.0, 1.0, 256)
    for c in range(3):
        src, ref = patch[..., c][inside], reference[..., c][inside]
        src_q = np.quantile(src, q) if src.size else q * 255
        ref_q = np.quantile(ref, q) if ref.size else q * 255
        lut = np.interp(np.arange(256), src_q + np.arange(256) * 1e-6, ref_q)
        out[..., c] = np.clip(np.rint(lut[patch[..., c]]), 0, 255).astype(np.uint8)
    return out


def swap_b(target: np.ndarray, target_track: np.ndarray, donor: np.ndarray, donor_track: np.ndarray, *,
           style: SwapStyleB | None = None) -> np.ndarray:
    """Generator B's fake: :func:`swap`'s regions and donors, its own artefacts (see above).
    Outside each target box the result equals ``target`` exactly.

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.integers(0, 255, (2, 4, 60, 80, 3), np.uint8)
    >>> track = np.tile([20, 10, 40, 40], (4, 1))
    >>> out = swap_b(a, track, b, track)
    >>> bool((out[:, :, :20] == a[:, :, :20]).all()), bool((out != a).any())
    (True, True)
    """
    style = style or SwapStyleB()
    out = target.copy()
    for i in range(len(target)):
        x, y, w, h = (int(v) for v in target_track[i])
        dx, dy, dw, dh = (int(v) for v in donor_track[i % len(donor)])
        g = max(8, min(style.gen_size, min(w, h) // 2))
        crop = donor[i % len(donor)][dy:dy + dh, dx:dx + dw]
        low = cv2.resize(crop, (g, g), interpolation=cv2.INTER_NEAREST)
        patch = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        alpha = box_alpha(w, h, power=style.power, feather=style.feather)
        region = target[i, y:y + h, x:x + w]
        patch = histogram_match(patch, region, alpha).astype(np.float32)
        blended = alpha[..., None] * patch + (1 - alpha[..., None]) * region
        out[i, y:y + h, x:x + w] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
