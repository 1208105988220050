"""The 12 per-frame forensic features of docs/FEATURES.md: public, validating wrappers.

The features, their order and their groups are the table ``kernels/table.py`` (``FRAME``):
``FEATURE_NAMES`` is its names, every pass writes its features straight into their table
positions of one output vector, and each per-group function returns its group's slice.

Each public function checks its input, makes it C-contiguous (float32 is widened to
float64; uint8 stays uint8), calls a private jitted core chosen by dtype and returns float64
values. uint8, the production path, has its own cores: the neighbourhood pass in
exact integer-valued arithmetic (``_neigh_u8``) and the DCT vectorised across blocks
(``_dct_fast``); float input goes through ``_neighbourhood`` and ``_dct``. A frame too small for a
feature gives NaN for that feature, never an exception; float input containing NaN gives NaN.
"""

from __future__ import annotations

import numba
import numpy as np

from . import _dct, _dct_fast, _neigh_u8, _neighbourhood
from .config import JIT, PJIT
from .table import FEATURE_NAMES, FRAME, N_FEATURES

__all__ = ["FEATURE_NAMES", "N_FEATURES", "batch_features", "blockiness", "dct_stats", "frame_features",
           "noise_residual", "sharpness"]

#: the passes, as (uint8 pass, float pass), with the groups each writes
PASSES = (
    ((_neigh_u8.neighbourhood_u8, _neighbourhood.neighbourhood), _neighbourhood.GROUPS),
    ((_dct_fast.dct_pass_fast, _dct.dct_pass), _dct.GROUPS),
)
_PASS_OF = {group: fns for fns, groups in PASSES for group in groups}
assert sorted(_PASS_OF) == sorted(FRAME.groups), "every group of the table has one pass"
_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))
_DTYPE_TEXT = "uint8, float32 or float64"


def _check_dtype(arr: np.ndarray, name: str) -> None:
    if arr.dtype not in _DTYPES:
        raise TypeError(f"{name} must have dtype {_DTYPE_TEXT}, got {arr.dtype}")


def _prepare(arr: np.ndarray, ndim: int, name: str, shape_text: str) -> np.ndarray:
    """Validate dtype and shape; return a C-contiguous uint8 or float64 array."""
    arr = np.asarray(arr)
    _check_dtype(arr, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array {shape_text}, got shape {arr.shape}")
    if any(n == 0 for n in arr.shape[-2:]):
        raise ValueError(f"{name} must be a non-empty {ndim}-D array {shape_text}, "
                         f"got shape {arr.shape}")
    if arr.dtype == np.float32:
        return np.ascontiguousarray(arr, dtype=np.float64)
    return np.ascontiguousarray(arr)


def _gray(gray: np.ndarray) -> np.ndarray:
    return _prepare(gray, 2, "gray", "(H, W)")


# ---------------------------------------------------------------- jitted cores

@numba.jit(**JIT)
def _frame_core(a, out):
    """All features of one float64 frame into ``out`` (each pass writes its table positions)."""
    _neighbourhood.neighbourhood(a, out)
    _dct.dct_pass(a, out)


@numba.jit(**JIT)
def _frame_core_u8(a, out):
    """All features of one uint8 frame: the integer neighbourhood pass, the DCT vectorised
    across blocks."""
    _neigh_u8.neighbourhood_u8(a, out)
    _dct_fast.dct_pass_fast(a, out)


@numba.jit(**PJIT)
def _batch_core(frames, out):
    """``_frame_core`` of every float64 frame, frames spread over threads."""
    for k in numba.prange(frames.shape[0]):
        _frame_core(frames[k], out[k])


@numba.jit(**PJIT)
def _batch_core_u8(frames, out):
    """``_frame_core_u8`` of every uint8 frame, frames spread over threads."""
    for k in numba.prange(frames.shape[0]):
        _frame_core_u8(frames[k], out[k])


def _group(gray: np.ndarray, group: str) -> np.ndarray:
    """The features of ``group`` of one frame, by the pass (for its dtype) that computes them."""
    a = _gray(gray)
    out = np.full(N_FEATURES, np.nan)
    u8_pass, float_pass = _PASS_OF[group]
    (u8_pass if a.dtype == np.uint8 else float_pass)(a, out)
    return out[FRAME.group_slice(group)].copy()


# ---------------------------------------------------------------- public API

def noise_residual(gray: np.ndarray) -> np.ndarray:
    """Statistics of the 3x3 high-pass noise residual of a grayscale frame.

    Parameters
    ----------
    gray : ndarray, shape (H, W), dtype uint8, float32 or float64
        One grayscale (luma) frame; any memory layout.

    Returns
    -------
    ndarray, shape (3,), float64
        ``noise_energy`` (mean R^2), ``noise_mean_abs`` (mean abs R) and ``noise_kurtosis``
        (excess kurtosis of R, 0.0 for a constant residual), R being the valid-interior
        correlation with ``[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]]``. NaN when H < 3 or W < 3.

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import noise_residual
    >>> noise_residual(np.full((4, 4), 7, np.uint8))
    array([0., 0., 0.])
    """
    return _group(gray, "noise_residual")


def sharpness(gray: np.ndarray) -> np.ndarray:
    """Laplacian variance and Sobel gradient-magnitude statistics of a grayscale frame.

    Parameters
    ----------
    gray : ndarray, shape (H, W), dtype uint8, float32 or float64

    Returns
    -------
    ndarray, shape (3,), float64
        ``lap_var`` (population variance of the 3x3 Laplacian), ``grad_mean`` and
        ``grad_std`` (mean and population std of the Sobel magnitude), valid interior.
        NaN when H < 3 or W < 3.

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import sharpness
    >>> ramp = np.tile(np.arange(5, dtype=np.uint8), (5, 1))   # +1 per column
    >>> sharpness(ramp)                                          # Sobel gx = 8 everywhere
    array([0., 8., 0.])
    """
    return _group(gray, "sharpness")


def blockiness(gray: np.ndarray) -> float:
    """Mean abs difference across 8x8 block boundaries over that inside blocks.

    Parameters
    ----------
    gray : ndarray, shape (H, W), dtype uint8, float32 or float64

    Returns
    -------
    float
        ``(b + 1e-6) / (i + 1e-6)``: b pools the horizontal and vertical neighbour pairs
        (x, x+1) with x % 8 == 7, i all other pairs. NaN when either set is empty.

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import blockiness
    >>> blocks = np.kron(np.arange(4).reshape(2, 2), np.ones((8, 8))).astype(np.uint8)
    >>> round(blockiness(blocks))   # b = 1.5 at the block edges, i = 0: (1.5 + 1e-6) / 1e-6
    1500001
    """
    return float(_group(gray, "blockiness")[0])


def dct_stats(gray: np.ndarray) -> np.ndarray:
    """Statistics of the orthonormal 8x8 block DCT-II of a grayscale frame.

    Parameters
    ----------
    gray : ndarray, shape (H, W), dtype uint8, float32 or float64
        Full 8x8 blocks from the top-left are used; remainder rows/columns are dropped.

    Returns
    -------
    ndarray, shape (5,), float64
        ``dct_dc_mean``, ``dct_dc_std`` (population), ``dct_ac_mean_abs``, ``dct_hf_ratio``
        (energy of the AC coefficients with u + v >= 8 over all AC energy; 0.0 without AC
        energy) and ``dct_ac_zero_frac`` (fraction of AC with abs value < 0.5; a value
        within 1e-9 of 0.5, i.e. 0.5 up to rounding, counts as not below, as in exact
        arithmetic).
        NaN when H < 8 or W < 8.

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import dct_stats
    >>> dct_stats(np.full((8, 16), 10, np.uint8))   # DC = 8 * 10, no AC energy
    array([80.,  0.,  0.,  0.,  1.])
    """
    return _group(gray, "dct_stats")


def frame_features(gray: np.ndarray) -> np.ndarray:
    """All 12 features of one grayscale frame, in ``FEATURE_NAMES`` order.

    One fused pass over the 3x3 neighbourhoods (noise, Laplacian, Sobel, blockiness) and
    one blocked pass for the DCT.

    Parameters
    ----------
    gray : ndarray, shape (H, W), dtype uint8, float32 or float64

    Returns
    -------
    ndarray, shape (12,), float64
        NaN for every feature the frame is too small for (see docs/FEATURES.md).

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import FEATURE_NAMES, frame_features
    >>> f = dict(zip(FEATURE_NAMES, frame_features(np.full((16, 24), 10, np.uint8))))
    >>> float(round(f["dct_dc_mean"], 9)), float(f["noise_energy"]), float(f["dct_ac_zero_frac"])
    (80.0, 0.0, 1.0)
    """
    a = _gray(gray)
    out = np.empty(N_FEATURES)
    (_frame_core_u8 if a.dtype == np.uint8 else _frame_core)(a, out)
    return out


def batch_features(frames: np.ndarray) -> np.ndarray:
    """``frame_features`` of a stack of frames, computed in parallel over the frames.

    Uses Numba's thread pool (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``); the
    result does not depend on the number of threads.

    Parameters
    ----------
    frames : ndarray, shape (N, H, W), dtype uint8, float32 or float64
        N may be 0 (the result then has shape (0, 12)).

    Returns
    -------
    ndarray, shape (N, 12), float64

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import batch_features, frame_features
    >>> frames = np.random.default_rng(0).integers(0, 256, (3, 32, 40), np.uint8)
    >>> bool(np.array_equal(batch_features(frames)[1], frame_features(frames[1])))
    True
    """
    frames = _prepare(frames, 3, "frames", "(N, H, W)")
    out = np.empty((frames.shape[0], N_FEATURES))
    if frames.shape[0]:
        (_batch_core_u8 if frames.dtype == np.uint8 else _batch_core)(frames, out)
    return out
