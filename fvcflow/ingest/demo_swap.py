"""Face-swap-style fakes for the demo corpus: find a region, paste a donor into it.

The region is the face where OpenCV's bundled Haar cascade finds one on enough frames (the
detections are interpolated and smoothed into a track), else a central face-sized region that
drifts and breathes smoothly. The donor patch (the donor's own face track, or its central region)
is resized to the region, colour-matched to it (per-channel mean and std in CIE Lab, measured
inside the ellipse) and feather-blended with a Gaussian-blurred elliptical alpha mask, as the
classic face-swap pipelines do. Pixels outside the region's box are left untouched.

A track is ``int32[n, 4]``: one ``(x, y, w, h)`` box per frame, inside the frame.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

#: the OpenCV cascade file used to find faces
CASCADE = "haarcascade_frontalface_default.xml"


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():  # pragma: no cover - a broken OpenCV install
        raise RuntimeError(f"OpenCV could not load its bundled {CASCADE}")
    return cascade


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
        hits = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(min_side, min_side))
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


def region_track(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The swap region of a clip and how it was found: ``(track, "haar-face" | "central")``.

    Examples
    --------
    >>> track, how = region_track(np.zeros((4, 72, 96, 3), np.uint8), np.random.default_rng(0))
    >>> track.shape, how
    ((4, 4), 'central')
    """
    faces = detect_faces(frames)
    if faces is not None:
        return faces, "haar-face"
    return drifting_track(len(frames), frames.shape[2], frames.shape[1], rng), "central"


def feather_alpha(w: int, h: int) -> np.ndarray:
    """Alpha mask float32[h, w]: a filled ellipse, Gaussian-blurred, exactly 0 at the box edge.

    Examples
    --------
    >>> a = feather_alpha(40, 50)
    >>> float(a[25, 20]) > 0.99, float(a[0, 0]) == 0.0
    (True, True)
    """
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (max(1, int(0.35 * w)), max(1, int(0.35 * h))), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.045 * min(w, h)), borderType=cv2.BORDER_CONSTANT)
    edge = max(alpha[0].max(), alpha[-1].max(), alpha[:, 0].max(), alpha[:, -1].max())
    alpha = np.clip((alpha - edge) / (1.0 - edge), 0.0, 1.0)  # exactly 0 on the box's edge
    alpha[alpha < 1e-3] = 0.0
    return alpha


def color_match(patch: np.ndarray, reference: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Give ``patch`` the per-channel Lab mean and std of ``reference`` (both uint8 RGB, same size),
    measured where ``weight`` > 0.5.

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
    out = (src - s_mean) * (r_std / np.maximum(s_std, 1.0)) + r_mean
    return cv2.cvtColor(np.clip(np.rint(out), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def swap(target: np.ndarray, target_track: np.ndarray, donor: np.ndarray, donor_track: np.ndarray, *,
         gen_size: int = 64) -> np.ndarray:
    """Paste the donor's region into the target's region on every frame; returns new frames.

    Frame ``i`` takes donor frame ``i`` (looping over a shorter donor). The donor region passes
    through ``gen_size`` x ``gen_size`` pixels, the working resolution of face-swap generators,
    before it is scaled to the target box (so it is smoother and grain-free, as generated faces
    are). Outside each target box the result equals ``target`` exactly.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.integers(0, 255, (2, 4, 60, 80, 3), np.uint8)
    >>> track = np.tile([20, 10, 40, 40], (4, 1))
    >>> out = swap(a, track, b, track)
    >>> bool((out[:, :, :20] == a[:, :, :20]).all()), bool((out != a).any())
    (True, True)
    """
    out = target.copy()
    for i in range(len(target)):
        x, y, w, h = (int(v) for v in target_track[i])
        j = i % len(donor)
        dx, dy, dw, dh = (int(v) for v in donor_track[j])
        patch = cv2.resize(donor[j, dy:dy + dh, dx:dx + dw], (gen_size, gen_size), interpolation=cv2.INTER_AREA)
        patch = cv2.resize(patch, (w, h), interpolation=cv2.INTER_LINEAR)
        alpha = feather_alpha(w, h)
        region = target[i, y:y + h, x:x + w]
        patch = color_match(patch, region, alpha).astype(np.float32)
        blended = alpha[..., None] * patch + (1 - alpha[..., None]) * region
        out[i, y:y + h, x:x + w] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
