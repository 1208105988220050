"""Real encoded test videos, written with PyAV. Tests call these; nothing here is mocked."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

CODEC_FOR_SUFFIX = {".mp4": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4", ".mkv": "libx264"}


def synthetic_frames(n: int, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """``n`` RGB frames of a moving textured scene (gradient + noise + moving square), uint8[n, H, W, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([
        128 + 60 * np.sin(xx / (7 + seed % 5)),
        128 + 60 * np.cos(yy / (5 + seed % 3)),
        (xx + yy) * 255.0 / max(height + width, 1),
    ], axis=-1)
    frames = np.empty((n, height, width, 3), np.uint8)
    side = max(2, min(height, width) // 4)
    for i in range(n):
        f = base + rng.normal(0, 8, base.shape)
        y0 = (i * 3) % max(1, height - side)
        x0 = (i * 5) % max(1, width - side)
        f[y0:y0 + side, x0:x0 + side] = (255 * (i % 2), 40, 200)
        frames[i] = np.clip(f, 0, 255).astype(np.uint8)
    return frames


def write_video(path: str | Path, *, n: int = 30, width: int = 64, height: int = 48, fps: int = 25,
                codec: str | None = None, pix_fmt: str = "yuv420p", frames: np.ndarray | None = None,
                seed: int = 0, gop: int | None = None, bit_rate: int | None = None,
                options: dict | None = None) -> Path:
    """Encode ``frames`` (or synthetic ones) to ``path``; the codec follows the suffix by default."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or CODEC_FOR_SUFFIX.get(path.suffix.lower(), "libx264")
    if frames is None:
        frames = synthetic_frames(n, height, width, seed=seed)
    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        opts = dict(options or {})
        if codec == "libvpx-vp9":
            opts.setdefault("deadline", "realtime")
            opts.setdefault("cpu-used", "8")
        if codec == "libx264":
            opts.setdefault("preset", "ultrafast")
        stream.options = opts
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def truncate(path: str | Path, keep_fraction: float = 0.5) -> Path:
    """Cut a file to a fraction of its size, as an interrupted download does."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path
