"""The blocked DCT pass: orthonormal 8x8 DCT-II of every full block, and its statistics.

The 1-D transform is the even/odd butterfly of the DCT-II matrix (the orthonormal basis
``B[u, x] = c(u) cos(pi (2x + 1) u / 16)``, precomputed as the constants below): 8 sums and
differences, then 22 multiplications instead of 64. Because an AC output is built from
differences of inputs, a flat block gives AC coefficients that are exactly 0, as in exact
arithmetic. The 2-D transform is the 1-D transform of the columns, then of the rows.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._lanes import lane_moments12, lane_sum
from .config import JIT
from .table import FRAME

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


# |AC| < 0.5 as in exact arithmetic: a coefficient that is exactly 0.5 (AC(4, 0), AC(0, 4) and
# AC(4, 4) of an integer block are multiples of 1/8) comes out of any floating-point DCT as
# 0.5 plus or minus an ulp; the margin counts it as not below 0.5 whatever the rounding.
ZERO_LIMIT = 0.5 - 1e-9

# Where both DCT passes write (kernels/table.py): the group dct_stats.
DC_MEAN, DC_STD, AC_MEAN_ABS, HF_RATIO, AC_ZERO_FRAC = FRAME.positions(
    "dct_dc_mean", "dct_dc_std", "dct_ac_mean_abs", "dct_hf_ratio", "dct_ac_zero_frac")
GROUPS = ("dct_stats",)


@numba.jit(**JIT)
def _vertical(a, y0, col):
    """1-D DCT down the 8 rows ``a[y0:y0+8]`` of every column: ``col[v, x]``."""
    for x in range(col.shape[1]):
        (col[0, x], col[1, x], col[2, x], col[3, x],
         col[4, x], col[5, x], col[6, x], col[7, x]) = dct8(
            1.0 * a[y0, x], 1.0 * a[y0 + 1, x], 1.0 * a[y0 + 2, x], 1.0 * a[y0 + 3, x],
            1.0 * a[y0 + 4, x], 1.0 * a[y0 + 5, x], 1.0 * a[y0 + 6, x], 1.0 * a[y0 + 7, x])


@numba.jit(**JIT)
def _acc(c, s):
    """``s`` = (sum abs, sum square, count of abs < 0.5) updated with coefficient ``c``."""
    m = abs(c)
    return s[0] + m, s[1] + c * c, s[2] + (1.0 if m < ZERO_LIMIT else 0.0)


@numba.jit(**JIT)
def _horizontal(row, sums, dc):
    """1-D DCT along every 8-wide block of one frequency row v of ``col``.

    Adds the statistics of coefficient (v, u) to ``sums[:, u]``; stores the u = 0 outputs
    in ``dc`` (the DC coefficients when v = 0).
    """
    z = (0.0, 0.0, 0.0)
    s0, s1, s2, s3, s4, s5, s6, s7 = z, z, z, z, z, z, z, z
    for bx in range(row.shape[0] // 8):
        x0 = 8 * bx
        y0, y1, y2, y3, y4, y5, y6, y7 = dct8(
            row[x0], row[x0 + 1], row[x0 + 2], row[x0 + 3],
            row[x0 + 4], row[x0 + 5], row[x0 + 6], row[x0 + 7])
        dc[bx] = y0
        s0 = _acc(y0, s0)
        s1 = _acc(y1, s1)
        s2 = _acc(y2, s2)
        s3 = _acc(y3, s3)
        s4 = _acc(y4, s4)
        s5 = _acc(y5, s5)
        s6 = _acc(y6, s6)
        s7 = _acc(y7, s7)
    for u, s in enumerate((s0, s1, s2, s3, s4, s5, s6, s7)):
        sums[0, u] += s[0]
        sums[1, u] += s[1]
        sums[2, u] += s[2]


# ---------------------------------------------------------------- shared with _dct_fast

@numba.jit(**JIT)
def too_small(h, w, out):
    """True, with the DCT features set to NaN, when an h x w frame holds no full 8x8 block."""
    if h >= 8 and w >= 8:
        return False
    out[DC_MEAN] = out[DC_STD] = out[AC_MEAN_ABS] = out[HF_RATIO] = out[AC_ZERO_FRAC] = NAN
    return True


@numba.jit(**JIT)
def pool(s):
    """``(AC total, high-frequency total)`` of per-coefficient sums ``s[i, j]`` (i, j the two
    frequency indices in either order): all but (0, 0), and those with i + j >= 8."""
    ac = 0.0
    hf = 0.0
    for i in range(8):
        for j in range(8):
            if i + j == 0:
                continue
            ac += s[i, j]
            if i + j >= 8:
                hf += s[i, j]
    return ac, hf


@numba.jit(**JIT)
def summarise(dc, n, ac_abs, ac_sq, hf_sq, zeros, out):
    """The five DCT features from the ``n`` DC coefficients and the pooled AC sums (both passes);
    the DC mean and spread are sums in the fixed lane order of ``_lanes``."""
    mean = lane_sum(dc, 0, n) / n
    var = lane_moments12(dc, 0, n, mean)[1]
    out[DC_MEAN] = mean
    out[DC_STD] = math.sqrt(var / n)
    out[AC_MEAN_ABS] = ac_abs / (63 * n)
    out[HF_RATIO] = 0.0 if ac_sq == 0.0 else hf_sq / ac_sq
    out[AC_ZERO_FRAC] = NAN if math.isnan(ac_abs) else zeros / (63.0 * n)


@numba.jit(**JIT)
def dct_pass(a, out):
    """Write the DCT statistics of the 2-D C-contiguous frame ``a`` into their positions in ``out``.

    Band by band (8 rows): the vertical 1-D DCT of every column (vectorised across the
    columns), then the horizontal 1-D DCT of each 8-wide block of each frequency row, whose
    statistics are kept per frequency (v, u) so that the DC term never mixes with the AC sums.
    """
    h, w = a.shape
    if too_small(h, w, out):
        return
    nby = h // 8
    nbx = w // 8
    nx = nbx * 8
    col = np.empty((8, nx))
    sums = np.zeros((8, 3, 8))       # [v, (abs, square, zero count), u]
    dc = np.empty(nby * nbx)
    scratch = np.empty(nbx)
    for by in range(nby):
        _vertical(a, by * 8, col)
        _horizontal(col[0], sums[0], dc[by * nbx:(by + 1) * nbx])
        for v in range(1, 8):
            _horizontal(col[v], sums[v], scratch)
    ac_abs = pool(sums[:, 0, :])[0]
    ac_sq, hf_sq = pool(sums[:, 1, :])
    zeros = pool(sums[:, 2, :])[0]
    summarise(dc, nby * nbx, ac_abs, ac_sq, hf_sq, zeros, out)
