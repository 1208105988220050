"""The Numba compilation flags of every kernel, in one place.

No decorator in ``kernels/`` spells a flag by hand: serial cores use ``JIT``, the
frame-parallel batch uses ``PJIT``.

``fastmath`` enables only reassociation (so that float reductions vectorise) and
contraction to fused multiply-add. It deliberately leaves out ``nnan``/``ninf`` (NaN input
must give NaN) and ``afn``/``arcp`` (no approximate square roots or reciprocals).
"""

from __future__ import annotations

FASTMATH = {"reassoc", "contract", "nsz"}

JIT = dict(nopython=True, nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
PJIT = dict(JIT, parallel=True)
