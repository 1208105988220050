"""Stage 3: letterbox every video to a square (longest side to ``size``, aspect kept, padded).

>>> letterbox_geometry(640, 360, 256)
(256, 144, 0, 56)
"""

from __future__ import annotations

from pathlib import Path

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


def scale_video(src: str | Path, dst: str | Path, *, size: int = 256, crf: int = 18,
                chunk: int = 250, threads: bool | int | None = None, preset: str = STAGE_PRESET) -> dict:
    """Write the letterboxed H.264 copy of ``src`` to ``dst``; memory is constant in video length
    and nearly flat in frame size: each frame is letterboxed as soon as it is decoded
    (:func:`fvcflow.video.iter_rgb`'s ``transform``), so one full-size RGB frame is alive at a
    time, and a chunk of at most ``chunk`` letterboxed frames (and ``limits.chunk_mb`` MiB) goes
    to the encoder as it fills. The frames are those :func:`letterbox` gives (the same bits).

    Returns the row of ``stage3/scaled.parquet`` for this video (sizes and the up/down flags).
    """
    info = probe(src)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    n_out = 0
    with VideoWriter(dst, size, size, info.fps or 25.0, crf=crf, options={"preset": preset}) as writer:
        for frames in iter_rgb(src, chunk=chunk, threads=threads,
                               transform=lambda frame: letterbox_frame(frame, size)):
            writer.write(frames)
            n_out += len(frames)
            del frames   # let the chunk go before the next one is decoded: one chunk in memory, not two
    longest = max(info.width, info.height)
    return {
        "src_width": info.width,
        "src_height": info.height,
        "n_frames": n_out,
        "is_upscaled": longest < size,
        "is_downscaled": longest > size,
    }
