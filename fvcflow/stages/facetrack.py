"""Face tracks: detect faces on a video's sampled frames, link them into tracks, keep the main ones.

Offline only. The detector (:func:`make_detector`) is, by preference, ``yuface``:
libfacedetection's CNN (YuNet), BSD-3, its weights compiled into the wheel, a box, a confidence
and 5 landmarks per face. Its wheels exist for CPython <= 3.11; elsewhere (or with
``faces.detector`` set so) the fallback is OpenCV's YuNet from a local ONNX file
(``features.face_model``), else OpenCV's bundled Haar frontal-face cascade, which gives no
landmarks (they are placed at the canonical template's positions in the box: :data:`TEMPLATE`).
The detector's :attr:`~FaceDetector.name` is in every cache key, tracks table and MLflow tag.

The tracker (:func:`track_frames`, :func:`track_video`):

1. the frames are the stage 2 sample (:func:`fvcflow.video.sample_indices`); the detector runs
   on every ``every``-th of them (and the last), on a grayscale copy downscaled to at most
   ``max_side`` pixels on its longer side;
2. detections are linked frame to frame, best pairs first (:func:`affinity`): by box overlap
   (IoU >= :data:`LINK_IOU`), else, as sampled frames may lie seconds apart, by the nearest
   box of a similar size within :data:`LINK_DIST` face sizes; a track survives up to
   :data:`MAX_GAP` detection frames without a match; landmarks are put in image order (eyes
   and mouth corners sorted left to right), so that a mirrored video gives mirrored landmarks,
   not swapped ones;
3. each track's detections are smoothed (box and landmarks: each interior detection moves
   halfway to the line through its neighbours, which halves jitter and keeps steady motion) and
   interpolated linearly onto every sampled frame between its first and last detection;
4. tracks seen on fewer than 2 detection frames are dropped (when there were 3 or more), and
   the ``max_tracks`` longest-times-largest (sampled frames spanned x mean box area) are kept,
   numbered 0, 1, ... in that order.

A video without a face gives no track: a recorded outcome, not a failure.

>>> TRACK_COLUMNS[:7]
('frame', 'track', 'x', 'y', 'w', 'h', 'score')
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import polars as pl
from threadpoolctl import ThreadpoolController

from fvcflow.cascade import haar_cascade
from fvcflow.errors import FvcError
from fvcflow.video import iter_luma, probe, sample_indices

log = logging.getLogger("fvcflow.stages")

#: bump when the tracker's output changes meaning (part of the stage cache key)
TRACK_VERSION = 2      # 2: full-frame detections every full_every-th, windows between
LANDMARKS = ("eye_l", "eye_r", "nose", "mouth_l", "mouth_r")
LANDMARK_COLUMNS = tuple(f"{n}_{c}" for n in LANDMARKS for c in ("x", "y"))
TRACK_COLUMNS = ("frame", "track", "x", "y", "w", "h", "score", *LANDMARK_COLUMNS, "detected")
SCHEMA = {"frame": pl.Int64, "track": pl.Int32, **{c: pl.Float64 for c in TRACK_COLUMNS[2:-1]},
          "detected": pl.Boolean}
DETECTORS = ("auto", "yuface", "yunet", "haar")
LINK_IOU = 0.3
LINK_DIST = 2.0
MAX_GAP = 2
MIN_SCORE = 0.6
#: between full-frame detections the detector sees a window of this many face sides about each
#: live face (:meth:`FaceDetector.detect_near`), the face downscaled to at most WINDOW_FACE px
WINDOW = 2.5
WINDOW_FACE = 48
#: a face found in a window continues its track when it overlaps the last box by this much
#: a full-frame detection on every FULL_EVERY-th detection frame (``faces.full_every``)
FULL_EVERY = 6
#: the 5-point template (ArcFace's 112 x 112 template made left-right symmetric), in units of the
#: template's side: eye_l, eye_r, nose, mouth_l, mouth_r (image left and right)
TEMPLATE = np.array([[38.29, 51.60], [73.71, 51.60], [56.0, 71.74], [41.55, 92.28], [70.45, 92.28]]) / 112.0
#: the box of a face in template units (the Haar fallback places the template's points in it)
TEMPLATE_BOX = np.array([0.14, 0.22, 0.72, 0.78])


_CONTROLLER: ThreadpoolController | None = None


def _openmp() -> ThreadpoolController:
    """The process's thread pools, found once (after the detector's library is loaded): finding
    them scans every loaded library, ~17 ms in a worker that has torch and PyAV loaded, more than
    the detector's call on a window."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def yuface_available() -> bool:
    """Whether the ``yuface`` wheel (libfacedetection's CNN) is installed here."""
    return importlib.util.find_spec("yuface") is not None


@dataclass(frozen=True)
class Detection:
    box: np.ndarray          # float64[4]: x, y, w, h
    score: float             # 0..1
    landmarks: np.ndarray    # float64[5, 2], image order (LANDMARKS)


def _image_order(lm: np.ndarray) -> np.ndarray:
    lm = np.asarray(lm, np.float64).reshape(5, 2).copy()
    if lm[0, 0] > lm[1, 0]:
        lm[[0, 1]] = lm[[1, 0]]
    if lm[3, 0] > lm[4, 0]:
        lm[[3, 4]] = lm[[4, 3]]
    return lm


def template_landmarks(box) -> np.ndarray:
    """The template's 5 points placed in ``box`` (x, y, w, h): the landmarks of a detector that
    has none (Haar)."""
    x, y, w, h = box
    bx, by, bw, bh = TEMPLATE_BOX
    return np.stack([x + (TEMPLATE[:, 0] - bx) / bw * w, y + (TEMPLATE[:, 1] - by) / bh * h], axis=1)


class FaceDetector:
    """Every face of a grayscale frame: boxes, scores and landmarks in the frame's pixels.

    ``kind``: ``"yuface"``, ``"yunet"`` (``model``: a local ONNX file for ``cv2.FaceDetectorYN``)
    or ``"haar"``; :func:`make_detector` picks one from the settings.
    """

    def __init__(self, kind: str, model: str | Path | None = None, *, max_side: int = 640,
                 min_score: float = MIN_SCORE):
        if kind not in DETECTORS[1:]:
            raise FvcError(f"faces.detector: {kind!r} is not one of {', '.join(DETECTORS)}")
        self.kind, self.max_side, self.min_score = kind, max_side, min_score
        self.model = None if model is None else Path(model)
        self._yunet = None
        if kind == "yuface":
            if not yuface_available():
                raise FvcError("faces.detector = 'yuface': the yuface package is not installed (its wheels "
                               "exist for CPython <= 3.11); use 'auto' to fall back to YuNet ONNX or Haar")
            import yuface

            self._yuface = yuface.detect
        elif kind == "yunet":
            if self.model is None or not self.model.is_file():
                raise FvcError(f"faces.detector = 'yunet' needs features.face_model, a local ONNX file "
                               f"(YuNet's face_detection_yunet_2023mar.onnx); got {self.model}")
            try:
                self._yunet = cv2.FaceDetectorYN.create(str(self.model), "", (max_side, max_side), min_score)
            except cv2.error as exc:
                raise FvcError(f"features.face_model: OpenCV cannot load {self.model} as a face "
                               f"detector: {str(exc).strip().splitlines()[-1]}") from None

    @property
    def name(self) -> str:
        """``yuface``, ``yunet:<file name>`` or ``haar``: in cache keys, tables and MLflow tags."""
        return f"yunet:{self.model.name}" if self.kind == "yunet" else self.kind

    def _raw(self, small: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """The faces of ``small`` (uint8[h, w], the detector's input), in its own pixels."""
        out = []
        if self.kind == "yuface":
            confs, boxes, lms = self._yuface(np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)),
                                             conf=self.min_score)
            for c, b, lm in zip(confs, boxes, lms):
                out.append((np.asarray(b, np.float64), float(c) / 100.0, np.asarray(lm, np.float64)))
        elif self.kind == "yunet":
            self._yunet.setInputSize((small.shape[1], small.shape[0]))
            _, faces = self._yunet.detect(cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))
            for f in ([] if faces is None else faces):
                out.append((np.asarray(f[:4], np.float64), float(f[14]), np.asarray(f[4:14], np.float64)))
        else:
            side = max(12, min(small.shape) // 10)
            boxes = haar_cascade().detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=4,
                                                minSize=(side, side))
            for b in boxes:
                b = np.asarray(b, np.float64)
                out.append((b, 1.0, template_landmarks(b).ravel()))
        return out

    def _found(self, raw, scale: float, x0: float = 0.0, y0: float = 0.0) -> list[Detection]:
        shift = np.array([x0, y0])
        dets = [Detection(b / scale + [x0, y0, 0, 0], s, _image_order(lm.reshape(5, 2) / scale + shift))
                for b, s, lm in raw if s >= self.min_score and b[2] > 0 and b[3] > 0]
        return sorted(dets, key=lambda d: -d.box[2] * d.box[3])

    def detect(self, gray: np.ndarray) -> list[Detection]:
        """The faces of ``gray`` (uint8[H, W]) scoring at least ``min_score``, largest first."""
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        small = np.ascontiguousarray(gray)
        if scale < 1.0:
            small = cv2.resize(small, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        return self._found(self._raw(small), scale)

    def detect_near(self, gray: np.ndarray, box) -> list[Detection]:
        """The faces in a window around ``box`` (x, y, w, h: where a face was on the last detection
        frame): a square of :data:`WINDOW` x the face's longer side about its centre (clipped to the
        frame), downscaled so that the face is at most :data:`WINDOW_FACE` pixels: a few ms of the
        CNN instead of a full frame's tens. In the frame's pixels, largest first."""
        h, w = gray.shape
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        half = WINDOW * max(box[2], box[3]) / 2
        x0, y0 = int(max(0, np.floor(cx - half))), int(max(0, np.floor(cy - half)))
        x1, y1 = int(min(w, np.ceil(cx + half))), int(min(h, np.ceil(cy + half)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        scale = min(1.0, WINDOW_FACE / max(box[2], box[3], 1.0))
        crop = np.ascontiguousarray(gray[y0:y1, x0:x1])
        if scale < 1.0:
            crop = cv2.resize(crop, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
                              interpolation=cv2.INTER_AREA)
        return self._found(self._raw(crop), scale, x0, y0)


def make_detector(kind: str = "auto", model: str | Path | None = None, *,
                  max_side: int = 640) -> FaceDetector:
    """The detector ``kind`` names; ``"auto"``: yuface when installed, else YuNet from ``model``
    when given, else Haar (:func:`fallback_note` says so)."""
    if kind == "auto":
        kind = "yuface" if yuface_available() else "yunet" if model is not None else "haar"
    return FaceDetector(kind, model, max_side=max_side)


def fallback_note(detector: FaceDetector) -> str | None:
    """The one line that says a detector other than the CNN ran, or None when the CNN did."""
    if detector.kind == "yuface":
        return None
    why = ("yuface is not installed (its wheels exist for CPython <= 3.11)" if not yuface_available()
           else "faces.detector asks for it")
    extra = "" if detector.kind == "yunet" else ", frontal faces only, no landmarks"
    return f"faces: the {detector.name} detector ran, not the yuface CNN: {why}{extra}"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes.

    >>> iou(np.array([0, 0, 10, 10.]), np.array([5, 0, 10, 10.]))
    0.3333333333333333
    """
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def affinity(a: np.ndarray, b: np.ndarray) -> float:
    """How well box ``b`` continues box ``a``: ``1 + IoU`` when they overlap by IoU >= LINK_IOU;
    else, for boxes of similar area (ratio within 1/2..2) whose centres lie within LINK_DIST face
    sizes (the geometric mean side of the two), ``1 - distance / LINK_DIST`` (a face that moved
    between sparse detection frames); else 0 (no link).

    >>> affinity(np.array([0, 0, 10, 10.]), np.array([0, 0, 10, 10.]))
    2.0
    >>> round(affinity(np.array([0, 0, 10, 10.]), np.array([15, 0, 10, 10.])), 2)
    0.25
    >>> affinity(np.array([0, 0, 10, 10.]), np.array([30, 0, 10, 10.]))
    0.0
    """
    o = iou(a, b)
    if o >= LINK_IOU:
        return float(1.0 + o)
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    if area_a <= 0 or area_b <= 0 or not 0.5 <= area_a / area_b <= 2.0:
        return 0.0
    side = (area_a * area_b) ** 0.25
    d = float(np.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2)) / side
    return float(max(0.0, 1.0 - d / LINK_DIST))


def detection_positions(n_sampled: int, every: int) -> list[int]:
    """Positions in the sample where the detector runs: every ``every``-th and the last.

    >>> detection_positions(10, 3)
    [0, 3, 6, 9]
    >>> detection_positions(8, 3)
    [0, 3, 6, 7]
    """
    if every < 1:
        raise FvcError(f"faces.every must be >= 1, got {every}")
    pos = list(range(0, n_sampled, every))
    if n_sampled and pos[-1] != n_sampled - 1:
        pos.append(n_sampled - 1)
    return pos


def link(frames: list[int], detections: list[list[Detection]]) -> list[list[tuple[int, Detection]]]:
    """Link per-frame detections into tracks: greedy by IoU, a gap of up to MAX_GAP frames."""
    tracks: list[list[tuple[int, Detection]]] = []
    last_seen: list[int] = []
    for step, (frame, dets) in enumerate(zip(frames, detections)):
        live = [t for t in range(len(tracks)) if step - last_seen[t] <= MAX_GAP + 1]
        pairs = sorted(((affinity(tracks[t][-1][1].box, d.box), t, j)
                        for t in live for j, d in enumerate(dets)), key=lambda p: (-p[0], p[1], p[2]))
        used_t, used_d = set(), set()
        for o, t, j in pairs:
            if o <= 0 or t in used_t or j in used_d:
                continue
            used_t.add(t)
            used_d.add(j)
            tracks[t].append((frame, dets[j]))
            last_seen[t] = step
        for j, d in enumerate(dets):
            if j not in used_d:
                tracks.append([(frame, d)])
                last_seen.append(step)
    return tracks


def _smooth(frames: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each interior detection halfway towards the line through its two neighbours (at its own
    frame): jitter is halved, steady motion (a pan, a zoom) is left exactly as it is; the first
    and last detections are kept."""
    if len(values) < 3:
        return values
    out = values.copy()
    f0, f1, f2 = frames[:-2], frames[1:-1], frames[2:]
    t = ((f1 - f0) / (f2 - f0))[:, None]
    out[1:-1] = 0.5 * values[1:-1] + 0.5 * ((1 - t) * values[:-2] + t * values[2:])
    return out


def track_frames(frames: list[int], detections: list[list[Detection]], sampled: list[int], *,
                 max_tracks: int = 2) -> pl.DataFrame:
    """The tracks table (:data:`TRACK_COLUMNS`) of detections on ``frames`` (a subset of
    ``sampled``, both in decode order): linked, smoothed, interpolated onto ``sampled``, ranked."""
    tracks = link(frames, detections)
    min_hits = 2 if len(frames) >= 3 else 1
    tracks = [t for t in tracks if len(t) >= min_hits]
    sampled_arr = np.asarray(sampled, np.int64)
    scored = []
    for t in tracks:
        f = np.array([fr for fr, _ in t], np.float64)
        vals = np.array([[*d.box, d.score, *d.landmarks.ravel()] for _, d in t], np.float64)
        vals = _smooth(f, vals)
        span = sampled_arr[(sampled_arr >= f[0]) & (sampled_arr <= f[-1])]
        rows = np.stack([np.interp(span, f, vals[:, c]) for c in range(vals.shape[1])], axis=1)
        detected = np.isin(span, f.astype(np.int64))
        size = float(np.mean(vals[:, 2] * vals[:, 3]))
        scored.append((len(span) * size, int(f[0]), span, rows, detected))
    scored.sort(key=lambda s: (-s[0], s[1]))
    parts = []
    for k, (_, _, span, rows, detected) in enumerate(scored[:max_tracks]):
        data = {"frame": span, "track": np.full(len(span), k, np.int32)}
        data.update({c: rows[:, i] for i, c in enumerate(TRACK_COLUMNS[2:-1])})
        data["detected"] = detected
        parts.append(pl.DataFrame(data, schema=SCHEMA))
    if not parts:
        return pl.DataFrame(schema=SCHEMA)
    return pl.concat(parts).sort("track", "frame")


def tracker_as(info, tracker: dict | None = None, face_model: str | Path | None = None,
               threads: int | None = None) -> FrameTracker:
    """A :class:`FrameTracker` of the video ``info`` describes, with the face tracker's settings as
    a mapping (``faces.*``: detector, every, max_tracks, max_side, full_every; missing ones take
    their defaults), as a logged detector carries them to ``fvc predict``, the scan and the model
    server: the tracks stage 2 and the face clips were made with."""
    t = {"detector": "auto", "every": 3, "max_tracks": 2, "max_side": 640, "full_every": FULL_EVERY,
         **(tracker or {})}
    det = make_detector(t["detector"], face_model, max_side=t["max_side"])
    return FrameTracker(det, info, every=t["every"], max_tracks=t["max_tracks"], full_every=t["full_every"],
                        threads=threads)


def track_as(path, tracker: dict | None = None,
             face_model: str | Path | None = None) -> tuple[pl.DataFrame, dict]:
    """:func:`track_video` with the settings of :func:`tracker_as`."""
    info = probe(path)
    t = tracker_as(info, tracker, face_model)
    for i, gray in iter_luma(path, t.wanted, info=info):
        t.add(i, gray)
    return t.result()


class FrameTracker:
    """The tracker fed by someone else's decode: it says which frames it wants (:meth:`wants`: the
    detection frames, a subset of the stage 2 sample), takes them as they come (:meth:`add`) and
    gives the tracks table and summary row at the end (:meth:`result`).

    :func:`track_video` feeds it from its own reads; stage 2 (:func:`fvcflow.stages.features.
    video_features`, ``tracker=``) feeds it the frames it decodes anyway, so that a video is
    decoded once for its features and its face tracks (docs/FACES.md, "Shared decode").
    """

    def __init__(self, detector: FaceDetector, info, *, every: int = 3, max_tracks: int = 2,
                 full_every: int = FULL_EVERY, threads: int | None = None):
        if max_tracks < 1:
            raise FvcError(f"faces.max_tracks must be >= 1, got {max_tracks}")
        if full_every < 1:
            raise FvcError(f"faces.full_every must be >= 1, got {full_every}")
        self.detector, self.info, self.max_tracks, self.threads = detector, info, max_tracks, threads
        self.full_every = full_every
        self.n_full = 0                     # detection frames searched whole (the rest: windows)
        self._live: list[np.ndarray] = []   # the boxes found on the last detection frame
        self._result = None
        self.sampled = sample_indices(info.n_frames).tolist()
        self.wanted = [self.sampled[p] for p in detection_positions(len(self.sampled), every)]
        self._wanted = set(self.wanted)
        self.frames: list[int] = []
        self.dets: list[list[Detection]] = []

    def wants(self, index: int) -> bool:
        return int(index) in self._wanted

    def add(self, index: int, gray: np.ndarray) -> None:
        """One decoded frame (luma, the video's own size); frames it does not want are ignored.

        The whole (downscaled) frame is searched on every ``full_every``-th detection frame, when
        the last one found no face or many, and when a face is lost; otherwise only a small window
        about each face of the last detection frame (:meth:`FaceDetector.detect_near`)."""
        if not self.wants(index):
            return
        step = len(self.frames)
        # the CNN's OpenMP threads spin while they wait: on a shared core they cost 6x the CPU
        # (benchmarks/faces.py); the worker's own share of the cores (one thread by default) is faster
        with _openmp().limit(limits=self.threads or 1, user_api="openmp"):
            dets = None
            if step % self.full_every and 0 < len(self._live) <= 2 * max(2, self.max_tracks):
                dets = self._follow(gray)
            if dets is None:
                dets = self.detector.detect(gray)
                self.n_full += 1
        self._live = [d.box for d in dets]
        self.frames.append(int(index))
        self.dets.append(dets)
        self._result = None

    def _follow(self, gray: np.ndarray) -> list[Detection] | None:
        """Each live face found again in its window, or None when one is lost (or two windows
        found the same face): the caller then searches the whole frame."""
        found: list[Detection] = []
        for box in self._live:
            near = [(affinity(box, d.box), d) for d in self.detector.detect_near(gray, box)]
            near = [(a, d) for a, d in near if a > 0]
            if not near:
                return None
            best = max(near, key=lambda p: p[0])[1]
            if any(iou(best.box, f.box) > 0.5 for f in found):
                return None
            found.append(best)
        return sorted(found, key=lambda d: -d.box[2] * d.box[3])

    def result(self) -> tuple[pl.DataFrame, dict]:
        if self._result is None:
            self._result = self._tracks()
        return self._result

    def _tracks(self) -> tuple[pl.DataFrame, dict]:
        info, sampled = self.info, self.sampled
        table = track_frames(self.frames, self.dets, sampled, max_tracks=self.max_tracks)
        covered = table["frame"].n_unique() if table.height else 0
        first = table.filter(pl.col("track") == 0)
        area = (float((first["w"] * first["h"]).median() / (info.width * info.height)) if first.height
                else float("nan"))
        summary = {"detector": self.detector.name, "n_sampled": len(sampled), "n_detect": len(self.frames),
                   "n_tracks": int(table["track"].n_unique()) if table.height else 0,
                   "face_found": covered / len(sampled) if sampled else float("nan"), "face_area": area,
                   "width": info.width, "height": info.height}
        return table.with_columns(pl.lit(self.detector.name).alias("detector")), summary


def track_video(path, detector: FaceDetector, *, every: int = 3, max_tracks: int = 2, info=None,
                strategy: str = "auto", threads: int | None = None,
                full_every: int = FULL_EVERY) -> tuple[pl.DataFrame, dict]:
    """Track the faces of the video at ``path``: its tracks table and a summary row.

    The summary: ``detector``, ``n_sampled`` (frames of the stage 2 sample), ``n_detect`` (frames
    the detector ran on), ``n_tracks``, ``face_found`` (share of the sampled frames with a track),
    ``face_area`` (median box area of track 0 over the frame's, NaN without one), ``width``,
    ``height``. It decodes the detection frames only; :class:`FrameTracker` takes them from a
    decode that reads them anyway (stage 2's).
    """
    info = info or probe(path)
    tracker = FrameTracker(detector, info, every=every, max_tracks=max_tracks, full_every=full_every,
                           threads=threads)
    for i, gray in iter_luma(path, tracker.wanted, info=info, strategy=strategy, threads=threads):
        tracker.add(i, gray)
    return tracker.result()


def boxes_at(tracks: pl.DataFrame, track: int, frames) -> tuple[np.ndarray, np.ndarray]:
    """Box ``float64[n, 4]`` and landmarks ``float64[n, 5, 2]`` of ``track`` at ``frames`` (any
    decode-order indices): interpolated between its rows, held beyond its ends."""
    t = tracks.filter(pl.col("track") == track).sort("frame")
    if not t.height:
        raise ValueError(f"no track {track}")
    f = t["frame"].to_numpy().astype(np.float64)
    frames = np.asarray(frames, np.float64)
    cols = ["x", "y", "w", "h", *LANDMARK_COLUMNS]
    vals = np.stack([np.interp(frames, f, t[c].to_numpy()) for c in cols], axis=1)
    return vals[:, :4], vals[:, 4:].reshape(-1, 5, 2)


# ---------------------------------------------------------------- alignment
#: the aligned crop shows the template's face region enlarged this much about its centre (context
#: around the face, as DeepfakeBench's 1.3x crops keep)
MARGIN = 1.3


def template_points(size: int, margin: float = MARGIN) -> np.ndarray:
    """The template's 5 points in an aligned crop of ``size`` x ``size`` pixels.

    >>> template_points(112, 1.0)[:2].round(2).tolist()
    [[38.29, 51.6], [73.71, 51.6]]
    """
    return ((TEMPLATE - 0.5) / margin + 0.5) * size


def alignment_matrix(landmarks, size: int, margin: float = MARGIN) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) taking a face's 5 landmarks
    (image order, :data:`LANDMARKS`) to the template in a ``size`` crop.

    The rotation levels the eye line (the eyes land on one horizontal line, as in the template),
    the scale is the least-squares fit of all 5 points under that rotation (robust to a narrow
    eye distance in a turned head), the translation puts the eyes' midpoint on the template's.
    """
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    dst = template_points(size, margin)
    d = src[1] - src[0]
    angle = np.arctan2(d[1], d[0])
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    a = (src - src.mean(0)) @ rot.T
    b = dst - dst.mean(0)
    denom = float((a ** 2).sum())
    scale = float((a * b).sum() / denom) if denom > 0 else 1.0
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    lin = scale * rot
    shift = (dst[0] + dst[1]) / 2 - lin @ ((src[0] + src[1]) / 2)
    return np.hstack([lin, shift[:, None]])


def align_face(frame: np.ndarray, landmarks, size: int, margin: float = MARGIN) -> np.ndarray:
    """The face of ``frame`` (H, W[, C]) aligned to the template in a ``size`` x ``size`` crop
    (bilinear; outside the frame: the nearest edge pixel). A face more than twice the crop's size
    is taken from the frame area-downscaled first, so that the crop does not alias."""
    m = alignment_matrix(landmarks, size, margin)
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if scale < 0.5:
        r = 2 * scale
        h, w = frame.shape[:2]
        frame = cv2.resize(frame, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)
        m = m.copy()
        m[:, :2] /= r
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
