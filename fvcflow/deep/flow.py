"""Optical flow of clip windows, for the two-stream models: Farneback on the CPU, or RAFT-small.

The flow of frame ``t`` of a window is the displacement from frame ``t`` to frame ``t + 1``, in
pixels of the clip's frames (the last frame repeats the flow before it; a one-frame window has
none, zeros). It is computed on consecutive decoded frames, whatever the model's stride, so a
clip that takes every ``stride``-th frame sees the motion at its own frames.

- :class:`Farneback` (default): OpenCV's dense Farneback flow on the grey frames, on the CPU.
- :class:`RaftSmall`: torchvision's RAFT-small, only with a local checkpoint (the state dict of
  ``torchvision.models.optical_flow.raft_small``, e.g. ``raft_small_C_T_V2-01064c6d.pth``); it
  runs on the training device; frames under 128 px are upsampled for it (its correlation
  pyramid needs them) and the flow is scaled back. There are no random-weight RAFT flows:
  without a checkpoint it is an error naming the setting.

Flow is stored like RGB, as ``uint8`` (:func:`encode_flow`: ``128 + 127 * dx / FLOW_BOUND``,
clipped, so a step is ``FLOW_BOUND / 127`` = 0.13 px); :func:`decode_flow` gives it back in
units of ``FLOW_BOUND`` pixels (``[-1, 1]``), the scale the models see.

>>> windows = np.zeros((1, 3, 16, 16, 3), np.uint8)
>>> flow_windows(windows, Farneback()).shape
(1, 3, 16, 16, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fvcflow.errors import FvcError
from fvcflow.store import file_hash

#: pixels per frame that the uint8 flow spans in each direction
FLOW_BOUND = 16.0
#: RAFT's shortest input side: smaller frames are upsampled for it and the flow scaled back
MIN_RAFT_SIDE = 128


def encode_flow(flow: np.ndarray) -> np.ndarray:
    """``float[..., 2]`` pixel displacements -> ``uint8`` (128 is no motion)."""
    q = np.rint(128.0 + 127.0 * np.clip(flow / FLOW_BOUND, -1.0, 1.0))
    return q.astype(np.uint8)


def decode_flow(code: np.ndarray) -> np.ndarray:
    """``uint8`` flow -> ``float32`` in units of ``FLOW_BOUND`` pixels (``[-1, 1]``)."""
    return (code.astype(np.float32) - 128.0) / 127.0


@dataclass(frozen=True)
class Farneback:
    """OpenCV Farneback flow (its usual parameters: pyramid 0.5 x 3, window 15, 3 iterations)."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2

    def config(self) -> dict[str, Any]:
        return {"method": "farneback", **self.__dict__}

    def pairs(self, frames: np.ndarray) -> np.ndarray:
        """``float32[W - 1, h, w, 2]``: flow from each frame of ``uint8[W, h, w, 3]`` to the next."""
        grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
        return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, self.pyr_scale, self.levels,
                                                      self.winsize, self.iterations, self.poly_n,
                                                      self.poly_sigma, 0)
                         for a, b in zip(grey[:-1], grey[1:])]).astype(np.float32)


class RaftSmall:
    """torchvision RAFT-small from a local checkpoint, on ``device`` (frames padded to a multiple of 8).

    ``batch`` frame pairs go through at a time.
    """

    def __init__(self, weights: str | Path | None, *, device: str = "cpu", batch: int = 16,
                 setting: str = "train.deep.flow_weights"):
        if not weights:
            raise FvcError(f"setting '{setting}': RAFT-small flow needs a local checkpoint "
                           "(raft_small state dict); nothing is downloaded. Use Farneback flow instead")
        import torch
        from torchvision.models.optical_flow import raft_small

        from fvcflow.models.torch_common import load_local_weights

        self.weights, self.device, self.batch = Path(weights), torch.device(device), int(batch)
        self.model = raft_small(weights=None, progress=False)
        load_local_weights(self.model, self.weights)
        self.model.eval().to(self.device)
        self._hash = file_hash(self.weights)

    def config(self) -> dict[str, Any]:
        return {"method": "raft_small", "weights": self._hash}

    def pairs(self, frames: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        h0, w0 = x.shape[-2:]
        scale = max(1.0, MIN_RAFT_SIDE / min(h0, w0))    # RAFT's correlation pyramid needs >= 128 px
        if scale > 1:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="replicate")
        out = []
        with torch.no_grad():
            for i in range(0, len(x) - 1, self.batch):
                a = x[i:i + self.batch].to(self.device)
                b = x[i + 1:i + 1 + self.batch].to(self.device)
                a = a[: len(b)]
                out.append(self.model(a, b, num_flow_updates=12)[-1][:, :, :h, :w].float().cpu())
        flow = torch.cat(out)
        if scale > 1:   # back to the clip's pixels
            flow = F.interpolate(flow, size=(h0, w0), mode="bilinear", align_corners=False) / scale
        return flow.permute(0, 2, 3, 1).numpy()


def window_flow(frames: np.ndarray, method) -> np.ndarray:
    """``float32[W, h, w, 2]`` flow of one window ``uint8[W, h, w, 3]`` (last frame repeats)."""
    if len(frames) < 2:
        return np.zeros((*frames.shape[:3], 2), np.float32)
    pairs = method.pairs(frames)
    return np.concatenate([pairs, pairs[-1:]], axis=0)


def flow_windows(windows: np.ndarray, method) -> np.ndarray:
    """``uint8[K, W, h, w, 2]`` encoded flow of every window of ``uint8[K, W, h, w, 3]``."""
    return np.stack([encode_flow(window_flow(w, method)) for w in windows])


def flow_method(name: str = "farneback", weights: str | None = None, *, device: str = "cpu"):
    """The flow method a setting names: ``farneback`` or ``raft_small`` (needs ``weights``)."""
    if name == "farneback":
        return Farneback()
    if name == "raft_small":
        return RaftSmall(weights, device=device)
    raise FvcError(f"setting 'train.deep.flow': must be farneback or raft_small (got {name!r})")


_METHODS: dict[str, Any] = {}


def spec_flow_method(flow: str):
    """The method a :class:`~fvcflow.models.torch_common.ClipSpec`'s ``flow`` names (built once).

    ``"farneback"``, or ``"raft_small=PATH"`` (RAFT-small from the local checkpoint PATH, on CUDA
    when present).
    """
    if flow not in _METHODS:
        name, _, path = flow.partition("=")
        if name == "raft_small":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            if not Path(path).is_file():
                raise FvcError(f"setting 'train.deep.clip.*.flow': RAFT checkpoint {path} is not a file")
            _METHODS[flow] = RaftSmall(path, device=device, setting="train.deep.clip.*.flow")
        else:
            _METHODS[flow] = flow_method(name)
    return _METHODS[flow]


def flow_config(flow: str) -> dict[str, Any]:
    """What makes two flow computations differ (part of the clip cache key)."""
    return spec_flow_method(flow).config()


def with_flow(windows: np.ndarray, flow: str) -> np.ndarray:
    """``uint8[K, W, h, w, 5]``: RGB windows and their encoded flow (``dx``, ``dy``) as channels 4-5."""
    return np.concatenate([windows, flow_windows(windows, spec_flow_method(flow))], axis=-1)
