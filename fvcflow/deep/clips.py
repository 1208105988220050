"""Which frames a deep model sees, decoded once and cached on disk.

Sampling (per video and :class:`ClipSpec`): ``K = clips`` windows spaced evenly over the video,
each of ``W = (frames - 1) * stride + 1 + jitter`` consecutive frames, ``jitter = max(1, frames // 4)``.
A training clip takes ``frames`` frames every ``stride`` from a random offset in ``[0, jitter]``
of its window; evaluation takes the middle offset (``jitter // 2``), so it is deterministic.
Frames are counted as a sequential decode outputs them (``fvcflow.video`` conventions), so a
variable-frame-rate video is sampled by frame, not by time. A video shorter than ``W`` loops
(frame ``i`` is frame ``i mod n``; every window is the same); a stream that ends before its
probe said repeats its last frame.

Decoded clips are cached as ``uint8[K, W, h, w, C]`` arrays (``C`` = 3, or 5 for an
``"rgb+flow"`` spec: the encoded optical flow of :mod:`fvcflow.deep.flow` as channels 4-5) under
``<work dir>/cache/clips/``, one ``<key>.clip`` file per video and clip configuration, named by
``cache_key(content hash, "clips", config)``: the second epoch, the second fold and the second
model with the same clip configuration decode nothing, and a killed run keeps every file it
finished (written under a temporary name, then renamed). Memory while decoding is that of the
kept, already resized frames, whatever the video's length or resolution.

A ``.clip`` file is a checked blob of the store (:func:`fvcflow.store.checked_writer`: magic,
BLAKE2b digest and length of the payload, then the payload, an ``.npy`` array), written and
verified streamed (constant memory). A :class:`ClipCache` verifies a file the first time it
opens it and memory-maps the verified handle; a truncated, extended or bit-flipped entry is
logged (``clips: damaged cache entry <path> for <video>: <reason>; recomputed``), removed and
decoded again: damaged pixels never reach a model. The ``.npy`` files of fvcflow before the
checks (``CLIP_CACHE_VERSION`` 1) have other keys and are never read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import polars as pl

from fvcflow.deep.flow import flow_config, with_flow
from fvcflow.models.torch_common import ClipSpec
from fvcflow.stages.facetrack import MARGIN, align_face, boxes_at
from fvcflow.store import CorruptEntry, cache_key, checked_writer, verify_checked_file
from fvcflow.video import read_rgb

log = logging.getLogger("fvcflow.deep")

#: longest side of the frames of a variable-aspect (``size=None``) clip
VARIABLE_SIDE = 112
#: 2: checked ``.clip`` files (1: plain ``.npy``, unchecked: never read again)
CLIP_CACHE_VERSION = 2
#: the face crops' alignment (template, margin): in the face clips' cache key
ALIGN_VERSION = f"5pt-{MARGIN}"


@dataclass(frozen=True)
class FaceRef:
    """One face track of a video, for face clips: the full-resolution video (the index's original
    or the stage 1 copy, not the letterbox), its tracks table (the ``faces`` stage) and the
    table's content hash, the track's version in the clip cache key."""

    video: str
    video_hash: str
    tracks: str
    tracks_hash: str
    track: int = 0


@dataclass(frozen=True)
class ClipSource:
    """One stage 3 video the clips come from (``face``: from this face track instead)."""

    video_id: str
    path: str
    content_hash: str
    n_frames: int
    src_width: int | None = None     # the picture inside the letterbox (variable-aspect clips)
    src_height: int | None = None
    face: FaceRef | None = None


def jitter(spec: ClipSpec) -> int:
    """Frames of temporal slack in each window (the random offset of training clips)."""
    return max(1, spec.frames // 4)


def window(spec: ClipSpec) -> int:
    """Frames in one cached window: one clip plus its jitter."""
    return (spec.frames - 1) * spec.stride + 1 + jitter(spec)


def window_indices(n_frames: int, spec: ClipSpec) -> np.ndarray:
    """``int64[K, W]`` frame indices of the K windows of a video of ``n_frames`` frames.

    >>> window_indices(100, ClipSpec(frames=4, clips=3, size=32)).tolist()
    [[0, 1, 2, 3, 4], [48, 49, 50, 51, 52], [95, 96, 97, 98, 99]]
    >>> window_indices(3, ClipSpec(frames=4, clips=1, size=32)).tolist()   # short: loops
    [[0, 1, 2, 0, 1]]
    """
    n = max(1, int(n_frames))
    w = window(spec)
    starts = np.rint(np.linspace(0, max(n - w, 0), spec.clips)).astype(np.int64)
    return (starts[:, None] + np.arange(w)[None, :]) % n


def clip_offsets(spec: ClipSpec, offset: int) -> np.ndarray:
    """Positions inside a window of the ``frames`` frames of a clip starting at ``offset``."""
    return offset + np.arange(spec.frames) * spec.stride


def eval_offset(spec: ClipSpec) -> int:
    return jitter(spec) // 2


def cache_config(spec: ClipSpec) -> dict:
    """What makes two clip arrays of one video differ (normalisation is applied later)."""
    return {"frames": spec.frames, "clips": spec.clips, "stride": spec.stride, "size": spec.size,
            "jitter": jitter(spec), "side": VARIABLE_SIDE if spec.size is None else None,
            "v": CLIP_CACHE_VERSION,
            **({"flow": flow_config(spec.flow)} if spec.channels == "rgb+flow" else {})}


def _transform(spec: ClipSpec, source: ClipSource):
    """Per-frame resize (fixed size) or letterbox crop + resize (variable aspect)."""
    if spec.size is not None:
        side = spec.size

        def fixed(frame: np.ndarray) -> np.ndarray:
            h, w = frame.shape[:2]
            interp = cv2.INTER_AREA if max(h, w) > side else cv2.INTER_LINEAR
            return cv2.resize(frame, (side, side), interpolation=interp)
        return fixed

    def variable(frame: np.ndarray) -> np.ndarray:
        from fvcflow.stages.scale import letterbox_geometry

        h, w = frame.shape[:2]
        if source.src_width and source.src_height and h == w:       # remove the stage 3 letterbox
            new_w, new_h, x0, y0 = letterbox_geometry(source.src_width, source.src_height, w)
            frame = frame[y0:y0 + new_h, x0:x0 + new_w]
            h, w = frame.shape[:2]
        scale = VARIABLE_SIDE / max(h, w)
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return variable


def decode_face_clips(source: ClipSource, spec: ClipSpec) -> np.ndarray:
    """``uint8[K, W, s, s, 3]``: the windows of ``source.face``'s track, each frame of the
    full-resolution video aligned by the track's 5 landmarks (interpolated to that frame) to the
    template (:func:`fvcflow.stages.facetrack.align_face`, ``MARGIN`` x the face) at ``s`` =
    ``spec.size`` (112 for a variable-aspect spec). Frames outside the track's span take its
    nearest end's face."""
    face = source.face
    idx = window_indices(source.n_frames, spec)
    wanted = np.unique(idx)
    tracks = pl.read_parquet(face.tracks)
    _, landmarks = boxes_at(tracks, face.track, wanted)
    side = spec.size or VARIABLE_SIDE
    step = iter(range(len(wanted)))
    last = [0]

    def aligned(frame: np.ndarray) -> np.ndarray:
        k = next(step, last[0])      # read_rgb transforms the wanted frames in order
        last[0] = k
        return align_face(frame, landmarks[k], side)

    frames, _ = read_rgb(face.video, wanted, transform=aligned)
    windows = frames[np.searchsorted(wanted, idx)]
    if spec.channels == "rgb+flow":
        windows = with_flow(windows, spec.flow)
    return windows


def decode_clips(source: ClipSource, spec: ClipSpec) -> np.ndarray:
    """``uint8[K, W, h, w, 3]``: the windows of ``source`` decoded in one pass (no cache); face
    clips when ``source.face`` names a track (:func:`decode_face_clips`)."""
    if source.face is not None:
        return decode_face_clips(source, spec)
    idx = window_indices(source.n_frames, spec)
    wanted = np.unique(idx)
    frames, _ = read_rgb(source.path, wanted, transform=_transform(spec, source))
    windows = frames[np.searchsorted(wanted, idx)]
    if spec.channels == "rgb+flow":     # two-stream models: RGB then the encoded flow (dx, dy)
        windows = with_flow(windows, spec.flow)
    return windows


class ClipCache:
    """Content-addressed, checksummed ``.clip`` files of decoded windows; counts what it decoded,
    reused and found damaged (``damaged``: the paths, in order).

    ``root=None`` caches nothing (every request decodes). A file is verified once per cache
    object (and per DataLoader worker that opens it first); later loads of the same file (same
    inode, size and modification time) memory-map it without hashing it again.
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None
        self.decoded = 0
        self.reused = 0
        self.damaged: list[str] = []
        self._verified: dict[str, tuple] = {}

    def path(self, source: ClipSource, spec: ClipSpec) -> Path | None:
        if self.root is None:
            return None
        if source.face is not None:     # the track's version (its table's hash) is in the key
            f = source.face
            key = cache_key(f.video_hash, "face_clips", {**cache_config(spec), "tracks": f.tracks_hash,
                                                          "track": f.track, "align": ALIGN_VERSION})
        else:
            key = cache_key(source.content_hash, "clips", cache_config(spec))
        return self.root / key[:2] / f"{key}.clip"

    def load(self, source: ClipSource, spec: ClipSpec, *, mmap: bool = True) -> np.ndarray:
        """The windows of ``source``, from the cache (verified) or decoded (and then cached)."""
        path = self.path(source, spec)
        if path is not None:
            try:
                arr = self._read(path, spec, mmap=mmap)
            except CorruptEntry as exc:
                log.warning("clips: damaged cache entry %s for %s: %s; recomputed", path,
                            source.video_id, exc.reason)
                self.damaged.append(str(path))
                self._verified.pop(str(path), None)
                path.unlink(missing_ok=True)
            else:
                if arr is not None:
                    self.reused += 1
                    return arr
        arr = decode_clips(source, spec)
        self.decoded += 1
        if path is not None:
            save_clips(path, arr)
        return arr

    def _read(self, path: Path, spec: ClipSpec, *, mmap: bool) -> np.ndarray | None:
        """The verified array at ``path`` (None when absent); :class:`CorruptEntry` when damaged."""
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return None
        with fh:
            st = os.fstat(fh.fileno())
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            known = self._verified.get(str(path))
            if known is not None and known[0] == stamp:
                offset, dtype, shape, order = known[1]
            else:
                verify_checked_file(fh, path)
                offset, dtype, shape, order = _npy_header(fh, path)
                if dtype != np.uint8 or len(shape) != 5 or shape[:2] != (spec.clips, window(spec)):
                    raise CorruptEntry(path, f"holds {dtype}{list(shape)}, not uint8[{spec.clips}, "
                                             f"{window(spec)}, h, w, C]")
                self._verified[str(path)] = (stamp, (offset, dtype, shape, order))
            if mmap:        # maps the verified handle: a file renamed over ``path`` since is not read
                return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
            fh.seek(offset)
            arr = np.fromfile(fh, dtype=dtype, count=int(np.prod(shape)))
            if arr.size != int(np.prod(shape)):
                raise CorruptEntry(path, "shorter than when it was checked")
            return arr.reshape(shape, order=order)


def _npy_header(fh, path: Path) -> tuple[int, np.dtype, tuple[int, ...], str]:
    """Offset of the array data, dtype, shape and order of the ``.npy`` payload at ``fh``'s position."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version}")
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(fh)
    except (ValueError, OSError, SyntaxError) as exc:
        raise CorruptEntry(path, f"no valid array header ({exc})") from None
    return fh.tell(), dtype, tuple(shape), "F" if fortran else "C"


def save_clips(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write ``arr`` as a checked ``.clip`` file, streamed: whole files only (a killed writer leaves
    a swept temporary); a full disk is :class:`~fvcflow.errors.DiskFullError`."""
    with checked_writer(path) as fh:
        np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)


# ---------------------------------------------------------------- face or frame clips
#: the face columns :func:`with_faces` adds to a model's rows
FACE_COLUMNS = ("face_video", "face_video_hash", "face_tracks", "face_tracks_hash", "face_n_tracks")


def with_faces(lake, spec: ClipSpec, rows: pl.DataFrame, *,
               quiet: bool = False) -> tuple[ClipSpec, pl.DataFrame]:
    """The spec with its ``source`` decided and the rows with their face tracks (:data:`FACE_COLUMNS`).

    ``auto`` is ``face`` when more than half of ``rows`` have a face track in the ``faces`` stage
    table, else ``frame``. With face clips, a video without a track is seen through frame clips:
    counted and said once (a log warning). ``face`` without a faces table is an error naming the
    stage to run. ``quiet``: not said (the clip cache's fill before training, which says it).
    """
    from dataclasses import replace

    from fvcflow.errors import FvcError
    from fvcflow.stages.specs import feature_inputs
    from fvcflow.store import read_parquet

    faces = read_parquet(lake.faces)
    if faces is None or not faces.height:
        if spec.source == "face":
            raise FvcError(f"clip.source = 'face' needs the face tracks at {lake.faces}: run the faces "
                           "stage first (fvc run --stages faces)")
        return replace(spec, source="frame"), rows
    full = pl.DataFrame([{"video_id": r["video_id"], "face_video": r["path"],
                          "face_video_hash": r["content_hash"]} for r in feature_inputs(lake)])
    table = (faces.select("video_id", pl.col("tracks_path").alias("face_tracks"),
                          pl.col("content_hash").alias("face_tracks_hash"),
                          pl.col("n_tracks").alias("face_n_tracks"))
             .join(full.unique("video_id", keep="last"), on="video_id", how="inner"))
    joined = rows.drop([c for c in FACE_COLUMNS if c in rows.columns]).join(table, on="video_id", how="left")
    joined = joined.with_columns(pl.col("face_n_tracks").fill_null(0))
    with_track = int((joined["face_n_tracks"] > 0).sum())
    source = spec.source
    if source == "auto":
        source = "face" if with_track * 2 > joined.height else "frame"
    if source == "frame":
        return replace(spec, source="frame"), rows
    missing = joined.height - with_track
    if missing and not quiet:
        log.warning("clips: %d of %d videos have no face track; they are seen through frame clips",
                    missing, joined.height)
    return replace(spec, source="face"), joined


def source_of(row: dict, track: int = 0) -> ClipSource:
    """The clip source of one model row: face track ``track`` when the row has face tracks
    (:func:`with_faces`), else its stage 3 video."""
    face = None
    if (row.get("face_n_tracks") or 0) > track:
        face = FaceRef(row["face_video"], row["face_video_hash"], row["face_tracks"], row["face_tracks_hash"],
                       int(track))
    return ClipSource(row["video_id"], row["path"], row["content_hash"], int(row["n_frames"] or 0),
                      row.get("src_width"), row.get("src_height"), face)


def per_track(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per face track of each video of ``rows`` (``face_track`` 0 .. ``face_n_tracks`` - 1;
    one row, track 0, for a video without tracks or rows without face columns), ``_video`` its
    video's position in ``rows``: every track is a sample of its video's label in training, and
    each is scored at prediction (:func:`pool_tracks` makes the video's score).

    >>> per_track(pl.DataFrame({"video_id": ["a", "b"], "face_n_tracks": [2, 0]})).rows()
    [(0, 'a', 2, 0), (0, 'a', 2, 1), (1, 'b', 0, 0)]
    """
    rows = rows.with_row_index("_video")
    if "face_n_tracks" not in rows.columns:
        return rows.with_columns(face_track=pl.lit(0, pl.Int64))
    n = pl.max_horizontal(pl.col("face_n_tracks").fill_null(0), 1)
    return rows.with_columns(face_track=pl.int_ranges(0, n, dtype=pl.Int64)).explode("face_track")


def pool_tracks(values: np.ndarray, owners: np.ndarray, n: int, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Per video (``owners``: the video index of each track's value), the ``max`` or ``mean`` of
    its tracks' values, and the track that gave the max (for ``mean``: the largest too).

    >>> pool_tracks(np.array([0.1, 0.9, 0.5]), np.array([0, 0, 1]), 2, "max")
    (array([0.9, 0.5]), array([1, 0]))
    """
    out = np.full(n, -np.inf if how == "max" else 0.0)
    count, best, top = np.zeros(n), np.zeros(n, np.int64), np.full(n, -np.inf)
    seen = np.zeros(n, np.int64)
    for v, o in zip(values, owners):
        if v > top[o]:
            top[o], best[o] = v, seen[o]
        seen[o] += 1
        count[o] += 1
        out[o] = max(out[o], v) if how == "max" else out[o] + v
    if how == "mean":
        out = out / np.maximum(count, 1)
    return out, best


def face_tags(lake, spec: ClipSpec) -> dict[str, str]:
    """MLflow tags of a model's clip source: ``fvc.clip_source`` and, for face clips, the face
    detector(s) that made the tracks (``fvc.face_detector``)."""
    from fvcflow.store import read_parquet

    tags = {"fvc.clip_source": spec.source}
    faces = read_parquet(lake.faces) if spec.source == "face" else None
    if faces is not None and "detector" in faces.columns:
        tags["fvc.face_detector"] = ",".join(sorted(set(faces["detector"].drop_nulls().to_list())))
    return tags
