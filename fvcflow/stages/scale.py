"""Stage 3: letterbox every video to a square (longest side to ``size``, aspect kept, padded).

>>> letterbox_geometry(640, 360, 256)
(256, 144, 0, 56)
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from fvcflow.video import VideoWriter, iter_rgb, probe
from fvcflow.video.write import STAGE_PRESET


def letterbox_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Scaled width and height and the top-left offset of the picture inside the ``size`` square."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    scale = size / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    return new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def letterbox(frames: np.ndarray, size: int) -> np.ndarray:
    """Letterbox ``uint8[n, H, W, 3]`` frames to ``uint8[n, size, size, 3]`` (black padding)."""
    out = np.zeros((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = letterbox_frame(frame, size)
    return out


def letterbox_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """Letterbox one ``uint8[H, W, 3]`` frame to ``uint8[size, size, 3]`` (the same bits as
    :func:`letterbox` gives it among others)."""
    h, w = frame.shape[:2]
    new_w, new_h, x0, y0 = letterbox_geometry(w, h, size)
    interp = cv2.INTER_AREA if max(w, h) > size else cv2.INTER_CUBIC
    out = np.zeros((size, size, 3), np.uint8)
    out[y0:y0 + new_h, x0:x0 + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    return out


#: the version of the letterbox's pixels, in stage 3's cache key: 2 scales a downscaled frame
#: inside the decoder's own format (:func:`letterbox_decoded`), 1 was RGB first, then OpenCV.
LETTERBOX_VERSION = 2


def letterbox_decoded(frame: av.VideoFrame, size: int) -> np.ndarray:
    """Letterbox one decoded frame to ``uint8[size, size, 3]`` RGB without making a full-size
    RGB copy of it: a frame larger than ``size`` is area-averaged by FFmpeg's scaler from its
    own YUV straight to planar RGB at the small size; memory is then that of the small frame
    whatever the decoded size. A frame no larger than ``size`` is upscaled as
    :func:`letterbox_frame` does (the same bits). Against :func:`letterbox_frame` of the
    full-size RGB frame (version 1) a downscaled picture differs by rounding: the full-size
    conversion is FFmpeg's fast 8-bit one, rounded before averaging (measured: mean absolute
    difference 1.3 levels, at most 4-6, from 480x272 to 1920x1080; the test holds it).
    """
    w, h = frame.width, frame.height
    if max(w, h) <= size:
        return letterbox_frame(frame.to_ndarray(format="rgb24"), size)
    new_w, new_h, x0, y0 = letterbox_geometry(w, h, size)
    small = frame.reformat(width=new_w, height=new_h, format="gbrp", interpolation="AREA")
    out = np.zeros((size, size, 3), np.uint8)
    out[y0:y0 + new_h, x0:x0 + new_w] = small.to_ndarray()     # planar RGB, given as [h, w, 3] RGB
    return out


def scale_video(src: str | Path, dst: str | Path, *, size: int = 256, crf: int = 18,
                chunk: int = 250, threads: bool | int | None = None, preset: str = STAGE_PRESET) -> dict:
    """Write the letterboxed H.264 copy of ``src`` to ``dst``; memory is constant in video length
    and in frame size beyond the decoder's own frames: each frame is letterboxed straight from
    the decoder (:func:`letterbox_decoded`, :func:`fvcflow.video.iter_rgb`'s ``convert``), so no
    full-size RGB frame is ever made, and a chunk of at most ``chunk`` letterboxed frames (and
    ``limits.chunk_mb`` MiB) goes to the encoder as it fills. What still grows with the frame
    size is the decoder's reference frames (bounded by ``limits.max_pixels``) and, with frame
    threads, one frame per thread (:func:`fvcflow.video.read.decoder_threads` caps them).

    Returns the row of ``stage3/scaled.parquet`` for this video (sizes and the up/down flags).
    """
    info = probe(src)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    n_out = 0
    with VideoWriter(dst, size, size, info.fps or 25.0, crf=crf, options={"preset": preset}) as writer:
        for frames in iter_rgb(src, chunk=chunk, threads=threads,
                               convert=lambda frame: letterbox_decoded(frame, size)):
            writer.write(frames)
            n_out += len(frames)
            del frames   # let the chunk go before the next one is decoded: one chunk in memory, not two
    return scaled_row(info, n_out, size)


def scaled_row(info, n_frames: int, size: int) -> dict:
    """The row of ``stage3/scaled.parquet`` for a video of ``info`` (its probe) scaled to a
    ``size`` square in ``n_frames`` frames, whatever the method."""
    longest = max(info.width, info.height)
    return {"src_width": info.width, "src_height": info.height, "n_frames": n_frames,
            "is_upscaled": longest < size, "is_downscaled": longest > size}
