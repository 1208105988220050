"""The 12 per-frame features without Numba: vectorised NumPy / SciPy / OpenCV.

This is how a careful engineer writes docs/FEATURES.md without a JIT: OpenCV filters (SIMD,
float64 so that the numbers agree with the kernels), one reshape of the frame into 8x8
blocks and the DCT as two matrix products with the orthonormal basis, NumPy reductions.
``benchmarks/kernels.py`` times it against ``fvcflow.kernels.frame_features`` and checks that
the two agree.
"""

from __future__ import annotations

import cv2
import numpy as np

from fvcflow.kernels import FRAME

HIGH_PASS = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float64)
_U = np.arange(8)[:, None]
DCT_BASIS = np.cos(np.pi * (2 * np.arange(8)[None, :] + 1) * _U / 16.0) * 0.5
DCT_BASIS[0] = np.sqrt(1.0 / 8.0)
ZERO_LIMIT = 0.5 - 1e-9      # |AC| < 0.5, exact ties at 0.5 not below (as fvcflow.kernels)
HF_WEIGHT = (np.add.outer(np.arange(8), np.arange(8)) >= 8).astype(np.float64).ravel()


def _interior(img: np.ndarray) -> np.ndarray:
    return img[1:-1, 1:-1]


def noise_and_sharpness(g: np.ndarray) -> list[float]:
    """uint8 frames are filtered in float32 (exact: every output is a small integer)."""
    depth = cv2.CV_32F if g.dtype == np.uint8 else cv2.CV_64F
    border = cv2.BORDER_REPLICATE           # the border is cut off: valid interior only
    r = _interior(cv2.filter2D(g, depth, HIGH_PASS, borderType=border)).astype(np.float64)
    d = r - r.mean()
    d2 = d * d
    m2 = d2.mean()
    kurt = 0.0 if m2 == 0 else (d2 * d2).mean() / m2 ** 2 - 3.0
    lap = _interior(cv2.Laplacian(g, depth, ksize=1, borderType=border))
    gx = _interior(cv2.Sobel(g, depth, 1, 0, ksize=3, borderType=border)).astype(np.float64)
    gy = _interior(cv2.Sobel(g, depth, 0, 1, ksize=3, borderType=border)).astype(np.float64)
    mag = cv2.magnitude(gx, gy)
    return [float(np.mean(r * r)), float(np.abs(r).mean()), kurt,
            float(lap.var(dtype=np.float64)), float(mag.mean()), float(mag.std())]


def dct_stats(g: np.ndarray, zero_threshold: float = ZERO_LIMIT) -> list[float]:
    h, w = g.shape
    nby, nbx = h // 8, w // 8
    blocks = g[: nby * 8, : nbx * 8].reshape(nby, 8, nbx, 8).swapaxes(1, 2).reshape(-1, 8)
    rows = blocks @ DCT_BASIS.T                                  # every block row, one GEMM
    coef = rows.reshape(-1, 8, 8).swapaxes(1, 2).reshape(-1, 8) @ DCT_BASIS.T
    coef = coef.reshape(-1, 64)                                  # (n_blocks, u * 8 + v)
    n = coef.shape[0]
    dc = coef[:, 0].copy()
    coef[:, 0] = 0.0                                             # AC only from here on
    mag = np.abs(coef)
    sq = coef * coef
    total = sq.sum()
    hf = (sq @ HF_WEIGHT).sum()
    zero_frac = (np.count_nonzero(mag < zero_threshold) - n) / (63 * n)
    return [float(dc.mean()), float(dc.std()), float(mag.sum() / (63 * n)),
            0.0 if total == 0 else float(hf / total), float(zero_frac)]


def blockiness(g: np.ndarray) -> float:
    dh = np.abs(np.diff(g, axis=1))
    dv = np.abs(np.diff(g, axis=0))
    b_sum = dh[:, 7::8].sum() + dv[7::8].sum()
    b_n = dh[:, 7::8].size + dv[7::8].size
    o_sum = dh.sum() + dv.sum() - b_sum
    o_n = dh.size + dv.size - b_n
    return float((b_sum / b_n + 1e-6) / (o_sum / o_n + 1e-6))


def frame_features(gray: np.ndarray) -> np.ndarray:
    """The 12 features of one uint8 or float64 frame (H, W >= 9), in ``FEATURE_NAMES`` order
    (each group's values placed by the kernels' feature table)."""
    g = gray.astype(np.float64)
    values = dict(zip(FRAME.group_names("noise_residual") + FRAME.group_names("sharpness"),
                      noise_and_sharpness(gray)))
    values.update(zip(FRAME.group_names("dct_stats"), dct_stats(g)))
    values["blockiness"] = blockiness(g)
    return np.array([values[name] for name in FRAME.names])
