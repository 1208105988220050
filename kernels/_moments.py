"""Numerically sound central moments: exact two-pass per row, then a pairwise merge.

A frame's statistics are accumulated row by row. Each row's values sit in a small buffer;
its mean and central sums are computed in two passes over that buffer (in cache), and the
row is merged into the running totals with the update formulas of Chan et al. (1979) and
Pebay (2008). The result agrees with a two-pass computation over the whole frame, also on
constant and large-mean input, where ``E[x^2] - E[x]^2`` loses every digit.

A running state is a float64[5] array ``[n, mean, M2, M3, M4]`` (``Mk`` = sum of
``(x - mean)^k``).
"""

from __future__ import annotations

import numba

from .config import JIT


@numba.jit(**JIT)
def row_moments2(buf, n, state):
    """Merge ``buf[:n]`` into ``state`` (mean and M2 only; M3/M4 stay 0)."""
    s = 0.0
    for j in range(n):
        s += buf[j]
    mean = s / n
    m2 = 0.0
    for j in range(n):
        d = buf[j] - mean
        m2 += d * d
    merge(state, n, mean, m2, 0.0, 0.0)


@numba.jit(**JIT)
def row_moments4(buf, n, state):
    """Merge ``buf[:n]`` into ``state`` with M2, M3 and M4."""
    s = 0.0
    for j in range(n):
        s += buf[j]
    mean = s / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    for j in range(n):
        d = buf[j] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
    merge(state, n, mean, m2, m3, m4)


@numba.jit(**JIT)
def merge(state, nb, mean_b, m2b, m3b, m4b):
    """Merge a part (``nb`` values, their mean and central sums) into ``state`` in place."""
    na = state[0]
    if na == 0.0:
        state[0] = nb
        state[1] = mean_b
        state[2] = m2b
        state[3] = m3b
        state[4] = m4b
        return
    m2a = state[2]
    m3a = state[3]
    n = na + nb
    delta = mean_b - state[1]
    dn = delta / n
    prod = na * nb
    state[4] = (state[4] + m4b
                + delta * dn * dn * dn * prod * (na * na - prod + nb * nb)
                + 6.0 * dn * dn * (na * na * m2b + nb * nb * m2a)
                + 4.0 * dn * (na * m3b - nb * m3a))
    state[3] = m3a + m3b + delta * dn * dn * prod * (na - nb) + 3.0 * dn * (na * m2b - nb * m2a)
    state[2] = m2a + m2b + delta * dn * prod
    state[1] = state[1] + dn * nb
    state[0] = n
