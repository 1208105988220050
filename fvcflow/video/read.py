"""Decode frames: the luma of chosen frames (seeking when it pays) and RGB chunks of all frames."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import av
import numpy as np

from fvcflow.errors import VideoError
from fvcflow.kernels import rgb_to_gray
from fvcflow.video import limits as bounds
from fvcflow.video.limits import chunk_frames
from fvcflow.video.probe import VideoInfo, frame_packets, open_video, probe

# A seek (demuxer seek + decoder flush + restart) costs about as much CPU as decoding this many
# frames (benchmarks/video.py measured 2.9 at 360p and 3.7 at 1080p for H.264); "auto" seeks
# only when that saves more frames than this.
SEEK_COST_FRAMES = 4
STRATEGIES = ("auto", "seek", "sequential")
# Frame threads ("AUTO") by default from this many pixels per frame: on 2 cores they cost 8%
# more CPU per 1080p frame and 14% per 360p frame, and shorten the wall time only where a core
# is idle, which pays for large frames only (benchmarks/video.py).
FRAME_THREADS_MIN_PIXELS = 1280 * 720


def sample_indices(n_frames: int) -> np.ndarray:
    """Frame indices sampled evenly for per-video features (docs/FEATURES.md).

    k = clamp(round(0.10 * n_frames), 5, 50) indices ``linspace(0, n_frames - 1, k)``, rounded
    and de-duplicated; a video of fewer than 5 frames uses all of them.

    Examples
    --------
    >>> sample_indices(10).tolist()
    [0, 2, 4, 7, 9]
    >>> sample_indices(3).tolist()
    [0, 1, 2]
    """
    n_frames = int(n_frames)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if n_frames < 5:
        return np.arange(n_frames, dtype=np.int64)
    k = min(max(round(0.10 * n_frames), 5), 50)
    return np.unique(np.rint(np.linspace(0, n_frames - 1, k)).astype(np.int64))


def plan_reads(keyframes, indices, seek_cost: float) -> tuple[list[int | None], int]:
    """Decide, for each wanted frame, whether to seek to its key frame or decode on to it.

    Greedy and optimal under the cost model "one decoded frame costs 1, one seek costs
    ``seek_cost``": seek when a key frame lies more than ``seek_cost`` frames beyond the
    position the decoder has reached. ``seek_cost=0`` seeks whenever a key frame lies between,
    ``seek_cost=inf`` decodes straight through.

    Returns
    -------
    seeks : list of int or None
        For each wanted index, the key-frame index to seek to first, or None.
    decoded : int
        The number of frames the plan decodes.

    Examples
    --------
    >>> plan_reads([0, 10, 20], [1, 25], seek_cost=0)
    ([None, 20], 8)
    """
    keys = np.asarray(keyframes, np.int64)
    pos, decoded, seeks = 0, 0, []
    for i in map(int, indices):
        j = np.searchsorted(keys, i, side="right") - 1
        key = int(keys[j]) if j >= 0 else 0
        if key - pos > seek_cost:
            seeks.append(key)
            decoded += i - key + 1
        else:
            seeks.append(None)
            decoded += i - pos + 1
        pos = i + 1
    return seeks, decoded


class LumaReader:
    """Iterator over ``(index, luma uint8[H, W])`` of chosen frames; made by :func:`iter_luma`.

    Attributes
    ----------
    decoded : int
        Frames the decoder has produced so far (the cost of the read).
    seeks : int
        Seeks done so far.
    strategy : str
        "seek" or "sequential": what ``strategy="auto"`` resolved to ("seek" when the plan has
        at least one seek).
    """

    def __init__(self, path, indices, *, info: VideoInfo | None = None, strategy: str = "auto",
                 threads: bool | int | None = None, stats: dict | None = None, chroma: bool = False):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.path = os.fspath(path)
        self.info = info if info is not None else probe(path)
        self.indices = _check_indices(indices, self.info.n_frames)
        cost = {"seek": 0.0, "sequential": np.inf, "auto": SEEK_COST_FRAMES}[strategy]
        if not self.info.keyframe_pts:                   # no timestamps: seeking is not exact
            cost = np.inf
        self.plan, self.planned = plan_reads(self.info.keyframes, self.indices, cost)
        self.strategy = "seek" if any(s is not None for s in self.plan) else "sequential"
        self.threads = threads
        self.chroma = chroma
        self._key_index = dict(zip(self.info.keyframe_pts, self.info.keyframes))
        self.decoded = 0
        self.seeks = 0
        self.stats = stats if stats is not None else {}
        self._publish()
        self._it = self._read()

    def __iter__(self) -> "LumaReader":
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        return next(self._it)

    def close(self) -> None:
        """Stop early and close the file (also done when the reader is garbage-collected)."""
        self._it.close()

    def _publish(self) -> None:
        self.stats.update(decoded=self.decoded, seeks=self.seeks, strategy=self.strategy)

    def _read(self) -> Iterator[tuple[int, np.ndarray]]:
        done = 0
        try:
            for item in self._read_planned(self.indices, self.plan):
                done += 1
                self._publish()
                yield item
        except _InexactSeek:                             # start again, decoding straight through
            self.strategy = "sequential"
            rest = self.indices[done:]
            for item in self._read_planned(rest, [None] * len(rest)):
                self._publish()
                yield item
        finally:
            self._publish()

    def _read_planned(self, indices, plan) -> Iterator[tuple[int, np.ndarray]]:
        if not len(indices):
            return
        key_pts = dict(zip(self.info.keyframes, self.info.keyframe_pts))
        with open_video(self.path) as (container, stream):
            _set_threads(stream, self.threads)
            frames, pos, target = _decode(container, stream), 0, None
            for i, key in zip(indices.tolist(), plan):
                if key is not None:
                    frames.close()
                    target = key_pts[key]
                    container.seek(target, stream=stream)
                    self.seeks += 1
                    frames, pos = _decode(container, stream), None
                frame, pos = self._advance(frames, pos, i, target)
                yield i, (_yuv(frame) if self.chroma else _luma(frame))

    def _advance(self, frames, pos, i, target):
        """Decode up to frame ``i``; ``pos`` is the next frame's index, None right after a seek
        to the key frame at timestamp ``target`` (then the index comes from the frame's pts)."""
        key_index = self._key_index
        for frame in frames:
            self.decoded += 1
            if pos is None:
                pos = key_index.get(frame.pts)
                if pos is None and (frame.pts is None or frame.pts > target):
                    raise _InexactSeek
                if pos is None:
                    continue                             # leading frames of an open GOP
                if pos > i:                              # landed on a later key frame
                    raise _InexactSeek
            if pos == i:
                return frame, pos + 1
            pos += 1
        raise VideoError(self.path, f"truncated or corrupt: the stream ends before frame {i} "
                                    f"(probe counted {self.info.n_frames} frames)")


class _InexactSeek(Exception):
    """A seek landed where the key-frame table does not say: decode sequentially instead."""


def iter_luma(path, indices, *, info: VideoInfo | None = None, strategy: str = "auto",
              threads: bool | int | None = None, stats: dict | None = None) -> LumaReader:
    """Yield ``(index, luma)`` for the frames ``indices`` (sorted, unique), decoding no more than needed.

    Luma is the Y plane of planar YUV frames, read without a colour conversion: for 8-bit
    formats in place (a view into the decoded frame, rows possibly strided), for 10-bit and
    deeper its top 8 bits (``Y >> (bits - 8)``, so that limited range stays 16..235); other
    pixel formats go through RGB and ``fvcflow.kernels.rgb_to_gray`` (BT.601), rounded to uint8.
    Frame indices count presentation frames in decode order from 0, as a sequential decode
    numbers them, for every strategy.

    Parameters
    ----------
    path : str or path-like
    indices : sequence of int
        Sorted, unique, in ``[0, info.n_frames)``.
    info : VideoInfo, optional
        The result of :func:`probe` for this file (probed when omitted).
    strategy : {"auto", "seek", "sequential"}
        "seek" jumps to the key frame before a wanted frame whenever one lies ahead of the
        decoder, "sequential" decodes straight through, "auto" weighs decoded frames against
        the fixed cost of a seek (:func:`plan_reads`).
    threads : bool or int, optional
        True: FFmpeg's frame and slice threads (``thread_type="AUTO"``); False: PyAV's default
        (slice threads only, which single-slice H.264 cannot use); an int n: exactly n decoder
        threads (the stages pass ``Settings.threads_per_worker``); None (default): frame
        threads for frames of 1280x720 pixels and more.
    stats : dict, optional
        Kept up to date with ``decoded``, ``seeks`` and ``strategy`` (the reader's attributes).

    Returns
    -------
    LumaReader
        An iterator; its ``decoded`` attribute counts the frames decoded so far.

    Examples
    --------
    >>> reader = iter_luma("clip.mp4", [0, 100, 200])  # doctest: +SKIP
    >>> [(i, y.shape) for i, y in reader], reader.decoded  # doctest: +SKIP
    ([(0, (360, 640)), (100, (360, 640)), (200, (360, 640))], 41)
    """
    return LumaReader(path, indices, info=info, strategy=strategy, threads=threads, stats=stats)


def iter_yuv(path, indices, *, info: VideoInfo | None = None, strategy: str = "auto",
             threads: bool | int | None = None, stats: dict | None = None) -> LumaReader:
    """Like :func:`iter_luma`, yielding ``(index, (y, cb, cr))``: the three planes as uint8.

    Planar YUV frames give their planes as stored (views, chroma at its own subsampling:
    (ceil(H/2), ceil(W/2)) for 4:2:0), deeper formats their top 8 bits; other formats are
    converted to yuv444p by FFmpeg first. The local features read their chroma statistics
    from these planes.

    Examples
    --------
    >>> [(i, [p.shape for p in yuv]) for i, yuv in iter_yuv("clip.mp4", [0])]  # doctest: +SKIP
    [(0, [(360, 640), (180, 320), (180, 320)])]
    """
    return LumaReader(path, indices, info=info, strategy=strategy, threads=threads, stats=stats,
                      chroma=True)


def read_luma(path, indices, *, info: VideoInfo | None = None, strategy: str = "auto") -> np.ndarray:
    """The luma of frames ``indices`` stacked as uint8[N, H, W] (see :func:`iter_luma`).

    Examples
    --------
    >>> read_luma("clip.mp4", sample_indices(250)).shape  # doctest: +SKIP
    (25, 360, 640)
    """
    reader = iter_luma(path, indices, info=info, strategy=strategy)
    out = np.empty((len(reader.indices), reader.info.height, reader.info.width), np.uint8)
    for row, (_, y) in enumerate(reader):
        if y.shape != out.shape[1:]:
            raise VideoError(path, f"frame size changes mid-stream (to {y.shape[1]}x{y.shape[0]} "
                                   f"from {out.shape[2]}x{out.shape[1]}); read it with iter_luma")
        out[row] = y
    return out


def iter_rgb(path, *, chunk: int = 250, threads: bool | int | None = None,
             max_chunk_mb: float | None | str = "limits",
             transform: Callable[[np.ndarray], np.ndarray] | None = None,
             convert: Callable[[av.VideoFrame], np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Decode every frame as RGB, in chunks of uint8[n <= chunk, H, W, 3]; memory is constant in length.

    A chunk holds at most ``max_chunk_mb`` MiB of RGB frames too (``"limits"``, the default:
    ``chunk_mb`` of the bounds in force, :mod:`fvcflow.video.limits`; None: no cap), so memory
    does not grow with the frame size either. Nothing is applied to the frames (rotation is
    reported by :func:`probe`, not applied). A change of frame size mid-stream ends the current
    chunk early. ``threads`` as in :func:`iter_luma`.

    ``transform`` (a resize, a letterbox) is applied to each frame as soon as it is decoded, and
    the chunks hold its results: then a single full-size RGB frame is alive at a time, whatever
    the chunk, and the MiB cap applies to the transformed frames. Every frame is still checked
    against the pixel bound at its decoded size. ``convert`` goes further: it takes the decoded
    ``av.VideoFrame`` itself and returns the chunk's array (a letterbox scaled inside the
    decoder's format: no full-size RGB frame is made at all); it replaces the RGB conversion
    and ``transform``.

    Examples
    --------
    >>> sum(len(c) for c in iter_rgb("clip.mp4", chunk=100))  # doctest: +SKIP
    250
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    limits = bounds.current()
    cap = limits.chunk_mb if max_chunk_mb == "limits" else max_chunk_mb
    with open_video(path) as (container, stream):
        _set_threads(stream, threads)
        buf, n = None, 0
        for frame in _decode(container, stream):
            if transform is not None or convert is not None:
                bounds.check_size(path, frame.width, frame.height, limits)
            if convert is not None:
                rgb = convert(frame)
                del frame
            else:
                rgb = frame.to_ndarray(format="rgb24")
            if transform is not None and convert is None:
                del frame
                rgb = transform(rgb)                     # the full-size frame goes at once
            if buf is not None and (n == len(buf) or rgb.shape != buf.shape[1:]):
                yield buf[:n]
                buf = None
            if buf is None:
                bounds.check_size(path, rgb.shape[1], rgb.shape[0], limits)
                buf, n = np.empty((chunk_frames(chunk, rgb.shape[0], rgb.shape[1], cap), *rgb.shape),
                                  np.uint8), 0
            buf[n] = rgb
            n += 1
        if buf is None:
            raise VideoError(path, "no decodable frames")
        yield buf[:n]


def read_rgb(path, indices, *, transform: Callable[[np.ndarray], np.ndarray] | None = None,
             threads: bool | int | None = None) -> tuple[np.ndarray, int]:
    """Decode the RGB frames at ``indices`` (sorted, unique) in one sequential pass.

    Only the wanted frames are kept, each passed through ``transform`` first (a crop or a resize
    to the clip size), so memory is that of the kept frames whatever the video's length and
    resolution; decoding stops after the last wanted frame. Indices past the frames the file
    really holds repeat the last decoded frame (a stream shorter than its probe). Returns the
    frames ``uint8[len(indices), h, w, 3]`` and the number of frames decoded.

    Examples
    --------
    >>> frames, decoded = read_rgb("clip.mp4", [0, 5, 9])  # doctest: +SKIP
    >>> frames.shape, decoded                              # doctest: +SKIP
    ((3, 48, 64, 3), 10)
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("indices must not be empty")
    if np.any(indices < 0) or np.any(np.diff(indices) <= 0):
        raise ValueError("indices must be non-negative, sorted and unique")
    transform = transform or (lambda f: f)
    kept: list[np.ndarray] = []
    decoded, frame = 0, None
    with open_video(path) as (container, stream):
        _set_threads(stream, threads)
        for pos, frame in enumerate(_decode(container, stream)):
            decoded = pos + 1
            if pos == indices[len(kept)]:
                kept.append(np.ascontiguousarray(transform(frame.to_ndarray(format="rgb24"))))
                if len(kept) == indices.size:
                    break
        if frame is None:
            raise VideoError(path, "no decodable frames")
        if len(kept) < indices.size:                   # the stream ended early: its last frame again
            last = np.ascontiguousarray(transform(frame.to_ndarray(format="rgb24")))
            kept += [last] * (indices.size - len(kept))
    return np.stack(kept), decoded


#: reference frames an H.264/HEVC decode holds whatever its threads (its picture buffer: measured
#: 172 MiB, 3.6 8-bit 4:2:0 frames, decoding 8K with one thread; benchmarks/bounds.py)
REFERENCE_FRAMES = 4


def decoder_threads(width: int, height: int, threads: int | None = None, *,
                    limits: bounds.Limits | None = None) -> int:
    """How many frame threads to decode ``width`` x ``height`` frames with: ``threads`` (None:
    FFmpeg's own choice, one more than the cores, at most 16), capped so that the decoder's
    frames (its :data:`REFERENCE_FRAMES` reference frames, 8-bit 4:2:0, and one frame per frame
    thread, counted at 3 bytes/pixel: measured 100-114 MiB per further thread at 8K) fit in
    ``limits.chunk_mb`` MiB, the bound on decoded frames held at once (None: no cap). At least 1:
    8K decodes with one thread (a second costs 114 MiB, 66 % more than the decode's own frames).

    >>> decoder_threads(7680, 4320, 16, limits=bounds.Limits(chunk_mb=256))
    1
    >>> decoder_threads(3840, 2160, 16, limits=bounds.Limits(chunk_mb=256))
    8
    >>> decoder_threads(1920, 1080, 16, limits=bounds.Limits(chunk_mb=256))
    16
    """
    limits = limits or bounds.current()
    n = threads if threads is not None else min((os.cpu_count() or 1) + 1, 16)
    if limits.chunk_mb is not None and width > 0 and height > 0:
        refs = REFERENCE_FRAMES * width * height * 3 // 2
        frame = width * height * 3                       # 4:2:0, 16-bit samples at most: 3 bytes/pixel
        n = min(n, int((limits.chunk_mb * 2**20 - refs) // frame))
    return max(1, int(n))


def _set_threads(stream, threads: bool | int | None) -> None:
    """``n`` decoder threads (an int: a Dask worker's share of the cores, no more), frame threads
    on request (True), or by default for frames of FRAME_THREADS_MIN_PIXELS or more; never more
    frame threads than :func:`decoder_threads` allows (each holds a frame: 16 threads at 8K
    would hold 800 MiB)."""
    ctx = stream.codec_context
    if threads is not None and not isinstance(threads, bool):
        ctx.thread_count = decoder_threads(ctx.width, ctx.height, int(threads))
        if ctx.thread_count > 1:
            ctx.thread_type = "AUTO"
        return
    if threads is None:
        threads = ctx.width * ctx.height >= FRAME_THREADS_MIN_PIXELS
    if threads:
        ctx.thread_count = decoder_threads(ctx.width, ctx.height)
        if ctx.thread_count > 1:
            ctx.thread_type = "AUTO"


def _decode(container, stream) -> Iterator[av.VideoFrame]:
    """Frames of ``stream`` from the current position, decoded from the packets probe counts."""
    for packet in frame_packets(container, stream):
        yield from stream.decode(packet)
    yield from stream.decode(None)


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The luma of a decoded frame as uint8[H, W] (see :func:`iter_luma`)."""
    bits = _luma_plane_bits(frame.format)
    if bits == 8:
        plane = frame.planes[0]
        flat = np.frombuffer(plane, np.uint8)[: frame.height * plane.line_size]
        return flat.reshape(frame.height, plane.line_size)[:, : frame.width]
    if bits:                                             # 9..16-bit Y: keep the top 8 bits
        plane = frame.planes[0]
        flat = np.frombuffer(plane, "<u2")[: frame.height * plane.line_size // 2]
        y = flat.reshape(frame.height, plane.line_size // 2)[:, : frame.width]
        return (y >> (bits - 8)).astype(np.uint8)
    gray = rgb_to_gray(frame.to_ndarray(format="rgb24"))
    if gray.dtype != np.uint8:
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return gray


def _plane(frame: av.VideoFrame, k: int, bits: int) -> np.ndarray:
    """Plane ``k`` of a planar frame as uint8[h, w] (its own size), top 8 bits if deeper."""
    plane = frame.planes[k]
    if bits == 8:
        flat = np.frombuffer(plane, np.uint8)[: plane.height * plane.line_size]
        return flat.reshape(plane.height, plane.line_size)[:, : plane.width]
    flat = np.frombuffer(plane, "<u2")[: plane.height * plane.line_size // 2]
    y = flat.reshape(plane.height, plane.line_size // 2)[:, : plane.width]
    return (y >> (bits - 8)).astype(np.uint8)


def _yuv(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y, Cb, Cr) of a decoded frame (see :func:`iter_yuv`)."""
    fmt = frame.format
    bits = _luma_plane_bits(fmt)
    comps = fmt.components
    planar = (bits and len(comps) >= 3 and comps[1].plane == 1 and comps[2].plane == 2
              and comps[1].bits == comps[0].bits)
    if not planar:
        frame = frame.reformat(format="yuv444p")
        bits = 8
    return _plane(frame, 0, bits), _plane(frame, 1, bits), _plane(frame, 2, bits)


_LUMA_BITS: dict[str, int] = {}


def _luma_plane_bits(fmt: av.VideoFormat) -> int:
    """Bits of a luma component alone in plane 0 (yuv4xxp, yuvj4xxp, nv12, gray, yuv420p10le
    ...), 0 when the format has none (RGB, palette, packed YUV) or stores it otherwise than
    in the low bits of little-endian words (p010, big-endian)."""
    bits = _LUMA_BITS.get(fmt.name)
    if bits is None:
        comps = fmt.components
        alone = (not fmt.is_rgb and not fmt.has_palette and not fmt.is_bayer and comps[0].is_luma
                 and all(c.plane != 0 for c in comps[1:]))
        lsb_aligned = fmt.name.startswith(("yuv", "gray")) and not fmt.is_big_endian  # not p010
        fits = comps[0].bits == 8 or (8 < comps[0].bits <= 16 and lsb_aligned)
        bits = _LUMA_BITS[fmt.name] = comps[0].bits if alone and fits else 0
    return bits


def _check_indices(indices, n_frames: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D sequence of ints, got {idx.dtype} of shape {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.size and (np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= n_frames):
        raise ValueError(f"indices must be sorted, unique and in [0, {n_frames}); got {idx.tolist()[:10]}...")
    return idx
