"""The blocked DCT pass: orthonormal 8x8 DCT-II of every full block, and its statistics.

The 1-D transform is the even/odd butterfly of the DCT-II matrix (the orthonormal basis
``B[u, x] = c(u) cos(pi (2x + 1) u / 16)``, precomputed as the constants below): 8 sums and
differences, then 22 multiplications instead of 64. Because an AC output is built from
differences of inputs, a flat block gives AC coefficients that are exactly 0, as in exact
arithmetic. The 2-D transform is the 1-D transform of the rows, then of the columns.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .config import JIT

NAN = math.nan

_C = [math.cos(k * math.pi / 16.0) for k in range(8)]
C0 = math.sqrt(1.0 / 8.0)          # c(0), the DC scale
H = 0.5                             # c(u) for u > 0
C1, C2, C3, C4, C5, C6, C7 = (H * c for c in _C[1:])


def dct_basis() -> np.ndarray:
    """The 8x8 orthonormal DCT-II matrix B (rows u, columns x): ``X = B @ x``."""
    u = np.arange(8)[:, None]
    x = np.arange(8)[None, :]
    b = np.cos(np.pi * (2 * x + 1) * u / 16.0) * 0.5
    b[0] = C0
    return b


@numba.jit(**JIT)
def dct8(x0, x1, x2, x3, x4, x5, x6, x7):
    """Orthonormal 1-D DCT-II of 8 values, by the even/odd butterfly."""
    s0 = x0 + x7
    s1 = x1 + x6
    s2 = x2 + x5
    s3 = x3 + x4
    d0 = x0 - x7
    d1 = x1 - x6
    d2 = x2 - x5
    d3 = x3 - x4
    e0 = s0 + s3
    e1 = s1 + s2
    f0 = s0 - s3
    f1 = s1 - s2
    y0 = C0 * (e0 + e1)
    y4 = C4 * (e0 - e1)
    y2 = C2 * f0 + C6 * f1
    y6 = C6 * f0 - C2 * f1
    y1 = C1 * d0 + C3 * d1 + C5 * d2 + C7 * d3
    y3 = C3 * d0 - C7 * d1 - C1 * d2 - C5 * d3
    y5 = C5 * d0 - C1 * d1 + C7 * d2 + C3 * d3
    y7 = C7 * d0 - C5 * d1 + C3 * d2 - C1 * d3
    return y0, y1, y2, y3, y4, y5, y6, y7


# Layout of the output of ``dct_pass``.
DC_MEAN, DC_STD, AC_MEAN_ABS, HF_RATIO, AC_ZERO_FRAC = range(5)
N_OUT = 5


@numba.jit(**JIT)
def _block(a, y0, x0, t, coef):
    """The 2-D DCT of the block at (y0, x0) into ``coef[v, u]`` (``t`` is scratch)."""
    for y in range(8):
        r = a[y0 + y]
        (t[0, y], t[1, y], t[2, y], t[3, y],
         t[4, y], t[5, y], t[6, y], t[7, y]) = dct8(
            1.0 * r[x0], 1.0 * r[x0 + 1], 1.0 * r[x0 + 2], 1.0 * r[x0 + 3],
            1.0 * r[x0 + 4], 1.0 * r[x0 + 5], 1.0 * r[x0 + 6], 1.0 * r[x0 + 7])
    for u in range(8):
        c = t[u]
        (coef[0, u], coef[1, u], coef[2, u], coef[3, u],
         coef[4, u], coef[5, u], coef[6, u], coef[7, u]) = dct8(
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])


@numba.jit(**JIT)
def dct_pass(a, out):
    """Fill ``out[:5]`` with the DCT statistics of the 2-D C-contiguous frame ``a``."""
    h, w = a.shape
    nby = h // 8
    nbx = w // 8
    if nby == 0 or nbx == 0:
        for k in range(N_OUT):
            out[k] = NAN
        return
    t = np.empty((8, 8))
    coef = np.empty((8, 8))
    dc = np.empty(nby * nbx)
    ac_abs = 0.0
    ac_sq = 0.0
    hf_sq = 0.0
    zeros = 0
    k = 0
    for by in range(nby):
        for bx in range(nbx):
            _block(a, by * 8, bx * 8, t, coef)
            dc[k] = coef[0, 0]
            k += 1
            coef[0, 0] = 0.0
            for v in range(8):
                for u in range(8):
                    c = coef[v, u]
                    ac_abs += abs(c)
                    sq = c * c
                    ac_sq += sq
                    if u + v >= 8:
                        hf_sq += sq
                    if abs(c) < 0.5:
                        zeros += 1
            zeros -= 1  # the DC slot, set to 0 above
    n = nby * nbx
    mean = 0.0
    for k in range(n):
        mean += dc[k]
    mean /= n
    var = 0.0
    for k in range(n):
        d = dc[k] - mean
        var += d * d
    out[DC_MEAN] = mean
    out[DC_STD] = math.sqrt(var / n)
    out[AC_MEAN_ABS] = ac_abs / (63 * n)
    out[HF_RATIO] = 0.0 if ac_sq == 0.0 else hf_sq / ac_sq
    out[AC_ZERO_FRAC] = NAN if math.isnan(ac_abs) else zeros / (63.0 * n)
