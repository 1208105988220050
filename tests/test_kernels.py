"""fvcflow.kernels against the slow, obviously-correct twins in tests/naive.py."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import av
import numba
import numpy as np
import pytest
from numpy.testing import assert_allclose

from fvcflow import kernels as K
from fvcflow.kernels import FRAME, _dct, _dct_fast, _lanes, color, features, table
from tests import naive as N
from tests.media import write_video

RTOL = 1e-6
ZERO_FRAC = FRAME.position("dct_ac_zero_frac")
DCT = FRAME.group_slice("dct_stats")
PER_FRAME = [*FRAME.groups, "frame_features"]      # every group's public function, and all of them
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- frames

@pytest.fixture(scope="module")
def natural(tmp_path_factory) -> np.ndarray:
    """Luma of real decoded H.264 frames (96x128): what the pipeline feeds the kernels."""
    path = write_video(tmp_path_factory.mktemp("kern") / "clip.mp4", n=4, width=128, height=96)
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (96, 128) and frames[0].dtype == np.uint8
    return np.stack(frames)


def _frame(kind: str, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    if kind == "random":
        return rng.integers(0, 256, shape).astype(np.uint8)
    if kind == "constant":
        return np.full(shape, 77, np.uint8)
    if kind == "gradient":
        yy, xx = np.mgrid[0:h, 0:w]
        return ((2 * yy + 3 * xx) % 256).astype(np.uint8)
    if kind == "quadratic":  # constant Laplacian and high-pass residual, nonzero
        yy, xx = np.mgrid[0:h, 0:w]
        return ((yy * yy + xx * xx) // 4 % 256).astype(np.uint8)
    if kind == "blocky":  # flat 8x8 blocks: no difference inside blocks
        return np.kron(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1)), np.ones((8, 8)))[:h,
                                                                                        :w].astype(np.uint8)
    raise ValueError(kind)


KINDS = ["random", "constant", "gradient", "quadratic", "blocky"]
SHAPES = [(1, 1), (2, 2), (3, 3), (7, 7), (8, 8), (9, 8), (8, 9), (17, 23), (16, 17), (48, 64)]


def _as(frame: np.ndarray, dtype: str, seed: int = 1) -> np.ndarray:
    """uint8 as is; float inputs get a non-integer offset so that float arithmetic is tested."""
    if dtype == "uint8":
        return frame
    return (frame.astype(np.float64) * 0.75 + 0.125).astype(dtype)


ZERO_LIMIT = 0.5 - 1e-9   # the kernel's "< 0.5": ties at exactly 0.5 are not below


def _compare(name: str, got, gray: np.ndarray) -> None:
    """Kernel result vs the naive twin.

    dct_ac_zero_frac: for uint8 frames, exactly the naive count below 0.5 - 1e-9 (exact ties
    at 0.5 excluded, as in exact arithmetic); for float frames, where rounding grows with the
    pixel scale, between the naive counts at ZERO_LIMIT -/+ that rounding.
    """
    want = np.atleast_1d(getattr(N, name)(gray)).astype(np.float64)
    got = np.atleast_1d(np.asarray(got, np.float64))
    assert got.shape == want.shape
    scale = max(1.0, float(np.nanmax(np.abs(gray))))
    if name in ("dct_stats", "frame_features"):
        z = ZERO_FRAC - DCT.start          # its index among dct_stats' outputs
        k = z if name == "dct_stats" else ZERO_FRAC
        if gray.dtype == np.uint8:
            lo = hi = N.dct_stats(gray, zero_threshold=ZERO_LIMIT)[z]
        else:
            eps = 1e-13 * 64 * scale
            lo = N.dct_stats(gray, zero_threshold=ZERO_LIMIT - eps)[z]
            hi = N.dct_stats(gray, zero_threshold=ZERO_LIMIT + eps)[z]
        if np.isnan(want[k]):
            assert np.isnan(got[k]) and np.isnan(lo)
        else:
            assert lo <= got[k] <= hi, (got[k], lo, hi)
        got, want = np.delete(got, k), np.delete(want, k)
    assert_allclose(got, want, rtol=RTOL, atol=1e-9 * scale, equal_nan=True)


# ---------------------------------------------------------------- values vs naive

@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_frame_features_match_naive(shape, kind, dtype):
    gray = _as(_frame(kind, shape), dtype)
    _compare("frame_features", K.frame_features(gray), gray)


@pytest.mark.parametrize("name", PER_FRAME)
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("kind", ["random", "constant", "gradient"])
def test_each_kernel_matches_naive(name, kind, dtype):
    gray = _as(_frame(kind, (41, 67)), dtype)
    _compare(name, getattr(K, name)(gray), gray)


@pytest.mark.parametrize("name", PER_FRAME)
def test_natural_frames_match_naive(natural, name):
    for gray in natural:
        _compare(name, getattr(K, name)(gray), gray)


@pytest.mark.parametrize("name", PER_FRAME)
def test_large_mean_float_frame(name):
    """A bright float frame with small detail: naive E[x^2] - E[x]^2 would lose every digit."""
    gray = 1e6 + np.random.default_rng(3).normal(0.0, 2.0, (40, 56))
    _compare(name, getattr(K, name)(gray), gray)


def test_constant_frame_is_exactly_flat():
    f = K.frame_features(np.full((32, 40), 200, np.uint8))
    named = dict(zip(K.FEATURE_NAMES, f))
    assert named["noise_energy"] == named["noise_kurtosis"] == named["lap_var"] == 0.0
    assert named["dct_dc_mean"] == pytest.approx(1600.0, rel=1e-15)
    assert named["dct_dc_std"] == 0.0 and named["dct_hf_ratio"] == 0.0
    assert named["dct_ac_zero_frac"] == 1.0 and named["dct_ac_mean_abs"] == 0.0
    assert named["blockiness"] == 1.0


def test_dct8_butterfly_is_the_orthonormal_dct():
    from scipy.fft import dct

    from fvcflow.kernels import _dct
    basis = _dct.dct_basis()
    assert_allclose(basis @ basis.T, np.eye(8), atol=1e-14)
    x = np.random.default_rng(6).normal(0, 50, (20, 8))
    got = np.array([_dct.dct8(*row) for row in x])
    assert_allclose(got, x @ basis.T, rtol=1e-12, atol=1e-12)
    assert_allclose(got, dct(x, type=2, norm="ortho", axis=1), rtol=1e-12, atol=1e-12)
    assert _dct.dct8(*[3.7] * 8)[1:] == (0.0,) * 7          # flat input: AC exactly 0


def test_zero_frac_ties_follow_exact_arithmetic():
    """One pixel of 4 in a dark block: AC(0, 4), AC(4, 0) and AC(4, 4) are exactly 4/8 = 0.5."""
    gray = np.zeros((8, 8), np.uint8)
    gray[0, 0] = 4
    ac = np.abs(N.dct_coefficients(gray)[0][N.AC_MASK])
    ties = np.isclose(ac, 0.5, rtol=1e-14, atol=0)
    assert ties.sum() == 3
    below = np.count_nonzero(ac < 0.5) - np.count_nonzero(ties & (ac < 0.5))
    assert K.dct_stats(gray)[ZERO_FRAC - DCT.start] == below / 63


def test_nan_input_gives_nan():
    gray = np.random.default_rng(0).normal(100, 10, (32, 32))
    gray[5, 5] = np.nan
    assert np.isnan(K.frame_features(gray)).all()
    assert np.isnan(N.frame_features(gray)).all()
    assert np.isnan(K.frame_features(gray.astype(np.float32))).all()


def _at(*groups: str) -> np.ndarray:
    """A mask of the positions of ``groups`` in the output vector."""
    mask = np.zeros(K.N_FEATURES, bool)
    for g in groups:
        mask[FRAME.group_slice(g)] = True
    return mask


def test_undefined_features_are_nan_by_size():
    isnan = {shape: np.isnan(K.frame_features(np.zeros(shape, np.uint8))) for shape in SHAPES}
    assert isnan[(2, 2)].all() and isnan[(1, 1)].all()
    assert np.array_equal(isnan[(7, 7)], _at("dct_stats", "blockiness"))   # no 8x8 block, no boundary
    assert np.array_equal(isnan[(8, 8)], _at("blockiness"))        # no boundary pair
    assert not isnan[(9, 8)].any() and not isnan[(8, 9)].any()
    one_row = K.frame_features(np.arange(9, dtype=np.uint8)[None, :])  # 1x9: blockiness only
    assert np.array_equal(np.isnan(one_row), ~_at("blockiness"))
    assert one_row[FRAME.position("blockiness")] == pytest.approx(1.0)


# ---------------------------------------------------------------- layouts

@pytest.mark.parametrize("view", ["step", "transpose", "fortran", "negative"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_non_contiguous_views(view, dtype):
    base = _as(_frame("random", (70, 90), seed=5), dtype)
    gray = {"step": base[::2, ::3], "transpose": base.T, "fortran": np.asfortranarray(base),
            "negative": base[::-1, 5:]}[view]
    assert not gray.flags.c_contiguous
    got = K.frame_features(gray)
    assert np.array_equal(got, K.frame_features(np.ascontiguousarray(gray)), equal_nan=True)
    _compare("frame_features", got, np.ascontiguousarray(gray))


# ---------------------------------------------------------------- batch

@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_batch_matches_frame_features(natural, dtype):
    frames = natural.astype(dtype)
    got = K.batch_features(frames)
    assert got.shape == (len(frames), K.N_FEATURES)
    for k, gray in enumerate(frames):
        assert np.array_equal(got[k], K.frame_features(gray), equal_nan=True)


def test_batch_is_independent_of_thread_count(natural):
    frames = np.concatenate([natural, natural[:, ::-1]])
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = K.batch_features(frames)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = K.batch_features(frames)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, two)


def test_batch_non_contiguous_and_tiny():
    frames = np.random.default_rng(2).integers(0, 256, (3, 40, 50), np.uint8)
    view = frames[:, ::2, 1:]
    got = K.batch_features(view)
    for k in range(3):
        assert np.array_equal(got[k], K.frame_features(view[k]), equal_nan=True)
    assert np.isnan(K.batch_features(np.zeros((2, 2, 2), np.uint8))).all()
    assert K.batch_features(np.zeros((0, 16, 16), np.uint8)).shape == (0, K.N_FEATURES)


# ---------------------------------------------------------------- rgb_to_gray

@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_rgb_to_gray_matches_bt601(dtype):
    rgb = np.random.default_rng(4).integers(0, 256, (13, 21, 3)).astype(dtype)
    got = K.rgb_to_gray(rgb)
    assert got.dtype == np.float64 and got.shape == (13, 21)
    assert_allclose(got, N.rgb_to_gray(rgb), rtol=1e-12)
    assert_allclose(K.rgb_to_gray(rgb[::-1, ::2]), N.rgb_to_gray(rgb[::-1, ::2]), rtol=1e-12)


def test_rgb_to_gray_primaries():
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, [0, 1, 2], [0, 1, 2]] = 255
    assert_allclose(K.rgb_to_gray(rgb), [[0.299 * 255, 0.587 * 255, 0.114 * 255]], rtol=1e-12)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("name", PER_FRAME)
@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint16, bool, np.complex128])
def test_gray_wrong_dtype(name, dtype):
    with pytest.raises(TypeError, match=r"gray must have dtype uint8, float32 or float64, got"):
        getattr(K, name)(np.zeros((16, 16), dtype))


@pytest.mark.parametrize("name", PER_FRAME)
@pytest.mark.parametrize("shape", [(16,), (4, 16, 16), (16, 16, 3)])
def test_gray_wrong_ndim(name, shape):
    with pytest.raises(ValueError, match=r"gray must be a 2-D array \(H, W\), got shape"):
        getattr(K, name)(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("name", PER_FRAME)
@pytest.mark.parametrize("shape", [(0, 16), (16, 0), (0, 0)])
def test_gray_empty(name, shape):
    with pytest.raises(ValueError, match=r"gray must be a non-empty 2-D array \(H, W\)"):
        getattr(K, name)(np.zeros(shape, np.uint8))


def test_batch_wrong_dtype():
    with pytest.raises(TypeError, match=r"frames must have dtype uint8, float32 or float64, got int32"):
        K.batch_features(np.zeros((2, 16, 16), np.int32))


@pytest.mark.parametrize("shape", [(16, 16), (2, 16, 16, 3)])
def test_batch_wrong_ndim(shape):
    with pytest.raises(ValueError, match=r"frames must be a 3-D array \(N, H, W\)"):
        K.batch_features(np.zeros(shape, np.uint8))


def test_batch_empty_frames():
    with pytest.raises(ValueError, match=r"frames must be a non-empty 3-D array \(N, H, W\)"):
        K.batch_features(np.zeros((2, 0, 16), np.uint8))


def test_rgb_wrong_dtype():
    with pytest.raises(TypeError, match=r"rgb must have dtype uint8, float32 or float64, got int16"):
        K.rgb_to_gray(np.zeros((4, 4, 3), np.int16))


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4), (2, 4, 4, 3)])
def test_rgb_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"rgb must be an array of shape \(H, W, 3\)"):
        K.rgb_to_gray(np.zeros(shape, np.uint8))


def test_rgb_empty():
    with pytest.raises(ValueError, match=r"rgb must be a non-empty array of shape \(H, W, 3\)"):
        K.rgb_to_gray(np.zeros((0, 4, 3), np.uint8))


# ---------------------------------------------------------------- docs

@pytest.mark.parametrize("module", [features, color, table, _lanes])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- the uint8 integer pass

def _checkerboard(h: int, w: int) -> np.ndarray:
    """Alternating 0/255 pixels: |R| = |L| = 1020 everywhere and Sobel 0."""
    return (np.indices((h, w)).sum(axis=0) % 2 * 255).astype(np.uint8)


def _bright_noise(h: int, w: int) -> np.ndarray:
    """Mean 250 with a one-level noise: large mean, tiny spread (moment cancellation)."""
    return (250 + np.random.default_rng(7).integers(0, 2, (h, w))).astype(np.uint8)


EXTREME = {
    "checkerboard": _checkerboard(6, 1300),            # rows wider than the int32 chunks
    "checkerboard_tall": _checkerboard(40, 24),
    "constant255": np.full((24, 1100), 255, np.uint8),
    "bright_noise": _bright_noise(30, 1100),
    "spike_grid": np.kron(np.ones((4, 650)), [[255, 0], [0, 0]]).astype(np.uint8),  # |R| 2040
    "single_spike": np.pad(np.full((1, 1), 255, np.uint8), ((5, 6), (700, 500))),
}


@pytest.mark.parametrize("kind", list(EXTREME))
def test_uint8_pass_extreme_frames(kind):
    """The integer pass agrees with the naive twin where int32 chunks and moments are at
    their limits; the sums that are exact integers agree to rounding (rtol 1e-12)."""
    gray = EXTREME[kind]
    got = K.frame_features(gray)
    _compare("frame_features", got, gray)
    named, want = dict(zip(K.FEATURE_NAMES, got)), N.frame_features(gray)
    for k, name in enumerate(K.FEATURE_NAMES):
        if name in ("noise_energy", "noise_mean_abs", "lap_var", "blockiness"):
            assert named[name] == pytest.approx(want[k], rel=1e-12, abs=1e-12), name


def test_uint8_pass_extreme_values_are_exact():
    """Checkerboard: R = +-1020, L = +-1020, Sobel 0 (every 3x3 sum cancels) exactly."""
    named = dict(zip(K.FEATURE_NAMES, K.frame_features(_checkerboard(6, 1300))))
    assert named["noise_energy"] == 1020.0 ** 2
    assert named["noise_mean_abs"] == 1020.0
    assert named["lap_var"] == 1020.0 ** 2
    assert named["grad_mean"] == named["grad_std"] == 0.0
    flat = dict(zip(K.FEATURE_NAMES, K.frame_features(np.full((24, 1100), 255, np.uint8))))
    assert flat["noise_energy"] == flat["noise_kurtosis"] == flat["lap_var"] == 0.0
    assert flat["grad_mean"] == flat["grad_std"] == 0.0


def test_uint8_pass_matches_float_pass(natural):
    """The uint8 fast path and the float64 path give the same features on real frames: to
    rounding, except the Sobel magnitude, whose float32 roots carry 6e-8 relative error each."""
    grad = [K.FEATURE_NAMES.index("grad_mean"), K.FEATURE_NAMES.index("grad_std")]
    for gray in natural:
        fast, slow = K.frame_features(gray), K.frame_features(gray.astype(np.float64))
        assert_allclose(fast[grad], slow[grad], rtol=1e-7)
        assert_allclose(np.delete(fast, grad), np.delete(slow, grad), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("shape", [(8, 8), (17, 23), (48, 64), (40, 1300)])
@pytest.mark.parametrize("kind", KINDS)
def test_fast_dct_pass_matches_the_column_first_pass(shape, kind):
    """The block-vectorised DCT of the uint8 path and the column-first pass of the float
    path agree to rounding (the zero-coefficient count exactly)."""
    gray = _frame(kind, shape)
    fast, slow = np.full(K.N_FEATURES, np.nan), np.full(K.N_FEATURES, np.nan)
    _dct_fast.dct_pass_fast(gray, fast)
    _dct.dct_pass(gray.astype(np.float64), slow)
    assert fast[ZERO_FRAC] == slow[ZERO_FRAC]
    assert_allclose(fast[DCT], slow[DCT], rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------- the feature table

def test_table_is_the_layout():
    assert K.FEATURE_NAMES == tuple(f.name for f in K.FEATURES) and K.N_FEATURES == len(K.FEATURES) == 12
    assert [f.position for f in K.FEATURES] == list(range(K.N_FEATURES))
    assert K.GROUPS == ("noise_residual", "dct_stats", "sharpness", "blockiness")
    for f in K.FEATURES:
        s = FRAME.group_slice(f.group)
        assert s.start <= f.position < s.stop and FRAME.position(f.name) == f.position


@pytest.mark.parametrize("kind", ["random", "constant", "blocky"])
@pytest.mark.parametrize("dtype", ["uint8", "float64"])
def test_each_pass_writes_exactly_its_groups(kind, dtype):
    """Every pass writes the positions of the groups it declares, and nothing else; together the
    passes write every position once."""
    gray = _as(_frame(kind, (40, 56)), dtype)
    written = np.zeros(K.N_FEATURES, int)
    for (u8_pass, float_pass), groups in features.PASSES:
        out = np.full(K.N_FEATURES, -12345.5)
        (u8_pass if dtype == "uint8" else float_pass)(gray, out)
        assert np.array_equal(out != -12345.5, _at(*groups)), (u8_pass, groups)
        written += out != -12345.5
    assert (written == 1).all()


@pytest.mark.parametrize("group", FRAME.groups)
def test_group_functions_are_slices_of_frame_features(natural, group):
    for gray in (natural[0], natural[0].astype(np.float64)):
        got = np.atleast_1d(getattr(K, group)(gray))
        assert np.array_equal(got, K.frame_features(gray)[FRAME.group_slice(group)])
        assert got.shape == np.atleast_1d(getattr(N, group)(gray)).shape


def test_table_rejects_bad_rows():
    with pytest.raises(ValueError, match="duplicate feature names"):
        table.FeatureTable([("a", "g"), ("a", "g")], definition="x", version=1)
    with pytest.raises(ValueError, match="group 'g' is not contiguous: positions"):
        table.FeatureTable([("a", "g"), ("b", "h"), ("c", "g")], definition="x", version=1)
    with pytest.raises(KeyError, match="no feature 'nope'; the table has noise_energy"):
        FRAME.position("nope")
    with pytest.raises(KeyError, match="no group 'nope'"):
        FRAME.group_slice("nope")


def test_every_feature_is_defined_in_its_document_in_table_order():
    """Each feature's definition reference names a section of a document whose table lists the
    feature as row ``position + 1``."""
    for ref in {f.definition for f in K.FEATURES}:
        path, section = ref.split("#")
        text = (ROOT / path).read_text()
        parts = re.split(r"^## ", text, flags=re.M)
        body = next(p for p in parts if re.sub(r"[^a-z0-9]+", "-", p.splitlines()[0].lower())
                    .startswith(section))
        rows = re.findall(r"^\| *(\d+) *\| *`(\w+)` *\|", body, flags=re.M)
        mine = [f for f in K.FEATURES if f.definition == ref]
        assert [(int(n), name) for n, name in rows] == [(f.position + 1, f.name) for f in mine], ref
