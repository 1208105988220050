"""The blocked DCT pass, vectorised across the blocks of a band of 8 rows.

The same transform as ``_dct.dct_pass`` (orthonormal 8x8 DCT-II by the butterfly ``dct8``),
ordered so that both 1-D passes run over all the blocks of a band at once: first the 1-D DCT
of each 8-wide block of each of the 8 rows, stored as ``t[y, u, bx]`` (block bx contiguous),
then the 1-D DCT down the 8 rows of ``t[:, u, bx]`` for every bx, whose 8 outputs are the
coefficients (v, u) of block bx. Their statistics are pooled per block column bx down the
bands (the AC total and the high-frequency total of the squares, of the absolute values, the
count below 0.5), with the DC term (0, 0) left out by a 0/1 weight, then summed over the block
columns in the fixed lane order of ``_lanes``: every addition's order is the source's, so the
result is the same bits whatever the machine's vector width. The result equals
``_dct.dct_pass`` up to the order of the float64 additions (rows first instead of columns
first: the coefficients agree to rounding, and a flat block still gives AC coefficients that
are exactly 0).
"""

from __future__ import annotations

import numba
import numpy as np

from ._dct import ZERO_LIMIT, dct8, summarise, too_small
from ._lanes import lane_sum
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
def _columns(t0, t1, t2, t3, t4, t5, t6, t7, u, ab, sq, hf, zc, dc):
    """1-D DCT down the rows of one frequency u (``tk = t[k, u]``) for every block bx.

    Adds to the per-block sums, over the AC coefficients (v, u): ``ab[bx]`` sum |c|, ``sq[bx]``
    sum c^2, ``hf[bx]`` sum c^2 of those with u + v >= 8, ``zc[bx]`` the count of |c| < 0.5 (the
    v = 0 output of u = 0 is the DC term: weight 0); stores the v = 0 outputs in ``dc``. Each
    block's sums add in a fixed order, and the loop over the blocks has no reduction: it
    vectorises without reordering an addition.
    """
    w0 = 0.0 if u == 0 else 1.0
    h0 = 0.0                            # u + v >= 8: the high frequencies (u <= 7)
    h1 = 1.0 if u >= 7 else 0.0
    h2 = 1.0 if u >= 6 else 0.0
    h3 = 1.0 if u >= 5 else 0.0
    h4 = 1.0 if u >= 4 else 0.0
    h5 = 1.0 if u >= 3 else 0.0
    h6 = 1.0 if u >= 2 else 0.0
    h7 = 1.0 if u >= 1 else 0.0
    for bx in range(t0.shape[0]):
        c0, c1, c2, c3, c4, c5, c6, c7 = dct8(t0[bx], t1[bx], t2[bx], t3[bx],
                                              t4[bx], t5[bx], t6[bx], t7[bx])
        dc[bx] = c0
        q0 = c0 * c0
        q1 = c1 * c1
        q2 = c2 * c2
        q3 = c3 * c3
        q4 = c4 * c4
        q5 = c5 * c5
        q6 = c6 * c6
        q7 = c7 * c7
        ab[bx] += (w0 * abs(c0) + abs(c1) + abs(c2) + abs(c3)
                   + abs(c4) + abs(c5) + abs(c6) + abs(c7))
        sq[bx] += w0 * q0 + q1 + q2 + q3 + q4 + q5 + q6 + q7
        hf[bx] += h0 * q0 + h1 * q1 + h2 * q2 + h3 * q3 + h4 * q4 + h5 * q5 + h6 * q6 + h7 * q7
        zc[bx] += w0 * _z(c0) + _z(c1) + _z(c2) + _z(c3) + _z(c4) + _z(c5) + _z(c6) + _z(c7)


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
    ab = np.zeros(nbx)                 # per block column: sums over the bands (see _columns)
    sq = np.zeros(nbx)
    hf = np.zeros(nbx)
    zc = np.zeros(nbx)
    dc = np.empty(nby * nbx)
    scratch = np.empty(nbx)
    for by in range(nby):
        for y in range(8):
            _rows(a[8 * by + y], t[y])
        for u in range(8):
            _columns(t[0, u], t[1, u], t[2, u], t[3, u], t[4, u], t[5, u], t[6, u], t[7, u], u,
                     ab, sq, hf, zc, dc[by * nbx:(by + 1) * nbx] if u == 0 else scratch)
    summarise(dc, nby * nbx, lane_sum(ab, 0, nbx), lane_sum(sq, 0, nbx), lane_sum(hf, 0, nbx),
              lane_sum(zc, 0, nbx), out)
