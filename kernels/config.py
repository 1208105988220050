"""The Numba compilation flags of every kernel, in one place.

No decorator in ``kernels/`` spells a flag by hand: serial cores use ``JIT``, the
frame-parallel batch uses ``PJIT``.

``fastmath`` enables only reassociation (so that float reductions vectorise) and
contraction to fused multiply-add. It deliberately leaves out ``nnan``/``ninf`` (NaN input
must give NaN) and ``afn``/``arcp`` (no approximate square roots or reciprocals).

Numba's on-disk cache (``cache=True``) keys a function on its own source file only: a jitted
caller keeps the compiled code of a callee from another module after that callee is edited.
After editing anything in ``kernels/``, delete ``kernels/__pycache__/*.nbi`` and ``*.nbc``.
"""

from __future__ import annotations

FASTMATH = {"reassoc", "contract", "nsz"}

JIT = dict(nopython=True, nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
PJIT = dict(JIT, parallel=True)
