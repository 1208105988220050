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
                options: dict | None = None, rotate: int | None = None,
                metadata: dict | None = None, container_options: dict | None = None) -> Path:
    """Encode ``frames`` (or synthetic ones) to ``path``; the codec follows the suffix by default.

    ``rotate`` writes a display matrix asking players to turn the picture ``rotate`` degrees
    clockwise (as the legacy ``rotate`` tag means); ``metadata`` becomes stream tags (kept by
    Matroska, dropped by FFmpeg's mp4 muxer); ``container_options`` go to the muxer
    (``{"movflags": "faststart"}`` puts the mp4 index first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or CODEC_FOR_SUFFIX.get(path.suffix.lower(), "libx264")
    if frames is None:
        frames = synthetic_frames(n, height, width, seed=seed)
    height, width = frames.shape[1:3]
    with av.open(str(path), "w", options=container_options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotate is not None:
            stream.set_display_rotation(-rotate)  # PyAV's angle is counter-clockwise
        for key, value in (metadata or {}).items():
            stream.metadata[key] = value
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


def write_audio(path: str | Path, *, seconds: float = 1.0, codec: str | None = None,
                rate: int = 16000) -> Path:
    """An audio-only file (a sine tone): pcm_s16le for .wav, aac otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or ("pcm_s16le" if path.suffix.lower() == ".wav" else "aac")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        fmt = stream.codec_context.format.name
        n, hop = int(seconds * rate), 1024
        t = np.arange(n) / rate
        tone = 0.3 * np.sin(2 * np.pi * 440 * t)
        for start in range(0, n, hop):
            chunk = tone[start:start + hop]
            data = (chunk * 32767).astype(np.int16) if fmt.startswith("s16") else chunk.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(data[None], format=fmt, layout="mono")
            frame.sample_rate = rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_vfr_video(path: str | Path, times_ms, *, width: int = 64, height: int = 48,
                    gop: int = 10, seed: int = 0) -> Path:
    """A variable-frame-rate H.264 video (.mkv/.mp4): frame i is shown at ``times_ms[i]`` ms."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = synthetic_frames(len(times_ms), height, width, seed=seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1000)  # time base 1/1000: pts in milliseconds
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "ultrafast"}
        for t, f in zip(times_ms, frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = int(t)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def drop_start(src: str | Path, dst: str | Path, n_packets: int) -> Path:
    """Copy the video stream of ``src`` to ``dst`` without its first ``n_packets`` packets: a
    stream that starts mid-GOP, as a cut or a capture started late leaves it."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for k, packet in enumerate(p for p in inp.demux(stream) if p.size):
            if k >= n_packets:
                packet.stream = copy
                out.mux(packet)
    return dst


def cut_with_edit_list(src: str | Path, dst: str | Path, n_frames: int) -> Path:
    """Remux ``src`` (mp4, constant rate) so that its first ``n_frames`` frames fall before time 0:
    the mp4 muxer writes an edit list that hides them, as ``ffmpeg -ss ... -c copy`` does; a
    player decodes them as references and shows the rest."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [p for p in inp.demux(stream) if p.size]
        shift = sorted(p.pts for p in packets)[n_frames]
        for packet in packets:
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = copy
            out.mux(packet)
    return dst


def write_image(path: str | Path, *, codec: str = "png", width: int = 64, height: int = 48) -> Path:
    """A still image (PNG or JPEG with ``codec="mjpeg"``), whatever the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream(codec, rate=1)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
        frame = av.VideoFrame.from_ndarray(synthetic_frames(1, height, width)[0], format="rgb24")
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
