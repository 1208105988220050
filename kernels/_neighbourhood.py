"""The fused neighbourhood pass: noise residual, Laplacian, Sobel and blockiness in one sweep.

One loop over the rows of the frame. Each input row is widened once to float64 into a ring
of three rows, and its horizontal and vertical neighbour differences go to the blockiness
sums. For each interior row, a single vectorisable loop over the ring computes
the high-pass residual R, the Laplacian L and the Sobel magnitude M, and accumulates their
power sums shifted by a per-row reference value (the previous row's mean, or the row's first
output): ``sum (x - K)^k``. The row's central sums follow exactly from the shifted ones
(``_moments.central_from_shifted``) and are merged into the frame totals with the pairwise
update of ``_moments.merge``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._moments import STATE_SIZE, central_from_shifted, merge
from .config import JIT
from .table import FRAME

NAN = math.nan

# Where the pass writes (kernels/table.py): the groups noise_residual, sharpness, blockiness.
NOISE_ENERGY, NOISE_MEAN_ABS, NOISE_KURTOSIS, LAP_VAR, GRAD_MEAN, GRAD_STD, BLOCKINESS = FRAME.positions(
    "noise_energy", "noise_mean_abs", "noise_kurtosis", "lap_var", "grad_mean", "grad_std", "blockiness")
GROUPS = ("noise_residual", "sharpness", "blockiness")


# ---------------------------------------------------------------- shared with _neigh_u8

@numba.jit(**JIT)
def filters(p0, p1, p2, q0, q1, q2, t0, t1, t2, two, four, eight):
    """R, L, gx, gy of the 3x3 neighbourhood with rows (p0 p1 p2), (q0 q1 q2), (t0 t1 t2).

    The constants come in as arguments so that float32 rows stay float32 (the uint8 pass) and
    float64 rows float64.
    """
    r = eight * q1 - ((p0 + p1 + p2) + (q0 + q2) + (t0 + t1 + t2))
    lap = (p1 + t1) + (q0 + q2) - four * q1
    gx = (p2 - p0) + two * (q2 - q0) + (t2 - t0)
    gy = (t0 - p0) + two * (t1 - p1) + (t2 - p2)
    return r, lap, gx, gy


@numba.jit(**JIT)
def mark_boundaries(wb):
    """``wb[x] = 1`` where the horizontal pair (x, x+1) crosses an 8x8 block boundary."""
    for x in range(7, wb.shape[0] - 1, 8):
        wb[x] = 1.0


@numba.jit(**JIT)
def add_vertical(i, vs, b_sum, o_sum):
    """Add the vertical differences ``vs`` of rows i-1, i to the boundary or the other sum."""
    if i >= 1:
        if (i - 1) % 8 == 7:
            b_sum += vs
        else:
            o_sum += vs
    return b_sum, o_sum


@numba.jit(**JIT)
def write_blockiness(out, b_sum, o_sum, h, w):
    """``out[BLOCKINESS]`` from the pooled boundary and other sums of an h x w frame."""
    nb = (w - 1) // 8 * h + (h - 1) // 8 * w
    no = (w - 1) * h + (h - 1) * w - nb
    out[BLOCKINESS] = NAN if nb == 0 or no == 0 else (b_sum / nb + 1e-6) / (o_sum / no + 1e-6)


@numba.jit(**JIT)
def write_moments(out, h, w, n_px, r_sq, r_abs, r_m2, r_m4, l_m2, m_mean, m_m2):
    """The noise and sharpness features from the pooled sums over ``n_px`` outputs: sum R^2,
    sum |R|, the central sums M2, M4 of R and M2 of L, the mean and M2 of M. NaN for a frame
    without a valid interior (h < 3 or w < 3)."""
    if h < 3 or w < 3:
        out[NOISE_ENERGY] = out[NOISE_MEAN_ABS] = out[NOISE_KURTOSIS] = NAN
        out[LAP_VAR] = out[GRAD_MEAN] = out[GRAD_STD] = NAN
        return
    m2 = r_m2 / n_px
    out[NOISE_ENERGY] = r_sq / n_px
    out[NOISE_MEAN_ABS] = r_abs / n_px
    out[NOISE_KURTOSIS] = 0.0 if m2 == 0.0 else (r_m4 / n_px) / (m2 * m2) - 3.0
    out[LAP_VAR] = l_m2 / n_px
    out[GRAD_MEAN] = m_mean
    out[GRAD_STD] = math.sqrt(m_m2 / n_px)


# ---------------------------------------------------------------- the float pass

@numba.jit(**JIT)
def _filters_at(r0, r1, r2, j):
    """R, L, gx, gy of the 3x3 neighbourhood whose top-left corner is column ``j``."""
    return filters(1.0 * r0[j], 1.0 * r0[j + 1], 1.0 * r0[j + 2], 1.0 * r1[j], 1.0 * r1[j + 1],
                   1.0 * r1[j + 2], 1.0 * r2[j], 1.0 * r2[j + 1], 1.0 * r2[j + 2], 2.0, 4.0, 8.0)


@numba.jit(**JIT)
def _filter_row(r0, r1, r2, kr, kl, km):
    """Power sums of R (raw and shifted by kr), L (shifted by kl), M (shifted by km) of one row."""
    n = r1.shape[0] - 2
    r_sq = 0.0
    r_abs = 0.0
    r1s = 0.0
    r2s = 0.0
    r3s = 0.0
    r4s = 0.0
    l1s = 0.0
    l2s = 0.0
    m1s = 0.0
    m2s = 0.0
    for j in range(n):
        r, lap, gx, gy = _filters_at(r0, r1, r2, j)
        r_sq += r * r
        r_abs += abs(r)
        d = r - kr
        d2 = d * d
        r1s += d
        r2s += d2
        r3s += d2 * d
        r4s += d2 * d2
        e = lap - kl
        l1s += e
        l2s += e * e
        f = math.sqrt(gx * gx + gy * gy) - km
        m1s += f
        m2s += f * f
    return r_sq, r_abs, r1s, r2s, r3s, r4s, l1s, l2s, m1s, m2s


@numba.jit(**JIT)
def _load_row(src, dst, prev, wb):
    """Widen ``src`` into ``dst`` (float64) and sum its neighbour differences for blockiness.

    Returns the sums of |dst[x+1] - dst[x]| over boundary pairs (``wb[x] = 1``) and over the
    other pairs, and of |dst[x] - prev[x]| (the vertical pairs with the row above).
    """
    w = src.shape[0]
    b = 0.0
    o = 0.0
    v = 0.0
    for x in range(w - 1):
        c = 1.0 * src[x]
        dst[x] = c
        d = abs(1.0 * src[x + 1] - c)
        bd = d * wb[x]
        b += bd
        o += d - bd
        v += abs(c - prev[x])
    c = 1.0 * src[w - 1]
    dst[w - 1] = c
    v += abs(c - prev[w - 1])
    return b, o, v


@numba.jit(**JIT)
def neighbourhood(a, out):
    """Write the noise, sharpness and blockiness features of the 2-D C-contiguous frame ``a``
    into their positions in ``out``."""
    h, w = a.shape
    wb = np.zeros(w)
    mark_boundaries(wb)
    r_state = np.zeros(STATE_SIZE)
    l_state = np.zeros(STATE_SIZE)
    m_state = np.zeros(STATE_SIZE)
    r_sq = 0.0
    r_abs = 0.0
    b_sum = 0.0
    o_sum = 0.0
    n = w - 2
    ring = np.zeros((3, w))             # rows i-2, i-1, i as float64
    for i in range(h):
        hb, ho, vs = _load_row(a[i], ring[i % 3], ring[(i + 2) % 3], wb)
        b_sum, o_sum = add_vertical(i, vs, b_sum + hb, o_sum + ho)
        if i >= 2 and n >= 1:
            r0, r1, r2 = ring[(i + 1) % 3], ring[(i + 2) % 3], ring[i % 3]
            if r_state[0] == 0.0:       # first row: shift by its first outputs
                r, lap, gx, gy = _filters_at(r0, r1, r2, 0)
                kr, kl, km = r, lap, math.sqrt(gx * gx + gy * gy)
            else:                       # then by the previous row's means
                kr, kl, km = r_state[5], l_state[5], m_state[5]
            sums = _filter_row(r0, r1, r2, kr, kl, km)
            r_sq += sums[0]
            r_abs += sums[1]
            merge(r_state, *central_from_shifted(n, kr, sums[2], sums[3], sums[4], sums[5]))
            # L and M need only the variance: their M3/M4 slots carry no meaning.
            merge(l_state, *central_from_shifted(n, kl, sums[6], sums[7], 0.0, 0.0))
            merge(m_state, *central_from_shifted(n, km, sums[8], sums[9], 0.0, 0.0))
    write_moments(out, h, w, r_state[0], r_sq, r_abs, r_state[2], r_state[4], l_state[2], m_state[1],
                  m_state[2])
    write_blockiness(out, b_sum, o_sum, h, w)
