"""The fused neighbourhood pass for uint8 frames, exact in integer-valued arithmetic.

For uint8 input every filter output is an integer: the high-pass residual R in [-2040, 2040],
the Laplacian L in [-1020, 1020], the Sobel gx, gy in [-1020, 1020], so gx^2 + gy^2 <=
2,080,800. Each input row is widened once to float32 (a ring of three rows); float32 holds
every integer below 2^24 exactly, so R, L, gx, gy, R^2, L^2 and gx^2 + gy^2 are computed
exactly, eight lanes wide. Their power sums are exact too: per chunk of at most ``CHUNK``
outputs, R, |R| and L in float32 (every partial sum stays below 2^24), R^2 and L^2 in int32
(512 * 2040^2 < 2^31), and everything in int64 per frame. Exact sums are the same in any order
of the additions, so the chunk's loop may be vectorised by reassociation (``JIT_EXACT``) and
still gives the same bits on every machine. Only two quantities leave the integers:

* R^3 and R^4 for the kurtosis: ``d = R - K`` with an integer shift K (the previous row's mean,
  rounded) is an integer, and so are d^3 and d^4 in float64; their sums over a chunk are exact
  too (``_power_sums``: below 2^53, else d^4 by its 24-bit halves), so again in any order. The
  row's central sums are merged pairwise (``_moments``) as in the float path.
* the Sobel magnitude M = sqrt(gx^2 + gy^2): the float32 square root is correctly rounded
  (relative error <= 6e-8). M's power sums are kept per column, down the rows: every column
  adds ``M - K_j`` and its square to its own float64 sums, K_j being the column's first value
  (a loop without reductions, which vectorises without reordering any addition: each column's
  sums add the rows in order). The columns' central sums are then merged pairwise, left to
  right. Shifting by one of the column's own values bounds the cancellation (the central sum
  is at least (K_j - mean)^2), and a constant M has exactly zero spread.

The variances of R and L come from their exact int64 sums (``_int_m2``). The blockiness
differences are integers below 256, summed in int32 chunks exactly like R. The 3x3 filters,
the boundary bookkeeping and the final features are the float pass's (``_neighbourhood``): one
definition of each for both dtypes. Nothing here depends on the machine's vector width.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._moments import STATE_SIZE, central_from_shifted, merge
from ._neighbourhood import add_vertical, filters, mark_boundaries, write_blockiness, write_moments
from .config import JIT, JIT_EXACT

CHUNK = 512      # outputs per int32 accumulation: 512 * 2040^2 < 2^31
TWO53 = float(1 << 53)      # below it, float64 holds every integer
SPLIT = float(1 << 24)      # d^4 (< 2^48) = hi * SPLIT + lo, both halves below 2^24
HALF = 1.0 / SPLIT
CHUNK_B = 8192   # differences per int32 blockiness sum: 8192 * 255 < 2^31


@numba.jit(**JIT_EXACT)
def _chunk(a0, a1, a2, kr, bd, bm):
    """Sums over the ``len(a0) - 2`` (at most CHUNK) outputs of the rows a0, a1, a2.

    The rows hold uint8 values as float32. Every filter output, R^2 and L^2 is an integer
    below 2^24, so float32 computes them exactly, and so are the sums: of R, |R|, L in float32
    (any partial sum of at most CHUNK of them stays below 2^24), of R^2, L^2 in int32; exact in
    any order of the additions, which is why this function may reassociate (``JIT_EXACT``).
    Returns sum R, sum |R|, sum L (float32), sum R^2, sum L^2 (int32); stores R - kr in ``bd``
    and the Sobel magnitude (float32, correctly rounded) in ``bm`` for ``_power_sums`` and
    ``_column_sums``.
    """
    s_r = np.float32(0.0)
    s_ra = np.float32(0.0)
    s_l = np.float32(0.0)
    s_r2 = np.int32(0)
    s_l2 = np.int32(0)
    two = np.float32(2.0)
    four = np.float32(4.0)
    eight = np.float32(8.0)
    for j in range(a0.shape[0] - 2):
        r, lap, gx, gy = filters(a0[j], a0[j + 1], a0[j + 2], a1[j], a1[j + 1], a1[j + 2],
                                 a2[j], a2[j + 1], a2[j + 2], two, four, eight)
        s_r += r
        s_ra += abs(r)
        s_l += lap
        s_r2 = np.int32(s_r2 + np.int32(r * r))
        s_l2 = np.int32(s_l2 + np.int32(lap * lap))
        bd[j] = r - kr
        bm[j] = math.sqrt(gx * gx + gy * gy)
    return s_r, s_ra, s_l, s_r2, s_l2


@numba.jit(**JIT_EXACT)
def _power_sums(bd, m):
    """sum d^3 and sum d^4 of the integers ``d = bd[:m]`` (|d| <= 4080, m <= CHUNK), exact.

    d^3 < 2^36 and d^4 < 2^48 are exact in float64, sum d^3 stays below 2^45, and sum d^4 too
    while it stays below 2^53 (its terms are not negative: it is computed at 2^53 or more exactly
    when it is that large, in any order). Exact sums are the same in any order of the
    additions, hence ``JIT_EXACT``. Beyond 2^53 (a pathological chunk) d^4 is summed again as
    its high and low 24 bits, each sum below 2^33, and the total returned as int64.
    """
    s3 = 0.0
    s4 = 0.0
    for j in range(m):
        d = np.float64(bd[j])
        d2 = d * d
        s3 += d2 * d
        s4 += d2 * d2
    if s4 < TWO53:
        return s3, np.int64(s4)
    hi_sum = 0.0
    lo_sum = 0.0
    for j in range(m):
        d = np.float64(bd[j])
        d4 = (d * d) * (d * d)
        hi = np.floor(d4 * HALF)
        hi_sum += hi
        lo_sum += d4 - hi * SPLIT
    return s3, np.int64(hi_sum) * np.int64(SPLIT) + np.int64(lo_sum)


@numba.jit(**JIT)
def _column_sums(bm, mk, ms1, ms2):
    """Add ``bm[j] - mk[j]`` (float64) and its square to the column sums ``ms1[j]``, ``ms2[j]``."""
    for j in range(ms1.shape[0]):
        e = np.float64(bm[j]) - mk[j]
        ms1[j] += e
        ms2[j] += e * e


@numba.jit(**JIT)
def _magnitudes(a0, a1, a2, mk):
    """The Sobel magnitude of every output of the rows a0, a1, a2 (float32, widened) into ``mk``."""
    two = np.float32(2.0)
    four = np.float32(4.0)
    eight = np.float32(8.0)
    for j in range(a0.shape[0] - 2):
        gx, gy = filters(a0[j], a0[j + 1], a0[j + 2], a1[j], a1[j + 1], a1[j + 2],
                         a2[j], a2[j + 1], a2[j + 2], two, four, eight)[2:]
        mk[j] = np.float64(math.sqrt(gx * gx + gy * gy))


@numba.jit(**JIT)
def _block_sums(row, prev, wb, tail):
    """Sums of |row[x+1] - row[x]| split by ``wb`` into (boundary, other) (the last pair's
    right member from ``tail``, a 1- or 2-element view), and of |row[x] - prev[x]|: integers
    below 256 summed in int32 (exact: at most CHUNK_B of them)."""
    m = row.shape[0]
    v = np.int32(0)
    for x in range(m):
        v += np.int32(abs(row[x] - prev[x]))
    b = np.int32(0)
    o = np.int32(0)
    for x in range(m - 1):
        d = abs(row[x + 1] - row[x])
        bd = d * wb[x]
        b += np.int32(bd)
        o += np.int32(d - bd)
    if tail.shape[0] == 2:              # the pair that straddles the chunk's right end
        d = abs(tail[1] - tail[0])
        bd = d * wb[m - 1]
        b += np.int32(bd)
        o += np.int32(d - bd)
    return b, o, v


@numba.jit(**JIT)
def _load_row(src, dst, prev, wb):
    """Widen the uint8 row ``src`` into ``dst`` (float32) and sum its blockiness differences.

    Returns (boundary, other) sums of the horizontal |src[x+1] - src[x]| (``wb[x]`` 1 at a
    boundary pair, else 0) and the sum of the vertical |src[x] - prev[x]|: exact (integer
    sums per chunk of at most CHUNK_B differences).
    """
    w = src.shape[0]
    for x in range(w):
        dst[x] = src[x]
    b = 0.0
    o = 0.0
    v = 0.0
    for x0 in range(0, w, CHUNK_B):
        x1 = min(x0 + CHUNK_B, w)
        hb, ho, vc = _block_sums(dst[x0:x1], prev[x0:x1], wb[x0:x1], dst[x1 - 1:x1 + 1])
        b += hb
        o += ho
        v += vc
    return b, o, v


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
def _rows_pass(a, ring, wb, out):
    """One sweep over the rows; fills ``out`` as ``neighbourhood_u8`` does."""
    h, w = a.shape
    n = w - 2
    r_state = np.zeros(STATE_SIZE)
    r1 = np.int64(0)
    r2 = np.int64(0)
    ra = np.int64(0)
    l1 = np.int64(0)
    l2 = np.int64(0)
    b_sum = 0.0
    o_sum = 0.0
    mk = np.zeros(max(n, 0))               # per column: the first row's Sobel magnitude (the shift)
    ms1 = np.zeros(max(n, 0))              # per column: sum (M - mk), sum (M - mk)^2 down the rows
    ms2 = np.zeros(max(n, 0))
    bd = np.empty(CHUNK, np.float32)       # one chunk's R - kr and Sobel magnitudes
    bm = np.empty(CHUNK, np.float32)
    for i in range(h):
        hb, ho, vs = _load_row(a[i], ring[i % 3], ring[(i + 2) % 3], wb)
        b_sum, o_sum = add_vertical(i, vs, b_sum + hb, o_sum + ho)
        if i < 2 or n < 1:
            continue
        a0, a1, a2 = ring[(i + 1) % 3], ring[(i + 2) % 3], ring[i % 3]
        if i == 2:                      # first row: shift R by its first output, M by its own values
            kr = np.int32(filters(a0[0], a0[1], a0[2], a1[0], a1[1], a1[2], a2[0], a2[1], a2[2],
                                  np.float32(2.0), np.float32(4.0), np.float32(8.0))[0])
            _magnitudes(a0, a1, a2, mk)
        else:                           # then R by the previous row's mean
            kr = np.int32(round(r_state[5]))
        sr1 = np.int64(0)
        sr2 = np.int64(0)
        f3 = 0.0
        f4 = 0.0
        for j0 in range(0, n, CHUNK):
            j1 = min(j0 + CHUNK, n)
            c = _chunk(a0[j0:j1 + 2], a1[j0:j1 + 2], a2[j0:j1 + 2], np.float32(kr), bd, bm)
            p = _power_sums(bd, j1 - j0)
            _column_sums(bm, mk[j0:j1], ms1[j0:j1], ms2[j0:j1])
            sr1 += np.int64(c[0])
            ra += np.int64(c[1])
            l1 += np.int64(c[2])
            sr2 += c[3]
            l2 += c[4]
            f3 += p[0]
            f4 += 1.0 * p[1]
        r1 += sr1
        r2 += sr2
        # shifted sums of R from the exact ones: sum (R - kr) and sum (R - kr)^2
        d1 = sr1 - n * kr
        d2 = sr2 - 2 * kr * sr1 + n * kr * kr
        merge(r_state, *central_from_shifted(n, kr, 1.0 * d1, 1.0 * d2, f3, f4))
    write_blockiness(out, b_sum, o_sum, h, w)
    if h < 3 or n < 1:
        write_moments(out, h, w, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)     # all NaN
        return
    m_state = np.zeros(STATE_SIZE)
    for j in range(n):                  # the columns' Sobel sums, merged left to right
        merge(m_state, *central_from_shifted(h - 2, mk[j], ms1[j], ms2[j], 0.0, 0.0))
    n_px = np.int64(n) * (h - 2)
    write_moments(out, h, w, n_px, r2, ra, _int_m2(n_px, r1, r2), r_state[4], _int_m2(n_px, l1, l2),
                  m_state[1], m_state[2])


@numba.jit(**JIT)
def neighbourhood_u8(a, out):
    """Write the noise, sharpness and blockiness features (``_neighbourhood.GROUPS``) of the 2-D
    C-contiguous uint8 frame ``a`` into their positions in ``out`` (with the float pass's shared
    blocks)."""
    w = a.shape[1]
    wb = np.zeros(w, np.float32)
    mark_boundaries(wb)
    ring = np.zeros((3, w), np.float32)     # rows i-2, i-1, i as float32
    _rows_pass(a, ring, wb, out)

