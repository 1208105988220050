"""Slow, obviously-correct NumPy/SciPy twins of the kernels, written straight from docs/FEATURES.md.

Every function takes one 2-D grayscale frame and returns what the kernel of the same name
returns. Nothing here is fast or clever: explicit slicing for the 3x3 filters, one
``scipy.fft.dctn(norm="ortho")`` per 8x8 block, two-pass statistics with ``numpy``.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dctn

NAN = float("nan")


def _valid_3x3(gray: np.ndarray, kernel: list[list[int]]) -> np.ndarray:
    """Correlation with a 3x3 kernel on the valid interior, by explicit shifted slices."""
    g = np.asarray(gray, np.float64)
    h, w = g.shape
    out = np.zeros((h - 2, w - 2))
    for dy in range(3):
        for dx in range(3):
            if kernel[dy][dx]:
                out += kernel[dy][dx] * g[dy:dy + h - 2, dx:dx + w - 2]
    return out


HIGH_PASS = [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]
LAPLACIAN = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
SOBEL_Y = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]


def _too_small_3x3(gray: np.ndarray) -> bool:
    return gray.shape[0] < 3 or gray.shape[1] < 3


def noise_residual(gray: np.ndarray) -> np.ndarray:
    """[noise_energy, noise_mean_abs, noise_kurtosis]."""
    if _too_small_3x3(gray):
        return np.full(3, NAN)
    r = _valid_3x3(gray, HIGH_PASS).ravel()
    centred = r - r.mean()
    m2 = np.mean(centred ** 2)
    m4 = np.mean(centred ** 4)
    kurt = 0.0 if m2 == 0 else m4 / m2 ** 2 - 3.0
    return np.array([np.mean(r ** 2), np.mean(np.abs(r)), kurt])


def sharpness(gray: np.ndarray) -> np.ndarray:
    """[lap_var, grad_mean, grad_std]."""
    if _too_small_3x3(gray):
        return np.full(3, NAN)
    lap = _valid_3x3(gray, LAPLACIAN)
    gx = _valid_3x3(gray, SOBEL_X)
    gy = _valid_3x3(gray, SOBEL_Y)
    mag = np.sqrt(gx ** 2 + gy ** 2)
    return np.array([np.var(lap), np.mean(mag), np.std(mag)])


def dct_coefficients(gray: np.ndarray) -> np.ndarray:
    """The orthonormal DCT-II of every full 8x8 block: float64[n_blocks, 8, 8] (v, u).

    SciPy's FFT-based transform leaves rounding residue (~1e-13) where the exact coefficient
    is 0 (a flat block); residue below 1e-12 of the block's scale is set to the exact 0 so that
    "0.0 when the sum is 0" means what it says.
    """
    g = np.asarray(gray, np.float64)
    h, w = g.shape
    blocks = []
    for y in range(0, h - h % 8, 8):
        for x in range(0, w - w % 8, 8):
            block = g[y:y + 8, x:x + 8]
            coef = dctn(block, type=2, norm="ortho")
            scale = max(1.0, float(np.abs(block).max())) if np.isfinite(block).all() else 1.0
            coef[np.abs(coef) < 1e-12 * scale] = 0.0
            blocks.append(coef)
    return np.array(blocks).reshape(-1, 8, 8)


AC_MASK = np.ones((8, 8), bool)
AC_MASK[0, 0] = False
HF_MASK = np.add.outer(np.arange(8), np.arange(8)) >= 8


def dct_stats(gray: np.ndarray, *, zero_threshold: float = 0.5) -> np.ndarray:
    """[dct_dc_mean, dct_dc_std, dct_ac_mean_abs, dct_hf_ratio, dct_ac_zero_frac]."""
    g = np.asarray(gray)
    if g.shape[0] < 8 or g.shape[1] < 8:
        return np.full(5, NAN)
    coef = dct_coefficients(g)
    dc = coef[:, 0, 0]
    ac = coef[:, AC_MASK]
    ac_sq_total = np.sum(ac ** 2)
    hf = np.sum(coef[:, HF_MASK] ** 2)
    hf_ratio = 0.0 if ac_sq_total == 0 else hf / ac_sq_total
    zero_frac = NAN if np.isnan(ac).any() else np.mean(np.abs(ac) < zero_threshold)
    return np.array([dc.mean(), dc.std(), np.mean(np.abs(ac)), hf_ratio, zero_frac])


def blockiness(gray: np.ndarray) -> float:
    """(b + 1e-6) / (i + 1e-6), pooled over horizontal and vertical neighbour pairs."""
    g = np.asarray(gray, np.float64)
    h, w = g.shape
    boundary, other = [], []
    for x in range(w - 1):  # horizontal pairs (x, x+1), every row
        diffs = np.abs(g[:, x + 1] - g[:, x])
        (boundary if x % 8 == 7 else other).extend(diffs.tolist())
    for y in range(h - 1):  # vertical pairs (y, y+1), every column
        diffs = np.abs(g[y + 1, :] - g[y, :])
        (boundary if y % 8 == 7 else other).extend(diffs.tolist())
    if not boundary or not other:
        return NAN
    return (np.mean(boundary) + 1e-6) / (np.mean(other) + 1e-6)


def frame_features(gray: np.ndarray) -> np.ndarray:
    """The 12 features in ``FEATURE_NAMES`` order."""
    noise = noise_residual(gray)
    sharp = sharpness(gray)
    return np.concatenate([noise, dct_stats(gray), sharp, [blockiness(gray)]])


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, float64[H, W]."""
    f = np.asarray(rgb, np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
