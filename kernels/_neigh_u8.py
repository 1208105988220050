"""The fused neighbourhood pass for uint8 frames, in integer arithmetic.

For uint8 input every filter output is an integer: the high-pass residual R in [-2040, 2040],
the Laplacian L in [-1020, 1020], the Sobel gx, gy in [-1020, 1020], so gx^2 + gy^2 <=
2,080,800. They are computed in 32-bit integer lanes (eight per AVX2 register) straight from
the uint8 rows, and their power sums are exact: per chunk of at most ``CHUNK`` outputs in
int32 (512 * 2040^2 < 2^31), per frame in int64. Only three quantities leave the integers:

* R^3 and R^4 for the kurtosis: ``d = R - K`` with an integer shift K (the previous row's mean,
  rounded) is exact, and so are d^3 and d^4 as float64 (|d|^4 <= 2.8e14 < 2^53); the row's
  central sums are merged pairwise (``_moments``) as in the float path.
* the Sobel magnitude M = sqrt(gx^2 + gy^2): gx^2 + gy^2 < 2^24 is exact in float32 and the
  float32 square root is correctly rounded (relative error <= 6e-8); its shifted power sums
  are accumulated in float64 and merged like R's, so a constant M has a zero spread.
* the Laplacian's variance, from its exact int64 power sums (``_int_m2``).

The blockiness differences |x[i, j+1] - x[i, j]| and |x[i, j] - x[i-1, j]| are integer sums too.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._moments import STATE_SIZE, central_from_shifted, merge
from ._neighbourhood import N_OUT
from .config import JIT

NAN = math.nan
CHUNK = 512      # outputs per int32 accumulation: 512 * 2040^2 < 2^31


@numba.jit(**JIT)
def _chunk(a0, a1, a2, kr, km, bd, bm):
    """Sums over the ``len(a0) - 2`` outputs of the rows a0, a1, a2 (uint8), ints exact.

    Returns sum R, sum R^2, sum |R|, sum L, sum L^2, sum (gx^2 + gy^2) (int32, exact) and
    sum (R-kr)^3, sum (R-kr)^4, sum (M-km), sum (M-km)^2 (float64).
    """
    s_r = np.int32(0)
    s_r2 = np.int32(0)
    s_ra = np.int32(0)
    s_l = np.int32(0)
    s_l2 = np.int32(0)
    s_g2 = np.int32(0)
    f3 = 0.0
    f4 = 0.0
    m1 = 0.0
    m2 = 0.0
    two = np.float32(2.0)
    four = np.float32(4.0)
    eight = np.float32(8.0)
    kr32 = np.float32(kr)
    for j in range(a0.shape[0] - 2):
        # float32 holds every integer below 2^24 exactly: all of these are exact
        p0 = np.float32(a0[j])
        p1 = np.float32(a0[j + 1])
        p2 = np.float32(a0[j + 2])
        q0 = np.float32(a1[j])
        q1 = np.float32(a1[j + 1])
        q2 = np.float32(a1[j + 2])
        t0 = np.float32(a2[j])
        t1 = np.float32(a2[j + 1])
        t2 = np.float32(a2[j + 2])
        r = eight * q1 - ((p0 + p1 + p2) + (q0 + q2) + (t0 + t1 + t2))
        lap = (p1 + t1) + (q0 + q2) - four * q1
        gx = (p2 - p0) + two * (q2 - q0) + (t2 - t0)
        gy = (t0 - p0) + two * (t1 - p1) + (t2 - p2)
        g2 = gx * gx + gy * gy
        s_r = np.int32(s_r + np.int32(r))
        s_r2 = np.int32(s_r2 + np.int32(r * r))
        s_ra = np.int32(s_ra + np.int32(abs(r)))
        s_l = np.int32(s_l + np.int32(lap))
        s_l2 = np.int32(s_l2 + np.int32(lap * lap))
        s_g2 = np.int32(s_g2 + np.int32(g2))
        bd[j] = r - kr32
        bm[j] = math.sqrt(g2)
    for j in range(a0.shape[0] - 2):
        d = np.float64(bd[j])
        d2 = d * d
        f3 += d2 * d
        f4 += d2 * d2
        f = np.float64(bm[j]) - km
        m1 += f
        m2 += f * f
    return s_r, s_r2, s_ra, s_l, s_l2, s_g2, f3, f4, m1, m2


@numba.jit(**JIT)
def _block_row(row, prev, wb):
    """Blockiness sums of one uint8 row: horizontal |row[x+1]-row[x]| split by ``wb`` (0/1)
    into (boundary, other), and the vertical sum |row[x] - prev[x]|; exact int64."""
    w = row.shape[0]
    b = np.int32(0)
    o = np.int32(0)
    for x in range(w - 1):
        d = np.int32(abs(np.int32(row[x + 1]) - np.int32(row[x])))
        bd = np.int32(d * wb[x])
        b = np.int32(b + bd)
        o = np.int32(o + d - bd)
    v = np.int32(0)
    for x in range(w):
        v = np.int32(v + abs(np.int32(row[x]) - np.int32(prev[x])))
    return np.int64(b), np.int64(o), np.int64(v)


@numba.jit(**JIT)
def _int_m2(n, s1, s2):
    """``sum (x - mean)^2`` of n integers from their exact int64 sums s1, s2, without
    cancellation: with s1 = q n + r (0 <= r < n), it is (s2 - q (s1 + r)) - r^2 / n."""
    q = s1 // n
    r = s1 - q * n
    i = s2 - q * (s1 + r)
    if i < (1 << 62) // n:          # n i - r^2 fits int64: one rounding in all
        return (n * i - r * r) / n
    return i - (r * r) / n


@numba.jit(**JIT)
def neighbourhood_u8(a, out):
    """Fill ``out[:7]`` (``_neighbourhood`` layout) from the 2-D C-contiguous uint8 frame ``a``."""
    h, w = a.shape
    wb = np.zeros(w, np.int32)
    for x in range(7, w - 1, 8):
        wb[x] = 1
    b_sum = np.int64(0)
    o_sum = np.int64(0)
    for i in range(h):
        hb, ho, vs = _block_row(a[i], a[i - 1] if i >= 1 else a[i], wb)
        b_sum += hb
        o_sum += ho
        if i >= 1:
            if (i - 1) % 8 == 7:
                b_sum += vs
            else:
                o_sum += vs
    nb = (w - 1) // 8 * h + (h - 1) // 8 * w
    no = (w - 1) * h + (h - 1) * w - nb
    out[6] = NAN if nb == 0 or no == 0 else (b_sum / nb + 1e-6) / (o_sum / no + 1e-6)
    n = w - 2
    if h < 3 or n < 1:
        for k in range(6):
            out[k] = NAN
        return
    r_state = np.zeros(STATE_SIZE)
    m_state = np.zeros(STATE_SIZE)
    r1 = np.int64(0)
    r2 = np.int64(0)
    ra = np.int64(0)
    l1 = np.int64(0)
    l2 = np.int64(0)
    g2 = np.int64(0)
    kr = np.int64(0)
    km = 0.0
    bd = np.empty(CHUNK, np.float32)
    bm = np.empty(CHUNK, np.float32)
    for i in range(2, h):
        a0, a1, a2 = a[i - 2], a[i - 1], a[i]
        if i == 2:                      # first row: shift by its first outputs
            o = _chunk(a0[:3], a1[:3], a2[:3], 0, 0.0, bd, bm)
            kr = np.int64(o[0])
            km = o[8]
        else:                           # then by the previous row's means
            kr = np.int64(round(r_state[5]))
            km = m_state[5]
        sr1 = np.int64(0)
        sr2 = np.int64(0)
        f3 = 0.0
        f4 = 0.0
        fm1 = 0.0
        fm2 = 0.0
        for j0 in range(0, n, CHUNK):
            j1 = min(j0 + CHUNK, n) + 2
            c = _chunk(a0[j0:j1], a1[j0:j1], a2[j0:j1], kr, km, bd, bm)
            sr1 += c[0]
            sr2 += c[1]
            ra += c[2]
            l1 += c[3]
            l2 += c[4]
            g2 += c[5]
            f3 += c[6]
            f4 += c[7]
            fm1 += c[8]
            fm2 += c[9]
        r1 += sr1
        r2 += sr2
        # shifted sums of R from the exact ones: sum (R - kr) and sum (R - kr)^2
        d1 = sr1 - n * kr
        d2 = sr2 - 2 * kr * sr1 + n * kr * kr
        merge(r_state, *central_from_shifted(n, kr, 1.0 * d1, 1.0 * d2, f3, f4))
        merge(m_state, *central_from_shifted(n, km, fm1, fm2, 0.0, 0.0))
    n_px = np.int64(n) * (h - 2)
    m2 = _int_m2(n_px, r1, r2) / n_px
    out[0] = r2 / n_px
    out[1] = ra / n_px
    out[2] = 0.0 if m2 == 0.0 else (r_state[4] / n_px) / (m2 * m2) - 3.0
    out[3] = _int_m2(n_px, l1, l2) / n_px
    out[4] = m_state[1]
    out[5] = math.sqrt(m_state[2] / n_px)


assert N_OUT == 7
