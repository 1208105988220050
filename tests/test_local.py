"""The local (tile) kernels against their slow twins in tests/naive.py, and on a spliced frame."""

from __future__ import annotations

import doctest

import cv2
import numpy as np
import pytest
from numpy.testing import assert_allclose

from fvcflow import kernels as K
from fvcflow.kernels import local
from fvcflow.video import iter_luma, iter_yuv, probe, sample_indices
from tests import naive as N
from tests.media import write_video

PHASE = K.MAP_NAMES.index("block_phase")
RESAMPLE = K.MAP_NAMES.index("resample")


@pytest.fixture(scope="module")
def natural(tmp_path_factory):
    """(y, cb, cr) of real decoded 4:2:0 H.264 frames (98x134: odd chroma sizes, partial tiles)."""
    path = write_video(tmp_path_factory.mktemp("local") / "clip.mp4", n=5, width=134, height=98)
    frames = [tuple(np.ascontiguousarray(p) for p in yuv) for _, yuv in iter_yuv(path, range(5))]
    y, cb, cr = frames[0]
    assert y.shape == (98, 134) and cb.shape == cr.shape == (49, 67) and y.dtype == np.uint8
    return frames


def _frame(kind: str, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "random":
        return rng.integers(0, 256, shape).astype(np.uint8)
    if kind == "constant":
        return np.full(shape, 77, np.uint8)
    if kind == "gradient":
        return ((2 * yy + 3 * xx) % 256).astype(np.uint8)
    if kind == "blocky":
        blocks = np.kron(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1)), np.ones((8, 8)))
        return blocks[:h, :w].astype(np.uint8)
    raise ValueError(kind)


def _chroma(shape, seed: int, sub: int = 2):
    rng = np.random.default_rng(seed + 100)
    cshape = ((shape[0] + sub - 1) // sub, (shape[1] + sub - 1) // sub)
    return (rng.integers(90, 170, cshape).astype(np.uint8), rng.integers(60, 200, cshape).astype(np.uint8))


def _as(a: np.ndarray, dtype: str) -> np.ndarray:
    return a if dtype == "uint8" else (a.astype(np.float64) * 0.75 + 0.125).astype(dtype)


def _compare_maps(got: np.ndarray, want: np.ndarray, scale: float) -> None:
    assert got.shape == want.shape
    assert np.array_equal(got[PHASE], want[PHASE], equal_nan=True)     # an integer: exactly
    assert_allclose(got, want, rtol=1e-7, atol=1e-9 * scale * scale, equal_nan=True)


def _check_frame(gray, cb=None, cr=None, tile=32):
    """Both grids of the kernel vs the naive maps at tile and 2 x tile, and the features."""
    fine, coarse = K.tile_maps_pair(gray, cb, cr, tile=tile)
    scale = max(1.0, float(np.nanmax(np.abs(gray))))
    want_fine = N.tile_maps(gray, cb, cr, tile=tile)
    _compare_maps(fine, want_fine, scale)
    _compare_maps(coarse, N.tile_maps(gray, cb, cr, tile=2 * tile), scale)
    _compare_maps(K.tile_maps(gray, cb, cr, tile=2 * tile), coarse, scale)
    if fine.shape[1] * fine.shape[2]:
        got, zmap, deviant, region = K.inconsistency(fine)
        want, wz, wd, wr = N.inconsistency(want_fine)
        assert_allclose(got, want, rtol=1e-6, atol=1e-9, equal_nan=True)
        assert_allclose(zmap, wz, rtol=1e-6, atol=1e-6, equal_nan=True)
        assert np.array_equal(deviant, wd) and np.array_equal(region, wr)
    return fine


SHAPES = [(16, 16), (17, 40), (64, 64), (70, 101), (96, 130)]


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("kind", ["random", "constant", "gradient", "blocky"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_maps_and_features_match_naive(shape, kind, dtype):
    gray = _as(_frame(kind, shape), dtype)
    cb, cr = (_as(p, dtype) for p in _chroma(shape, 1))
    _check_frame(gray, cb, cr, tile=16)
    _check_frame(gray, tile=16)                          # without chroma: NaN chroma maps


def test_natural_frames_match_naive(natural):
    for y, cb, cr in natural:
        fine = _check_frame(y, cb, cr, tile=32)
        assert np.isfinite(fine).all()
        _check_frame(y, cb, cr, tile=16)


def test_chroma_subsamplings():
    gray = _frame("random", (64, 96), seed=3)
    for sub in (1, 2):
        cb, cr = _chroma(gray.shape, 4, sub)
        _check_frame(gray, cb, cr, tile=16)
    cb422 = np.random.default_rng(5).integers(0, 256, (64, 48)).astype(np.uint8)   # 4:2:2
    _check_frame(gray, cb422, cb422[::-1].copy(), tile=16)


@pytest.mark.parametrize("view", ["step", "transpose", "negative"])
def test_strided_views(view):
    base = _frame("random", (140, 180), seed=6)
    gray = {"step": base[::2, ::1], "transpose": base.T, "negative": base[::-1, 3:]}[view]
    assert not gray.flags.c_contiguous
    fine, coarse = K.tile_maps_pair(gray, tile=16)
    same = K.tile_maps_pair(np.ascontiguousarray(gray), tile=16)
    assert np.array_equal(fine, same[0], equal_nan=True) and np.array_equal(coarse, same[1], equal_nan=True)
    _check_frame(np.ascontiguousarray(gray), tile=16)


def test_tiny_frames_give_empty_maps_and_nan_features():
    fine, coarse = K.tile_maps_pair(np.zeros((15, 200), np.uint8), tile=16)
    assert fine.shape == (K.N_MAPS, 0, 12) and coarse.shape == (K.N_MAPS, 0, 6)
    features, zmap, deviant, region = K.inconsistency(fine)
    assert np.isnan(features).all() and zmap.shape == (0, 12) and not region.any()
    one = K.local_frame(np.zeros((40, 40), np.uint8))          # one 32 tile, no 64 tile
    assert one.maps.shape == (K.N_MAPS, 1, 1) and one.coarse_maps.shape == (K.N_MAPS, 0, 0)
    assert np.isnan(one.features[K.N_LOCAL:]).all()


def test_constant_frame_values():
    maps = K.tile_maps(np.full((64, 96), 200, np.uint8), *(np.full((32, 48), 128, np.uint8),) * 2)
    named = dict(zip(K.MAP_NAMES, maps))
    for name in ("noise", "lap_var", "grad_energy", "cb_std", "cr_std"):
        assert (named[name] == 0.0).all(), name
    assert (named["block_strength"] == 1.0).all() and (named["resample"] == 1.0).all()
    assert (named["cb_mean"] == 128.0).all()
    f = dict(zip(K.LOCAL_NAMES, K.inconsistency(maps)[0]))
    assert f["noise_spread"] == 0.0 and f["noise_maxz"] == 0.0 and f["region_size"] == 0.0
    assert np.isnan(f["phase_agreement"])                      # no tile shows a grid


def test_block_phase_finds_the_grid():
    """Flat 8x8 blocks cut 3 rows and 5 columns in: the boundaries follow rows y % 8 == 4 and
    columns x % 8 == 2, so every tile's phase is 8 * 4 + 2."""
    rng = np.random.default_rng(8)
    blocks = np.kron(rng.integers(0, 256, (20, 20)), np.ones((8, 8)))
    gray = blocks[3:3 + 128, 5:5 + 128].astype(np.uint8)
    maps = K.tile_maps(gray)
    assert (maps[K.MAP_NAMES.index("block_phase")] == 8 * 4 + 2).all()
    assert (maps[K.MAP_NAMES.index("block_strength")] > 100).all()
    assert dict(zip(K.LOCAL_NAMES, K.inconsistency(maps)[0]))["phase_agreement"] == 1.0


def test_nan_input_gives_nan():
    gray = np.random.default_rng(0).normal(100, 10, (64, 64))
    gray[40, 40] = np.nan
    maps = K.tile_maps(gray)
    assert np.isnan(maps[0, 1, 1]) and np.isfinite(maps[0, 0, 0])
    f = dict(zip(K.LOCAL_NAMES, K.inconsistency(maps)[0]))
    assert np.isnan(f["noise_spread"]) and np.isnan(f["noise_maxz"])


# ---------------------------------------------------------------- temporal

def test_temporal_matches_naive(natural):
    frames = [K.local_frame(y, cb, cr) for y, cb, cr in natural]
    got = K.temporal_features(frames)
    want = N.temporal_features([f.maps for f in frames], [f.deviant for f in frames],
                               [f.region for f in frames])
    assert_allclose(got, want, rtol=1e-9, equal_nan=True)


def test_temporal_of_a_fixed_and_a_moving_patch():
    """The same spliced tile in every frame: presence 1, no motion, IoU 1; moving: motion > 0."""
    background = np.random.default_rng(9).normal(128, 12, (128, 192)).clip(0, 255).astype(np.uint8)

    def frame(ty, tx):
        g = background.copy()
        g[ty * 32:(ty + 1) * 32, tx * 32:(tx + 1) * 32] = 128
        r = K.local_frame(g)
        assert r.region.sum() == 1 and r.region[ty, tx]
        return r

    fixed = dict(zip(K.TEMPORAL_NAMES, K.temporal_features([frame(1, 2) for _ in range(4)])))
    assert fixed["region_presence"] == 1.0 and fixed["centroid_motion"] == 0.0 and fixed["mask_iou"] == 1.0
    moving = dict(zip(K.TEMPORAL_NAMES, K.temporal_features([frame(1, k) for k in range(4)])))
    assert moving["centroid_motion"] == pytest.approx(1 / np.hypot(4, 6)) and moving["mask_iou"] == 0.0
    varying = [frame(1, 2), K.local_frame(np.zeros((64, 64), np.uint8))]
    assert np.isnan(K.temporal_features(varying)).all()       # the grid changed size
    assert np.isnan(K.temporal_features([])).all()


# ---------------------------------------------------------------- a spliced frame

def _spliced(seed: int = 0):
    """A camera-like frame (smooth scene + sensor noise) with a pasted donor patch: rendered at
    low resolution, upscaled x1.6 (bilinear: periodic interpolation), colour-shifted and
    blended in with a feathered elliptical mask. Returns (y, cb, cr) and the patch box."""
    rng = np.random.default_rng(seed)
    h, w = 256, 384
    yy, xx = np.mgrid[0:h, 0:w]
    scene = 110 + 40 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    frame = scene + rng.normal(0, 6, (h, w))
    y0, x0, ph, pw = 80, 144, 96, 96
    small = 120 + 30 * np.sin(np.mgrid[0:64, 0:64][1] / 9.0) + rng.normal(0, 6, (64, 64))
    patch = cv2.resize(small, (pw, ph), interpolation=cv2.INTER_LINEAR)
    py, px = np.mgrid[0:ph, 0:pw]
    ell = ((py - ph / 2) / (ph / 2)) ** 2 + ((px - pw / 2) / (pw / 2)) ** 2
    alpha = np.clip((1.0 - ell) / 0.15, 0.0, 1.0)
    frame[y0:y0 + ph, x0:x0 + pw] = alpha * patch + (1 - alpha) * frame[y0:y0 + ph, x0:x0 + pw]
    y = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    cb = np.full((h // 2, w // 2), 120.0) + rng.normal(0, 2, (h // 2, w // 2))
    cb[y0 // 2:(y0 + ph) // 2, x0 // 2:(x0 + pw) // 2] += 6 * alpha[::2, ::2]
    cr = np.full((h // 2, w // 2), 140.0) + rng.normal(0, 2, (h // 2, w // 2))
    return (y, np.clip(cb, 0, 255).astype(np.uint8), np.clip(cr, 0, 255).astype(np.uint8)), (y0, x0, ph, pw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spliced_patch_is_the_most_deviant_region(seed):
    (y, cb, cr), (y0, x0, ph, pw) = _spliced(seed)
    r = K.local_frame(y, cb, cr)
    inside = np.zeros(r.zmap.shape, bool)                     # tiles that overlap the patch's box
    inside[y0 // 32:-(-(y0 + ph) // 32), x0 // 32:-(-(x0 + pw) // 32)] = True
    ty, tx = np.unravel_index(np.nanargmax(r.zmap), r.zmap.shape)
    assert inside[ty, tx], (ty, tx)
    assert r.region.any() and (r.region & inside).sum() >= 0.5 * r.region.sum()
    resample = r.maps[RESAMPLE]
    cy, cx = (y0 + ph // 2) // 32, (x0 + pw // 2) // 32        # the four tiles at the patch's centre
    assert resample[cy - 1:cy + 1, cx - 1:cx + 1].mean() > np.max(resample[~inside])
    assert np.median(resample[inside]) > np.percentile(resample[~inside], 90)
    assert_allclose(r.maps, N.tile_maps(y, cb, cr, tile=32), rtol=1e-7, atol=1e-6)


def test_untouched_frame_has_no_large_region():
    rng = np.random.default_rng(4)
    h, w = 256, 384
    yy, xx = np.mgrid[0:h, 0:w]
    y = np.clip(110 + 40 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + rng.normal(0, 6, (h, w)), 0, 255)
    r = K.local_frame(y.astype(np.uint8))
    assert r.region.sum() <= 2


# ---------------------------------------------------------------- decoder planes

def test_iter_yuv_planes(tmp_path):
    path = write_video(tmp_path / "c.mp4", n=12, width=64, height=48)
    info = probe(path)
    idx = sample_indices(info.n_frames)
    got = list(iter_yuv(path, idx, info=info))
    assert [i for i, _ in got] == idx.tolist()
    lumas = [y for _, y in iter_luma(path, idx, info=info)]
    for (_, (y, cb, cr)), luma in zip(got, lumas):
        assert np.array_equal(y, luma) and cb.shape == cr.shape == (24, 32) and cb.dtype == np.uint8
    rgb = write_video(tmp_path / "c.mkv", n=6, width=64, height=48, codec="ffv1", pix_fmt="bgr0")
    (_, (y, cb, cr)), = list(iter_yuv(rgb, [2]))
    assert y.shape == cb.shape == (48, 64)                     # converted to yuv444p


# ---------------------------------------------------------------- validation and docs

@pytest.mark.parametrize("tile", [8, 12, 20, 0, -16, 32.0])
def test_bad_tile(tile):
    with pytest.raises(ValueError, match="tile must be a multiple of 8 and at least 16"):
        K.tile_maps(np.zeros((64, 64), np.uint8), tile=tile)


def test_bad_coarse():
    with pytest.raises(ValueError, match="coarse must be a positive int"):
        K.tile_maps_pair(np.zeros((64, 64), np.uint8), coarse=0)


def test_bad_inputs():
    gray = np.zeros((64, 64), np.uint8)
    with pytest.raises(TypeError, match="gray must have dtype uint8, float32 or float64"):
        K.tile_maps(gray.astype(np.int16))
    with pytest.raises(ValueError, match=r"gray must be a 2-D array \(H, W\)"):
        K.tile_maps(np.zeros((4, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="give both chroma planes cb and cr, or neither"):
        K.tile_maps(gray, np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"cb must have the luma's rows \(64\) or half of them"):
        K.tile_maps(gray, np.zeros((20, 32), np.uint8), np.zeros((32, 32), np.uint8))
    with pytest.raises(TypeError, match="cr must have dtype uint8, float32 or float64"):
        K.tile_maps(gray, np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.int32))
    with pytest.raises(ValueError, match=r"maps must be an array of shape \(10, ny, nx\)"):
        K.inconsistency(np.zeros((3, 2, 2)))
    with pytest.raises(TypeError, match="maps must be a float array"):
        K.inconsistency(np.zeros((10, 2, 2), np.int64))


def test_docstring_examples_run():
    result = doctest.testmod(local, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_every_local_name_is_defined_in_its_section_in_table_order():
    """Each table's definition reference names a ``###`` section of docs/FEATURES.md that names
    its entries in table order (the deviance features by their map, ``{map}_spread``/``_maxz``)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for table in (local.MAPS, local.LOCAL, local.TEMPORAL):
        path, section = table.definition.split("#")
        text = (root / path).read_text()
        parts = re.split(r"^### ", text, flags=re.M)
        body = next(p for p in parts if re.sub(r"[^a-z0-9]+", "-", p.splitlines()[0].lower()).strip("-")
                    == section)
        names = [n for n in table.names if not n.endswith(("_spread", "_maxz"))]
        names += [c for c in local.DEVIANCE] if table is local.LOCAL else []
        at = [body.find(f"`{n}`") for n in names]
        assert all(i >= 0 for i in at), [n for n, i in zip(names, at) if i < 0]
        if table is not local.LOCAL:
            assert at == sorted(at), table.definition


@pytest.mark.parametrize("seed", range(6))
def test_the_largest_region_is_scipys_largest_4_connected_component(seed):
    """The region mask against scipy.ndimage.label (4-connectivity): the largest component's tiles,
    its size and its bounding-box area; ties go to the component met first in raster order."""
    from scipy import ndimage

    mask = np.random.default_rng(seed).random((9, 13)) < 0.45
    region = np.zeros_like(mask)
    size, area = local._largest_component(mask, region)
    labels, n = ndimage.label(mask)                       # labels follow raster order
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1                      # argmax: the first of equal sizes
    want = labels == best
    ys, xs = np.nonzero(want)
    assert np.array_equal(region, want)
    assert size == sizes.max() and area == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    assert local._largest_component(np.zeros((3, 4), bool), region) == (0, 0) and not region.any()
