"""The fused neighbourhood pass: noise residual, Laplacian, Sobel and blockiness in one sweep.

One loop over the rows of the frame. Each input row is converted once to float64 into a
ring of three row buffers; with rows ``i-2, i-1, i`` in the ring, the valid-interior outputs
of row ``i-1`` (high-pass R, Laplacian L, Sobel magnitude M) are computed from the shared
column sums of the 3x3 neighbourhood, and the horizontal and vertical neighbour differences
of the rows are added to the blockiness sums. Central moments go through ``_moments``.
For uint8 input every filter output is an exact integer in float64.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._moments import row_moments2, row_moments4
from .config import JIT

NAN = math.nan

# Layout of the output of ``neighbourhood``.
NOISE = slice(0, 3)      # noise_energy, noise_mean_abs, noise_kurtosis
SHARP = slice(3, 6)      # lap_var, grad_mean, grad_std
BLOCK = 6                # blockiness
N_OUT = 7


@numba.jit(**JIT)
def _filter_row(r0, r1, r2, rbuf, lbuf, mbuf, colsum, colsm, coldiff):
    """R, L and M of one interior row from the rows above (r0), at (r1) and below (r2)."""
    w = r1.shape[0]
    for j in range(w):
        colsum[j] = r0[j] + r1[j] + r2[j]
        colsm[j] = r0[j] + 2.0 * r1[j] + r2[j]
        coldiff[j] = r2[j] - r0[j]
    for j in range(w - 2):
        c = r1[j + 1]
        rbuf[j] = 9.0 * c - (colsum[j] + colsum[j + 1] + colsum[j + 2])
        lbuf[j] = (colsum[j + 1] - 5.0 * c) + (r1[j] + r1[j + 2])
        gx = colsm[j + 2] - colsm[j]
        gy = coldiff[j] + 2.0 * coldiff[j + 1] + coldiff[j + 2]
        mbuf[j] = math.sqrt(gx * gx + gy * gy)


@numba.jit(**JIT)
def _abs_diff_sum(x, y, n):
    s = 0.0
    for j in range(n):
        s += abs(x[j] - y[j])
    return s


@numba.jit(**JIT)
def _row_pairs(row, dbuf, sums):
    """Add the horizontal pairs of one row to ``sums`` = [boundary, n_boundary, other, n_other]."""
    w = row.shape[0]
    if w < 2:
        return
    for j in range(w - 1):
        dbuf[j] = abs(row[j + 1] - row[j])
    b = 0.0
    nb = 0
    for j in range(7, w - 1, 8):
        b += dbuf[j]
        dbuf[j] = 0.0
        nb += 1
    o = 0.0
    for j in range(w - 1):
        o += dbuf[j]
    sums[0] += b
    sums[1] += nb
    sums[2] += o
    sums[3] += w - 1 - nb


@numba.jit(**JIT)
def neighbourhood(a, out):
    """Fill ``out[:7]`` (see NOISE, SHARP, BLOCK) from the 2-D C-contiguous frame ``a``."""
    h, w = a.shape
    ring = np.empty((3, w))
    nw = max(w - 2, 1)
    rbuf = np.empty(nw)
    lbuf = np.empty(nw)
    mbuf = np.empty(nw)
    colsum = np.empty(w)
    colsm = np.empty(w)
    coldiff = np.empty(w)
    dbuf = np.empty(w)
    r_state = np.zeros(5)
    l_state = np.zeros(5)
    m_state = np.zeros(5)
    pairs = np.zeros(4)  # boundary sum, count, other sum, count
    r_sq = 0.0
    r_abs = 0.0
    filtered = h >= 3 and w >= 3
    for i in range(h):
        cur = ring[i % 3]
        for j in range(w):
            cur[j] = a[i, j]
        _row_pairs(cur, dbuf, pairs)
        if i >= 1:
            prev = ring[(i - 1) % 3]
            s = _abs_diff_sum(cur, prev, w)
            k = 0 if (i - 1) % 8 == 7 else 2
            pairs[k] += s
            pairs[k + 1] += w
        if filtered and i >= 2:
            _filter_row(ring[(i - 2) % 3], ring[(i - 1) % 3], cur,
                        rbuf, lbuf, mbuf, colsum, colsm, coldiff)
            n = w - 2
            for j in range(n):
                r = rbuf[j]
                r_sq += r * r
                r_abs += abs(r)
            row_moments4(rbuf, n, r_state)
            row_moments2(lbuf, n, l_state)
            row_moments2(mbuf, n, m_state)
    if filtered:
        n_px = r_state[0]
        m2 = r_state[2] / n_px
        out[0] = r_sq / n_px
        out[1] = r_abs / n_px
        out[2] = 0.0 if m2 == 0.0 else (r_state[4] / n_px) / (m2 * m2) - 3.0
        out[3] = l_state[2] / n_px
        out[4] = m_state[1]
        out[5] = math.sqrt(m_state[2] / n_px)
    else:
        for k in range(6):
            out[k] = NAN
    if pairs[1] > 0 and pairs[3] > 0:
        out[6] = (pairs[0] / pairs[1] + 1e-6) / (pairs[2] / pairs[3] + 1e-6)
    else:
        out[6] = NAN
