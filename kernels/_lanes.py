"""Float sums in an order fixed by the source, whatever the machine's vector width.

The kernels compile without ``reassoc`` (``config.FASTMATH``): LLVM may then not reorder a float
reduction, so a plain ``s += x[j]`` loop adds one element after another, each addition waiting
for the last. The sums here keep ``LANES`` = 8 partial sums instead: element ``j0 + 8 i + l``
goes to lane ``l``, each lane adds in index order, the elements after the last full group of 8
are added in order to a tail sum, and the lanes are combined pairwise,
``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``, then the tail. Eight independent chains
run about 3x faster than one, and however the compiler schedules or packs them every lane does
the same additions in the same order: the same bits on every machine. The hot per-pixel sums
avoid reductions altogether (integer sums, or float sums kept per column and added down the
rows); these serve the short ones (the DC coefficients, the per-column totals).

>>> import numpy as np
>>> x = np.arange(19, dtype=np.float64) / 7
>>> bool(lane_sum(x, 0, 19) == (((x[0::8][:2].sum() + x[1::8][:2].sum()) + (x[2::8][:2].sum()
...     + x[3::8][:2].sum())) + ((x[4::8][:2].sum() + x[5::8][:2].sum()) + (x[6::8][:2].sum()
...     + x[7::8][:2].sum()))) + (x[16] + x[17] + x[18]))
True
"""

from __future__ import annotations

import numba

from .config import JIT

LANES = 8


@numba.jit(**JIT)
def combine(a0, a1, a2, a3, a4, a5, a6, a7):
    """The lanes' total, pairwise."""
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@numba.jit(**JIT)
def lane_sum(v, j0, j1):
    """``sum v[j0:j1]`` in float64, in the fixed lane order."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    j = j0
    while j + LANES <= j1:
        a0 += v[j]
        a1 += v[j + 1]
        a2 += v[j + 2]
        a3 += v[j + 3]
        a4 += v[j + 4]
        a5 += v[j + 5]
        a6 += v[j + 6]
        a7 += v[j + 7]
        j += LANES
    t = 0.0
    while j < j1:
        t += v[j]
        j += 1
    return combine(a0, a1, a2, a3, a4, a5, a6, a7) + t


@numba.jit(**JIT)
def _d12(x, k):
    d = 1.0 * x - k
    return d, d * d


@numba.jit(**JIT)
def lane_moments12(v, j0, j1, k):
    """``(sum (x - k), sum (x - k)^2)`` over ``v[j0:j1]`` in float64, in the fixed lane order."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0.0
    j = j0
    while j + LANES <= j1:
        d0, e0 = _d12(v[j], k)
        d1, e1 = _d12(v[j + 1], k)
        d2, e2 = _d12(v[j + 2], k)
        d3, e3 = _d12(v[j + 3], k)
        d4, e4 = _d12(v[j + 4], k)
        d5, e5 = _d12(v[j + 5], k)
        d6, e6 = _d12(v[j + 6], k)
        d7, e7 = _d12(v[j + 7], k)
        a0 += d0
        a1 += d1
        a2 += d2
        a3 += d3
        a4 += d4
        a5 += d5
        a6 += d6
        a7 += d7
        b0 += e0
        b1 += e1
        b2 += e2
        b3 += e3
        b4 += e4
        b5 += e5
        b6 += e6
        b7 += e7
        j += LANES
    s = 0.0
    t = 0.0
    while j < j1:
        d, e = _d12(v[j], k)
        s += d
        t += e
        j += 1
    return combine(a0, a1, a2, a3, a4, a5, a6, a7) + s, combine(b0, b1, b2, b3, b4, b5, b6, b7) + t
