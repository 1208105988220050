"""Numerically sound central moments: shifted power sums per row, then a pairwise merge.

A frame's statistics are accumulated row by row. Within a row, the power sums are taken of
``x - K`` with a shift ``K`` close to the row's mean (the previous row's mean), so that no
digits are lost to a large mean; the row's central sums follow exactly
(``central_from_shifted``), and the row is merged into the running totals with the update
formulas of Chan et al. (1979) and Pebay (2008). The result agrees with a two-pass
computation over the whole frame, also on constant and large-mean input, where
``E[x^2] - E[x]^2`` loses every digit.

A running state is a float64[6] array ``[n, mean, M2, M3, M4, last]``: ``Mk`` is the sum of
``(x - mean)^k``, ``last`` the mean of the part merged last (the next row's shift).
"""

from __future__ import annotations

import numba

from .config import JIT

STATE_SIZE = 6

@numba.jit(**JIT)
def central_from_shifted(n, k, s1, s2, s3, s4):
    """``(n, mean, M2, M3, M4)`` of n values from their sums ``sk = sum (x - k)^k``."""
    mu = s1 / n
    mu2 = mu * mu
    m2 = s2 - s1 * mu
    m3 = s3 - 3.0 * mu * s2 + 2.0 * n * mu2 * mu
    m4 = s4 - 4.0 * mu * s3 + 6.0 * mu2 * s2 - 3.0 * n * mu2 * mu2
    return n, k + mu, m2, m3, m4

@numba.jit(**JIT)
def merge(state, nb, mean_b, m2b, m3b, m4b):
    """Merge a part (``nb`` values, their mean and central sums) into ``state`` in place."""
    na = state[0]
    state[5] = mean_b
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
