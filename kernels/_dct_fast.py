"""The blocked DCT pass, vectorised across the blocks of a band of 8 rows.

The same transform as ``_dct.dct_pass`` (orthonormal 8x8 DCT-II by the butterfly ``dct8``),
ordered so that both 1-D passes run over all the blocks of a band at once: first the 1-D DCT
of each 8-wide block of each of the 8 rows, stored as ``t[y, u, bx]`` (block bx contiguous),
then the 1-D DCT down the 8 rows of ``t[:, u, bx]`` for every bx, whose 8 outputs are the
coefficients (v, u) of block bx. Their statistics are summed per coefficient row v (squares)
and pooled (absolute values, count below 0.5), with the DC term (0, 0) left out of the AC
statistics by a 0/1 weight. The result equals ``_dct.dct_pass`` up to the order of the float64
additions (rows first instead of columns first: the coefficients agree to rounding, and a flat
block still gives AC coefficients that are exactly 0).
"""

from __future__ import annotations

import numba
import numpy as np

from ._dct import ZERO_LIMIT, dct8, pool, summarise, too_small
from .config import JIT


@numba.jit(**JIT)
def _rows(row, t):
    """1-D DCT of each 8-wide block of ``row``: ``t[u, bx]``."""
    for bx in range(t.shape[1]):
        x0 = 8 * bx
        (t[0, bx], t[1, bx], t[2, bx], t[3, bx], t[4, bx], t[5, bx], t[6, bx], t[7, bx]) = dct8(
            1.0 * row[x0], 1.0 * row[x0 + 1], 1.0 * row[x0 + 2], 1.0 * row[x0 + 3],
            1.0 * row[x0 + 4], 1.0 * row[x0 + 5], 1.0 * row[x0 + 6], 1.0 * row[x0 + 7])


@numba.jit(**JIT)
def _z(c):
    return 1.0 if abs(c) < ZERO_LIMIT else 0.0


@numba.jit(**JIT)
def _columns(t0, t1, t2, t3, t4, t5, t6, t7, w0, sq, dc):
    """1-D DCT down the rows of one frequency u (``tk = t[k, u]``) for every block.

    Adds sum c^2 of coefficient (v, u) to ``sq[v]``; stores the v = 0 outputs in ``dc``;
    returns sum |c| and the count of |c| < 0.5 over the AC coefficients (the v = 0 output
    weighted by ``w0``: 0 for u = 0, where it is the DC term, else 1).
    """
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    ab = 0.0
    zc = 0.0
    for bx in range(t0.shape[0]):
        c0, c1, c2, c3, c4, c5, c6, c7 = dct8(t0[bx], t1[bx], t2[bx], t3[bx],
                                              t4[bx], t5[bx], t6[bx], t7[bx])
        dc[bx] = c0
        s0 += c0 * c0
        s1 += c1 * c1
        s2 += c2 * c2
        s3 += c3 * c3
        s4 += c4 * c4
        s5 += c5 * c5
        s6 += c6 * c6
        s7 += c7 * c7
        ab += (w0 * abs(c0) + abs(c1) + abs(c2) + abs(c3)
               + abs(c4) + abs(c5) + abs(c6) + abs(c7))
        zc += (w0 * _z(c0) + _z(c1) + _z(c2) + _z(c3) + _z(c4) + _z(c5) + _z(c6) + _z(c7))
    sq[0] += s0
    sq[1] += s1
    sq[2] += s2
    sq[3] += s3
    sq[4] += s4
    sq[5] += s5
    sq[6] += s6
    sq[7] += s7
    return ab, zc


@numba.jit(**JIT)
def dct_pass_fast(a, out):
    """Write the DCT statistics of the 2-D C-contiguous frame ``a`` (any of the kernels' dtypes)
    into their positions in ``out`` (``_dct.GROUPS``)."""
    h, w = a.shape
    if too_small(h, w, out):
        return
    nby = h // 8
    nbx = w // 8
    t = np.empty((8, 8, nbx))          # [y, u, bx]
    sq = np.zeros((8, 8))              # [u, v]
    dc = np.empty(nby * nbx)
    scratch = np.empty(nbx)
    ac_abs = 0.0
    zeros = 0.0
    for by in range(nby):
        for y in range(8):
            _rows(a[8 * by + y], t[y])
        for u in range(8):
            ab, zc = _columns(t[0, u], t[1, u], t[2, u], t[3, u], t[4, u], t[5, u], t[6, u],
                              t[7, u], 0.0 if u == 0 else 1.0, sq[u],
                              dc[by * nbx:(by + 1) * nbx] if u == 0 else scratch)
            ac_abs += ab
            zeros += zc
    ac_sq, hf_sq = pool(sq)
    summarise(dc, nby * nbx, ac_abs, ac_sq, hf_sq, zeros, out)
