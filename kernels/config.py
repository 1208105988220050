"""The Numba compilation flags of every kernel, in one place.

No decorator in ``kernels/`` spells a flag by hand: serial cores use ``JIT``, the
frame-parallel batch uses ``PJIT``, the few cores whose float sums are exact use ``JIT_EXACT``.

The same input gives the same bits on every machine, so ``fastmath`` allows nothing whose effect
depends on the CPU. Reassociation (``reassoc``) is left out of ``JIT``: with it LLVM vectorises
a float reduction with as many partial sums as the CPU's vectors hold times its interleave
factor (both chosen per CPU model: 8-wide AVX-512, 4-wide AVX2, ...), so the order of the
additions, and the last bits of the sums, depended on the machine (stage 2's grad_mean,
grad_std, dct_ac_mean_abs, dct_hf_ratio and the resampling columns differed between an AVX-512
and an AVX2 build by up to 1e-13, relative). The hot sums are written so that they vectorise
without it: integer-valued sums in integer types or under ``JIT_EXACT`` (below), float sums
kept per column and added down the rows (a loop without reductions), short float sums over 8
lanes in a fixed order (``_lanes``). Contraction to fused multiply-add (``contract``) is left out
too: CPUs without FMA, and compilers that fuse by a CPU's latencies, would round differently.
Also left out: ``nnan``/``ninf`` (NaN input must give NaN) and ``afn``/``arcp`` (no approximate
square roots or reciprocals). ``nsz`` stays (it can change only the sign of a zero).

``JIT_EXACT`` adds ``reassoc`` for a function whose float sums are all of integers with every
partial sum below 2^24 (float32) or 2^53 (float64): such sums are exact in any order, so the
order the vectoriser picks cannot change a bit (``_neigh_u8._chunk``, ``_power_sums``).

What the kernels still take from outside: ``log1p`` (local features) from the C library, the
same on every CPU for one C library version; unless Intel's SVML is installed, which Numba then
uses to vectorise it per instruction set (``NUMBA_DISABLE_INTEL_SVML=1`` turns that off;
``fvcflow.fingerprint`` records it as ``numba_svml``).

Numba's on-disk cache (``cache=True``) keys a function on its own source file only: a jitted
caller keeps the compiled code of a callee from another module after that callee is edited.
After editing anything in ``kernels/``, delete ``kernels/__pycache__/*.nbi`` and ``*.nbc``.
"""

from __future__ import annotations

FASTMATH = {"nsz"}
#: bump when a change alters the kernels' floating-point results (the stages' cache key has it)
NUMERICS = 2

JIT = dict(nopython=True, nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
PJIT = dict(JIT, parallel=True)
#: only for a function whose float sums are of integers, every partial sum below 2^24 (float32)
#: or 2^53 (float64): exact in any order, so reassociating them (to vectorise) changes no bit
JIT_EXACT = dict(JIT, fastmath=FASTMATH | {"reassoc"})
