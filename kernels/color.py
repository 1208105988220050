"""RGB to luma, for pixel formats that are not planar YUV (docs/FEATURES.md, "Grayscale")."""

from __future__ import annotations

import numba
import numpy as np

from .config import JIT
from .features import _check_dtype

# ITU-R BT.601 luma weights.
WR, WG, WB = 0.299, 0.587, 0.114


@numba.jit(**JIT)
def _rgb_to_gray(rgb, out):
    h, w, _ = rgb.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = WR * rgb[i, j, 0] + WG * rgb[i, j, 1] + WB * rgb[i, j, 2]


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB frame: ``0.299 R + 0.587 G + 0.114 B``, as float64.

    The result is float64 (not rounded to uint8), so no precision is lost before the
    features; the feature kernels accept it as it is.

    Parameters
    ----------
    rgb : ndarray, shape (H, W, 3), dtype uint8, float32 or float64
        Channels in R, G, B order; any memory layout.

    Returns
    -------
    ndarray, shape (H, W), float64

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import rgb_to_gray
    >>> rgb_to_gray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).round(3)
    array([[76.245, 29.07 ]])
    """
    rgb = np.asarray(rgb)
    _check_dtype(rgb, "rgb")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be an array of shape (H, W, 3), got shape {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb must be a non-empty array of shape (H, W, 3), got shape {rgb.shape}")
    if rgb.dtype == np.float32:
        rgb = rgb.astype(np.float64)
    rgb = np.ascontiguousarray(rgb)
    out = np.empty(rgb.shape[:2])
    _rgb_to_gray(rgb, out)
    return out
