"""The face stage of the local features: find and follow the main face, compare it with the rest.

Offline only. The detector is OpenCV's bundled Haar frontal-face cascade (shipped inside
opencv-python-headless 4.x), or, when ``features.face_model`` names a local ONNX file, OpenCV's
YuNet (``cv2.FaceDetectorYN``). It runs on a copy of the frame downscaled to ``MAX_SIDE`` and on
every ``every``-th sampled frame only; between detections the last box is held, and each new
detection is blended into the held box (exponential smoothing, ``SMOOTH``), so the box moves
smoothly over time. A detection frame with no face counts a miss; after ``MAX_MISSES`` the box is
dropped. No face found is a recorded outcome (``f_found`` = 0, the face columns NaN), not a
failure.

Per frame with a box, from the 16 px tile maps of the frame (:func:`fvcflow.kernels.tile_maps`):
face tiles (tile centre inside the box), ring tiles (inside the box enlarged ``RING`` x about its
centre, not face) and background tiles (the rest); per statistic of ``FACE_STATS`` the median
over each set, compared as ``log((face + 1e-6) / (other + 1e-6))`` (energies, grid strength,
resampling) or ``face - other`` (chroma means); the 8x8 grid-phase match of face and
background; and the face box's own 12 per-frame features. Each is averaged over the frames with
a box (docs/FEATURES.md, "Face features"). The column names and ``FACE_STATS`` are
:mod:`fvcflow.schema`'s. Stage 2 takes the boxes from the face tracker's main track
(:mod:`fvcflow.stages.facetrack`), which also gives the landmark instability columns; the
held-box tracker here serves :class:`FaceAccumulator` without tracks.

>>> len(face_columns()), face_columns()[:2]
(31, ['f_found', 'f_box_area'])
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from fvcflow.cascade import haar_cascade
from fvcflow.errors import FvcError
from fvcflow.kernels import FEATURE_NAMES, MAP_NAMES, frame_features, tile_maps
from fvcflow.schema import FACE_STATS, LANDMARK_FEATURES, face_columns
from fvcflow.stages.facetrack import LANDMARKS

MAX_SIDE = 320          # the detector sees the frame downscaled to this longest side
SMOOTH = 0.5            # weight of the held box when a new detection arrives
MAX_MISSES = 2
RING = 1.6
FACE_TILE = 16
_DIFF_STATS = ("cb_mean", "cr_mean")
EPS = 1e-6


class FaceDetector:
    """The largest face of a grayscale frame as ``(x, y, w, h)`` in frame pixels, or None.

    ``model``: a local YuNet-style ONNX file for ``cv2.FaceDetectorYN``; None: the Haar cascade.
    """

    def __init__(self, model: str | Path | None = None, *, max_side: int = MAX_SIDE,
                 score_threshold: float = 0.6):
        self.max_side = max_side
        self.model = None if model is None else Path(model)
        self._yunet = None
        if self.model is not None:
            if not self.model.is_file():
                raise FvcError(f"features.face_model: {self.model} is not a file (a local ONNX face "
                               "detector such as YuNet's face_detection_yunet_2023mar.onnx)")
            try:
                self._yunet = cv2.FaceDetectorYN.create(str(self.model), "", (max_side, max_side),
                                                        score_threshold)
            except cv2.error as exc:
                raise FvcError(f"features.face_model: OpenCV cannot load {self.model} as a face "
                               f"detector: {str(exc).strip().splitlines()[-1]}") from None

    @property
    def name(self) -> str:
        return "haar" if self.model is None else f"onnx:{self.model.name}"

    def detect(self, gray: np.ndarray) -> tuple[float, float, float, float] | None:
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        small = np.ascontiguousarray(gray)
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
        if self._yunet is not None:
            self._yunet.setInputSize((small.shape[1], small.shape[0]))
            _, faces = self._yunet.detect(cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))
            boxes = [] if faces is None else [tuple(f[:4]) for f in faces]
        else:
            side = max(12, min(small.shape) // 10)
            boxes = haar_cascade().detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=4,
                                                minSize=(side, side))
        if len(boxes) == 0:
            return None
        x, y, bw, bh = max(boxes, key=lambda b: b[2] * b[3])
        return (x / scale, y / scale, bw / scale, bh / scale)


class FaceTrack:
    """Detect every ``every``-th frame, hold and smooth the box between (see the module doc)."""

    def __init__(self, detector: FaceDetector, every: int = 3):
        if every < 1:
            raise FvcError(f"FaceTrack: every must be >= 1, got {every}")
        self.detector, self.every = detector, every
        self.box: np.ndarray | None = None
        self.misses = 0
        self.k = 0
        self.detections = 0

    def update(self, gray: np.ndarray) -> np.ndarray | None:
        if self.k % self.every == 0:
            self.detections += 1
            found = self.detector.detect(gray)
            if found is None:
                self.misses += 1
                if self.misses >= MAX_MISSES:
                    self.box = None
            else:
                self.misses = 0
                new = np.asarray(found, np.float64)
                self.box = new if self.box is None else SMOOTH * self.box + (1 - SMOOTH) * new
        self.k += 1
        return None if self.box is None else self.box.copy()


def _region_sets(box: np.ndarray, ny: int, nx: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face, ring and background masks of the tile grid (by tile centre)."""
    cy = (np.arange(ny) + 0.5) * tile
    cx = (np.arange(nx) + 0.5) * tile
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    x, y, w, h = box

    def inside(scale):
        mx, my = x + w / 2, y + h / 2
        return (np.abs(xx - mx) <= scale * w / 2) & (np.abs(yy - my) <= scale * h / 2)

    face = inside(1.0)
    ring = inside(RING) & ~face
    return face, ring, ~(face | ring)


def _mode_phase(maps: np.ndarray, mask: np.ndarray) -> float:
    strong = mask & (maps[MAP_NAMES.index("block_strength")] > 1.0)
    if not strong.any():
        return np.nan
    return float(np.bincount(maps[MAP_NAMES.index("block_phase")][strong].astype(int), minlength=64).argmax())


def face_maps(gray: np.ndarray, cb=None, cr=None) -> np.ndarray:
    """The tile maps the face values compare (16 px tiles of :func:`fvcflow.kernels.tile_maps`)."""
    return tile_maps(gray, cb, cr, tile=FACE_TILE)


def face_frame_features(gray: np.ndarray, cb, cr, box: np.ndarray,
                        maps: np.ndarray | None = None) -> np.ndarray:
    """The 27 per-frame face values (``face_columns()[2:]``, box area first) of one frame
    (``maps``: its :func:`face_maps`, when computed already)."""
    h, w = gray.shape
    maps = face_maps(gray, cb, cr) if maps is None else maps
    face, ring, bg = _region_sets(box, maps.shape[1], maps.shape[2], FACE_TILE)
    out = [box[2] * box[3] / (h * w)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # an empty set gives NaN
        for s in FACE_STATS:
            m = maps[MAP_NAMES.index(s)]
            f = np.nanmedian(m[face]) if face.any() else np.nan
            for other in (bg, ring):
                o = np.nanmedian(m[other]) if other.any() else np.nan
                out.append(f - o if s in _DIFF_STATS else np.log((f + EPS) / (o + EPS)))
    pf, pb = _mode_phase(maps, face), _mode_phase(maps, bg)
    out.append(np.nan if np.isnan(pf) or np.isnan(pb) else float(pf == pb))
    x0, y0 = int(max(0, round(box[0]))), int(max(0, round(box[1])))
    x1, y1 = int(min(w, round(box[0] + box[2]))), int(min(h, round(box[1] + box[3])))
    crop = gray[y0:y1, x0:x1]
    out += list(frame_features(crop)) if crop.size else [np.nan] * len(FEATURE_NAMES)
    return np.asarray(out, np.float64)


class FaceAccumulator:
    """Collects the per-frame face values over a video's sampled frames: the boxes of the face
    tracker's main track (``tracks``, a tracks table of :mod:`fvcflow.stages.facetrack`: track 0
    at the sampled frames) or, without one, of the held-and-smoothed box of ``detector``."""

    def __init__(self, detector: FaceDetector | None, every: int = 3, *, tracks=None):
        self.track = FaceTrack(detector, every) if tracks is None else None
        self.tracks = tracks
        self.main = {} if tracks is None else {
            int(r["frame"]): np.array([r["x"], r["y"], r["w"], r["h"]], np.float64)
            for r in tracks.filter(tracks["track"] == 0).select("frame", "x", "y", "w", "h").to_dicts()}
        self.values: list[np.ndarray] = []
        self.boxes: list[np.ndarray | None] = []

    def add(self, gray: np.ndarray, cb=None, cr=None, index: int | None = None,
            maps: np.ndarray | None = None) -> np.ndarray | None:
        """One sampled frame (``index``: its frame number, which the tracks are keyed by;
        ``maps``: its :func:`face_maps`, when computed already)."""
        box = self.track.update(gray) if self.track is not None else self.main.get(int(index))
        self.boxes.append(box)
        if box is not None:
            self.values.append(face_frame_features(gray, cb, cr, box, maps))
        return box

    def row(self, prefix: str = "") -> dict[str, float]:
        cols = face_columns(prefix)
        n = len(self.boxes)
        found = sum(b is not None for b in self.boxes) / n if n else float("nan")
        k = len(cols) - 1 - len(LANDMARK_FEATURES)
        if self.values:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                means = np.nanmean(np.array(self.values), axis=0)
        else:
            means = np.full(k, np.nan)
        means = [*means, *landmark_instability(self.tracks)]
        return {cols[0]: float(found), **{c: float(v) for c, v in zip(cols[1:], means)}}


def landmark_instability(tracks) -> tuple[float, float]:
    """``(f_lm_instability, f_lm_step)`` of the main track (docs/FEATURES.md): the landmarks
    relative to the box on its detection frames, their mean population std and mean absolute
    step between consecutive detections. NaN without a track, with fewer than 3 (std) or 2
    (step) detections, or from a detector without landmarks (Haar)."""
    if tracks is None or not tracks.height:
        return float("nan"), float("nan")
    if "detector" in tracks.columns and (tracks["detector"] == "haar").any():
        return float("nan"), float("nan")
    t = tracks.filter((tracks["track"] == 0) & tracks["detected"]).sort("frame")
    x, y, w, h = (t[c].to_numpy()[:, None] for c in ("x", "y", "w", "h"))
    lx = np.stack([t[f"{n}_x"].to_numpy() for n in LANDMARKS], axis=1)
    ly = np.stack([t[f"{n}_y"].to_numpy() for n in LANDMARKS], axis=1)
    rel = np.concatenate([(lx - x) / w, (ly - y) / h], axis=1)          # [detections, 10]
    spread = float(rel.std(axis=0).mean()) if len(rel) >= 3 else float("nan")
    step = float(np.abs(np.diff(rel, axis=0)).mean()) if len(rel) >= 2 else float("nan")
    return spread, step
