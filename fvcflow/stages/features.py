"""Stages 2 and 4: the handcrafted features of one video (docs/FEATURES.md, "Per-video features").

The column names (:func:`feature_columns`, ``AGGREGATES``, ``CODEC_COLUMNS``) are
:mod:`fvcflow.schema`'s, derived from the kernel table ``FRAME``.

>>> from fvcflow.stages.features import feature_columns
>>> len(feature_columns())
51
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fvcflow.errors import VideoError
from fvcflow.kernels import FEATURE_NAMES, frame_features
from fvcflow.schema import AGGREGATES, CODEC_COLUMNS, COUNT_COLUMNS, feature_columns
from fvcflow.stages.faces import FaceAccumulator, FaceDetector, face_maps
from fvcflow.stages.local import LocalAccumulator
from fvcflow.video import VideoInfo, iter_luma, iter_yuv, probe, sample_indices

__all__ = ["AGGREGATES", "CODEC_COLUMNS", "aggregate", "codec_cues", "feature_columns", "video_features"]


def aggregate(per_frame: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Mean, population std, min and max of each per-frame feature over frames, ignoring NaN."""
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as specified
        stats = {
            "mean": np.nanmean(per_frame, axis=0),
            "std": np.nanstd(per_frame, axis=0),
            "min": np.nanmin(per_frame, axis=0),
            "max": np.nanmax(per_frame, axis=0),
        }
    for j, name in enumerate(FEATURE_NAMES):
        for agg in AGGREGATES:
            out[f"{prefix}{name}_{agg}"] = float(stats[agg][j])
    return out


def codec_cues(info: VideoInfo, prefix: str = "") -> dict[str, float]:
    """``codec_bpp``, ``codec_gop`` and ``codec_fps``, read from the container, not from pixels."""
    bpp_col, gop_col, fps_col = (prefix + c for c in CODEC_COLUMNS)
    bit_rate = info.bit_rate
    if not bit_rate and info.duration > 0:
        bit_rate = info.size_bytes * 8 / info.duration
    pixels_per_s = info.width * info.height * info.fps
    bpp = float(bit_rate) / pixels_per_s if bit_rate and pixels_per_s > 0 else float("nan")
    keys = np.asarray(info.keyframes, dtype=np.float64)
    gop = float(np.mean(np.diff(keys))) if keys.size > 1 else float(info.n_frames)
    return {bpp_col: bpp, gop_col: gop, fps_col: float(info.fps)}


def video_features(path: str | Path, *, info: VideoInfo | None = None, strategy: str = "auto",
                   prefix: str = "", threads: bool | int | None = None, local: bool = False,
                   faces: FaceDetector | None = None, face_every: int = 3,
                   face_tracks=None, tracker=None, track_faces: bool = False) -> dict[str, float]:
    """Stage 2 feature row of one video: 48 aggregated kernel features, 3 codec cues, counts.

    Decodes only the sampled frames (seeking or sequential, chosen from the key-frame spacing),
    one at a time: memory does not grow with the video. Raises :class:`fvcflow.errors.VideoError`
    for a file that is not a usable video. ``local`` adds the 66 local columns
    (:func:`fvcflow.stages.local.local_columns`), ``faces`` (a detector) the 31 face columns
    (:func:`fvcflow.stages.faces.face_columns`), from the same decoded frames; ``face_tracks`` (a
    tracks table of :mod:`fvcflow.stages.facetrack`) gives them from its main track instead.
    ``tracker`` (a :class:`fvcflow.stages.facetrack.FrameTracker` of this video) is fed the
    detection frames from this same decode (they are frames of the sample): one decode gives the
    row and, from ``tracker.result()``, the face tracks. With ``track_faces`` the face columns
    follow that tracker's main track too: as they need the finished tracks, each sampled frame's
    luma and face tile maps are kept until the decode ends (up to 50 frames: ~1.3 bytes a pixel
    each, about 135 MB at 1080p), then measured; the row equals the one ``face_tracks=`` gives
    with the same tracks read apart.

    >>> row = video_features("clip.mp4")            # doctest: +SKIP
    >>> row["noise_energy_mean"], row["n_sampled"]  # doctest: +SKIP
    (812.4, 10)
    """
    info = info or probe(path)
    wanted = sample_indices(info.n_frames)
    stats: dict[str, int] = {}
    per_frame = np.full((len(wanted), len(FEATURE_NAMES)), np.nan)
    got = 0
    loc = LocalAccumulator() if local else None
    face = (FaceAccumulator(None, tracks=face_tracks) if face_tracks is not None
            else FaceAccumulator(faces, face_every) if faces is not None else None)
    if track_faces and (tracker is None or face is not None):
        raise ValueError("track_faces needs a tracker and no other source of face boxes")
    kept: list | None = [] if track_faces else None       # (index, luma, face maps) until the tracks end
    read = iter_luma if loc is None and face is None and kept is None else iter_yuv
    frames = read(path, wanted, info=info, strategy=strategy, stats=stats, threads=threads)
    for i, (index, planes) in enumerate(frames):
        gray, cb, cr = planes if isinstance(planes, tuple) else (planes, None, None)
        per_frame[i] = frame_features(gray)
        if loc is not None:
            loc.add(gray, cb, cr)
        if face is not None:
            face.add(gray, cb, cr, index)
        if tracker is not None:
            tracker.add(index, gray)
        if kept is not None:
            kept.append((index, gray.copy(), face_maps(gray, cb, cr)))
        got = i + 1
    if got == 0:
        raise VideoError(path, "no decodable frames")
    if kept is not None:
        face = FaceAccumulator(None, tracks=tracker.result()[0])
        for index, gray, maps in kept:
            face.add(gray, index=index, maps=maps)
    row = aggregate(per_frame[:got], prefix)
    if loc is not None:
        row.update(loc.row(prefix))
    if face is not None:
        row.update(face.row(prefix))
    row.update(codec_cues(info, prefix))
    sampled, decoded = (prefix + c for c in COUNT_COLUMNS)
    row[sampled] = got
    row[decoded] = int(stats.get("decoded", got))
    return row
