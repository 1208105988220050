"""Stage 3 through a pretrained VAE (``scale.method = "autoencoder"``): the letterbox's geometry, the
picture resized in the autoencoder's latent space instead of by bilinear/area resizing.

Each frame (RGB in [-1, 1]) is encoded by a diffusers ``AutoencoderKL`` at its own resolution
(first brought to a multiple of the VAE's downsampling factor ``f``, a resize of at most
``f / 2`` pixels), its latent mean is resized to the letterboxed picture's size / ``f``
(antialiased bilinear), and decoded; the decoded picture (a multiple of ``f``) is resized to the
exact letterbox geometry (:func:`fvcflow.stages.scale.letterbox_geometry`) and padded with black.
Every mapping is whole-picture to whole-picture, so the picture lands where the letterbox puts it.

Memory is bounded in the frame size: the VAE sees tiles of at most ``tile`` pixels a side
(diffusers' tiled encode and decode: tiles overlapping by a quarter, blended linearly), and one
full-size frame is alive at a time. On CUDA (``device="auto"`` when present) the VAE runs in
float32 (Stable Diffusion's VAEs overflow in float16). The weights come from
:func:`fvcflow.models.weights.resolve_autoencoder` (a named ``hf:`` VAE in the Hugging Face
cache or a local folder), loaded once per process.

torch and diffusers are imported when this module is, which only the autoencoder method does.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import AutoencoderKL

from fvcflow.errors import FvcError
from fvcflow.stages.scale import letterbox_geometry, scaled_row
from fvcflow.video import VideoWriter, iter_rgb, probe
from fvcflow.video.write import STAGE_PRESET

log = logging.getLogger("fvcflow.stages")


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: the current CUDA device when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FvcError("setting 'scale.device': cuda, but torch sees no CUDA device")
    return torch.device(device)


@functools.lru_cache(maxsize=2)
def load_vae(folder: str, identity: str, device: str = "cpu") -> AutoencoderKL:
    """The AutoencoderKL of a diffusers folder, in eval mode on ``device`` (cached per process by
    folder, weights identity and device). Missing or mismatched tensors are an error naming them."""
    try:
        vae, info = AutoencoderKL.from_pretrained(folder, local_files_only=True, output_loading_info=True,
                                                  torch_dtype=torch.float32, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FvcError(f"{folder}: not a diffusers AutoencoderKL ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    bad = [f"{k}: {info[k][:5]}" for k in kinds if info.get(k)]
    if bad:
        raise FvcError(f"{folder}: the weights do not fit the AutoencoderKL of its config.json "
                       f"({'; '.join(bad)})")
    return vae.to(device).eval().requires_grad_(False)


class Autoencoder:
    """A VAE that letterboxes frames: ``frame(uint8[H, W, 3]) -> uint8[size, size, 3]``.

    ``tile``: the largest side the VAE sees at once (pixels; 0 or None: whole frames, memory
    growing with the frame). ``downsampling`` is the VAE's factor ``f`` (8 for Stable Diffusion's).
    """

    def __init__(self, vae: AutoencoderKL, size: int, *, tile: int | None = 512):
        self.vae, self.size = vae, int(size)
        self.device = next(vae.parameters()).device
        self.downsampling = 2 ** (len(vae.config.block_out_channels) - 1)
        if tile:
            f = self.downsampling
            tile = max(2 * f, int(tile) // f * f)
            vae.enable_tiling()
            vae.tile_sample_min_size = tile
            vae.tile_latent_min_size = tile // f
        else:
            vae.disable_tiling()
        self.tile = tile or None

    def _tensor(self, frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)
        return x.permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0)

    @torch.inference_mode()
    def picture(self, frame: np.ndarray, width: int, height: int) -> np.ndarray:
        """``frame`` resized to ``width`` x ``height`` through the VAE: uint8[height, width, 3]."""
        f = self.downsampling
        h, w = frame.shape[:2]
        h8, w8 = max(f, round(h / f) * f), max(f, round(w / f) * f)
        if (h8, w8) != (h, w):
            frame = cv2.resize(frame, (w8, h8), interpolation=cv2.INTER_AREA if h8 * w8 < h * w
                               else cv2.INTER_CUBIC)
        z = self.vae.encode(self._tensor(frame)).latent_dist.mode()
        lh, lw = -(-height // f), -(-width // f)
        if z.shape[-2:] != (lh, lw):
            z = torch.nn.functional.interpolate(z, size=(lh, lw), mode="bilinear", align_corners=False,
                                                antialias=True)
        x = self.vae.decode(z).sample[0]
        out = x.clamp_(-1.0, 1.0).add_(1.0).mul_(127.5).round_().to(torch.uint8).permute(1, 2, 0)
        out = out.cpu().numpy()
        if out.shape[:2] != (height, width):
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
        return out

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """Letterbox one ``uint8[H, W, 3]`` frame to ``uint8[size, size, 3]`` through the VAE: the
        picture where :func:`fvcflow.stages.scale.letterbox_frame` puts it, black around it."""
        h, w = frame.shape[:2]
        new_w, new_h, x0, y0 = letterbox_geometry(w, h, self.size)
        out = np.zeros((self.size, self.size, 3), np.uint8)
        out[y0:y0 + new_h, x0:x0 + new_w] = self.picture(frame, new_w, new_h)
        return out


def autoencoder(weights, size: int, *, tile: int | None = 512, device: str = "auto") -> Autoencoder:
    """The :class:`Autoencoder` of resolved weights (:class:`fvcflow.models.weights.AutoencoderWeights`)."""
    dev = pick_device(device)
    return Autoencoder(load_vae(str(weights.folder), weights.identity, str(dev)), size, tile=tile)


def scale_video_autoencoder(src: str | Path, dst: str | Path, coder: Autoencoder, *, crf: int = 18,
                            chunk: int = 32, threads: bool | int | None = None,
                            preset: str = STAGE_PRESET) -> dict:
    """Write the H.264 copy of ``src`` letterboxed through ``coder`` to ``dst``: the row of
    ``stage3/scaled.parquet`` that :func:`fvcflow.stages.scale.scale_video` gives (sizes, flags).
    Each frame goes through the VAE as soon as it is decoded; chunks of at most ``chunk``
    letterboxed frames go to the encoder."""
    info = probe(src)
    size = coder.size
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    n_out = 0
    with VideoWriter(dst, size, size, info.fps or 25.0, crf=crf, options={"preset": preset}) as writer:
        for frames in iter_rgb(src, chunk=chunk, threads=threads, transform=coder.frame):
            writer.write(frames)
            n_out += len(frames)
            del frames
    return scaled_row(info, n_out, size)


def scale_with_vae(src: str | Path, dst: str | Path, folder: str, identity: str, cfg, *,
                   threads: bool | int | None = None) -> dict:
    """Stage 3's per-video work for ``scale.method = "autoencoder"`` (``cfg``: the ``scale``
    settings; ``folder``, ``identity``: the resolved weights the plan put in the job)."""
    dev = pick_device(cfg.device)
    coder = Autoencoder(load_vae(folder, identity, str(dev)), cfg.size, tile=cfg.tile)
    return scale_video_autoencoder(src, dst, coder, crf=cfg.crf, threads=threads)
