"""Slow, obviously-correct NumPy/SciPy twins of the kernels, written straight from docs/FEATURES.md.

Every function takes one 2-D grayscale frame and returns what the kernel of the same name
returns; a group's twin (named like the group in ``fvcflow.kernels.FRAME``) returns its features
in the table's order. Nothing here is fast or clever: explicit slicing for the 3x3 filters, one
``scipy.fft.dctn(norm="ortho")`` per 8x8 block, two-pass statistics with ``numpy``.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dctn

from fvcflow.kernels import FRAME

NAN = float("nan")


def _valid_3x3(gray: np.ndarray, kernel: list[list[int]]) -> np.ndarray:
    """Correlation with a 3x3 kernel on the valid interior, by explicit shifted slices."""
    g = np.asarray(gray, np.float64)
    h, w = g.shape
    out = np.zeros((h - 2, w - 2))
    for dy in range(3):
        for dx in range(3):
            if kernel[dy][dx]:
                out += kernel[dy][dx] * g[dy:dy + h - 2, dx:dx + w - 2]
    return out


HIGH_PASS = [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]
LAPLACIAN = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
SOBEL_Y = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]


def _too_small_3x3(gray: np.ndarray) -> bool:
    return gray.shape[0] < 3 or gray.shape[1] < 3


def noise_residual(gray: np.ndarray) -> np.ndarray:
    """[noise_energy, noise_mean_abs, noise_kurtosis]."""
    if _too_small_3x3(gray):
        return np.full(3, NAN)
    r = _valid_3x3(gray, HIGH_PASS).ravel()
    centred = r - r.mean()
    m2 = np.mean(centred ** 2)
    m4 = np.mean(centred ** 4)
    kurt = 0.0 if m2 == 0 else m4 / m2 ** 2 - 3.0
    return np.array([np.mean(r ** 2), np.mean(np.abs(r)), kurt])


def sharpness(gray: np.ndarray) -> np.ndarray:
    """[lap_var, grad_mean, grad_std]."""
    if _too_small_3x3(gray):
        return np.full(3, NAN)
    lap = _valid_3x3(gray, LAPLACIAN)
    gx = _valid_3x3(gray, SOBEL_X)
    gy = _valid_3x3(gray, SOBEL_Y)
    mag = np.sqrt(gx ** 2 + gy ** 2)
    return np.array([np.var(lap), np.mean(mag), np.std(mag)])


def dct_coefficients(gray: np.ndarray) -> np.ndarray:
    """The orthonormal DCT-II of every full 8x8 block: float64[n_blocks, 8, 8] (v, u).

    SciPy's FFT-based transform leaves rounding residue (~1e-13) where the exact coefficient
    is 0 (a flat block); residue below 1e-12 of the block's scale is set to the exact 0 so that
    "0.0 when the sum is 0" means what it says.
    """
    g = np.asarray(gray, np.float64)
    h, w = g.shape
    blocks = []
    for y in range(0, h - h % 8, 8):
        for x in range(0, w - w % 8, 8):
            block = g[y:y + 8, x:x + 8]
            coef = dctn(block, type=2, norm="ortho")
            scale = max(1.0, float(np.abs(block).max())) if np.isfinite(block).all() else 1.0
            coef[np.abs(coef) < 1e-12 * scale] = 0.0
            blocks.append(coef)
    return np.array(blocks).reshape(-1, 8, 8)


AC_MASK = np.ones((8, 8), bool)
AC_MASK[0, 0] = False
HF_MASK = np.add.outer(np.arange(8), np.arange(8)) >= 8


def dct_stats(gray: np.ndarray, *, zero_threshold: float = 0.5) -> np.ndarray:
    """[dct_dc_mean, dct_dc_std, dct_ac_mean_abs, dct_hf_ratio, dct_ac_zero_frac]."""
    g = np.asarray(gray)
    if g.shape[0] < 8 or g.shape[1] < 8:
        return np.full(5, NAN)
    coef = dct_coefficients(g)
    dc = coef[:, 0, 0]
    ac = coef[:, AC_MASK]
    ac_sq_total = np.sum(ac ** 2)
    hf = np.sum(coef[:, HF_MASK] ** 2)
    hf_ratio = 0.0 if ac_sq_total == 0 else hf / ac_sq_total
    zero_frac = NAN if np.isnan(ac).any() else np.mean(np.abs(ac) < zero_threshold)
    return np.array([dc.mean(), dc.std(), np.mean(np.abs(ac)), hf_ratio, zero_frac])


def blockiness(gray: np.ndarray) -> float:
    """(b + 1e-6) / (i + 1e-6), pooled over horizontal and vertical neighbour pairs."""
    g = np.asarray(gray, np.float64)
    h, w = g.shape
    boundary, other = [], []
    for x in range(w - 1):  # horizontal pairs (x, x+1), every row
        diffs = np.abs(g[:, x + 1] - g[:, x])
        (boundary if x % 8 == 7 else other).extend(diffs.tolist())
    for y in range(h - 1):  # vertical pairs (y, y+1), every column
        diffs = np.abs(g[y + 1, :] - g[y, :])
        (boundary if y % 8 == 7 else other).extend(diffs.tolist())
    if not boundary or not other:
        return NAN
    return (np.mean(boundary) + 1e-6) / (np.mean(other) + 1e-6)


def frame_features(gray: np.ndarray) -> np.ndarray:
    """Every group's twin (the function named like the group), in the feature table's order."""
    return np.concatenate([np.atleast_1d(globals()[group](gray)) for group in FRAME.groups])


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, float64[H, W]."""
    f = np.asarray(rgb, np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


# ---------------------------------------------------------------- local (tile) features

LOCAL_EPS = 1e-6
MAP_ORDER = ("noise", "lap_var", "grad_energy", "block_strength", "block_phase", "resample",
             "cb_mean", "cb_std", "cr_mean", "cr_std")
DEVIANCE = ("noise", "lap_var", "grad_energy", "resample", "cb_mean", "cr_mean")
LOG_MAPS = ("noise", "lap_var", "grad_energy")


def _peak_ratio(profile: np.ndarray) -> float:
    """(max + eps) / (mean + eps) of |DFT| over frequencies 1..T/2 that are not multiples of T/8;
    NaN bins (no entries) take the mean of the others."""
    t = len(profile)
    p = np.where(np.isnan(profile), np.nanmean(profile) if np.isfinite(profile).any() else 0.0, profile)
    mag = np.abs(np.fft.fft(p))
    freqs = [f for f in range(1, t // 2 + 1) if f % (t // 8)]
    sel = mag[freqs]
    return (sel.max() + LOCAL_EPS) / (sel.mean() + LOCAL_EPS)


def _block_profile(g: np.ndarray, rows: range, cols: range, axis: int) -> np.ndarray:
    """Mean |neighbour difference| per 8x8 grid phase: axis 1 pairs (x, x+1) by x % 8, axis 0
    pairs (y, y+1) by y % 8; a pair counts when its first pixel is in the tile."""
    h, w = g.shape
    sums, counts = np.zeros(8), np.zeros(8)
    for y in rows:
        for x in cols:
            if axis == 1 and x + 1 < w:
                sums[x % 8] += abs(g[y, x + 1] - g[y, x])
                counts[x % 8] += 1
            if axis == 0 and y + 1 < h:
                sums[y % 8] += abs(g[y + 1, x] - g[y, x])
                counts[y % 8] += 1
    return sums / counts


def tile_maps(gray: np.ndarray, cb=None, cr=None, tile: int = 32) -> np.ndarray:
    """float64[10, H // tile, W // tile], straight from the definitions, one tile at a time."""
    g = np.asarray(gray, np.float64)
    h, w = g.shape
    ny, nx = h // tile, w // tile
    out = np.full((10, ny, nx), np.nan)
    if min(h, w) >= 3:
        r = _valid_3x3(g, HIGH_PASS)
        lap = _valid_3x3(g, LAPLACIAN)
        gx, gy = _valid_3x3(g, SOBEL_X), _valid_3x3(g, SOBEL_Y)
        dxx = _valid_3x3(g, [[0, 0, 0], [1, -2, 1], [0, 0, 0]])
        dyy = _valid_3x3(g, [[0, 1, 0], [0, -2, 0], [0, 1, 0]])
    for ty in range(ny):
        for tx in range(nx):
            y0, x0 = ty * tile, tx * tile
            # filter centres (i, j) in the tile and in the valid interior; arrays index (i-1, j-1)
            ci = [i for i in range(y0, y0 + tile) if 1 <= i <= h - 2]
            cj = [j for j in range(x0, x0 + tile) if 1 <= j <= w - 2]
            sub = np.ix_([i - 1 for i in ci], [j - 1 for j in cj])
            out[0, ty, tx] = np.mean(r[sub] ** 2)
            out[1, ty, tx] = np.var(lap[sub])
            out[2, ty, tx] = np.mean(gx[sub] ** 2 + gy[sub] ** 2)
            hp = _block_profile(g, range(y0, y0 + tile), range(x0, x0 + tile), 1)
            vp = _block_profile(g, range(y0, y0 + tile), range(x0, x0 + tile), 0)
            bh, bv = int(np.argmax(hp)), int(np.argmax(vp))
            other = np.delete(hp, bh).mean() + np.delete(vp, bv).mean()
            out[3, ty, tx] = (hp[bh] + vp[bv] + LOCAL_EPS) / (other + LOCAL_EPS)
            out[4, ty, tx] = 8 * bv + bh
            prof_x = np.full(tile, np.nan)
            prof_y = np.full(tile, np.nan)
            for k in range(tile):
                if 1 <= x0 + k <= w - 2:
                    prof_x[k] = np.mean(np.abs(dxx[[i - 1 for i in ci], x0 + k - 1]))
                if 1 <= y0 + k <= h - 2:
                    prof_y[k] = np.mean(np.abs(dyy[y0 + k - 1, [j - 1 for j in cj]]))
            out[5, ty, tx] = max(_peak_ratio(prof_x), _peak_ratio(prof_y))
            for c, plane in ((6, cb), (8, cr)):
                if plane is None:
                    continue
                p = np.asarray(plane, np.float64)
                sy = 1 if p.shape[0] == h else 2
                sx = 1 if p.shape[1] == w else 2
                part = p[y0 // sy:(y0 + tile) // sy, x0 // sx:(x0 + tile) // sx]
                out[c, ty, tx] = part.mean()
                out[c + 1, ty, tx] = part.std()
    return out


def _robust(v: np.ndarray) -> tuple[float, float]:
    med = np.median(v)
    return med, np.median(np.abs(v - med))


def inconsistency(maps: np.ndarray):
    """(features[15], zmap, deviant, region) of one grid's maps, with scipy.ndimage.label."""
    from scipy import ndimage

    ny, nx = maps.shape[1:]
    feats, zs = [], []
    for name in DEVIANCE:
        raw = maps[MAP_ORDER.index(name)]
        if raw.size == 0 or np.isnan(raw).any():
            feats += [NAN, NAN]
            continue
        med, mad = _robust(raw)
        v = np.log1p(raw) if name in LOG_MAPS else raw
        mv, madv = _robust(v)
        z = np.abs(v - mv) / (1.4826 * madv + LOCAL_EPS)
        feats += [mad / (abs(med) + LOCAL_EPS), z.max()]
        zs.append(z)
    deviant = np.zeros((ny, nx), bool)
    region = np.zeros((ny, nx), bool)
    if not zs:
        zmap = np.full((ny, nx), np.nan)
        feats += [NAN, NAN]
    else:
        zmap = np.max(zs, axis=0)
        deviant = zmap > 3.5
        labels, n = ndimage.label(deviant)          # 4-connectivity, labels in raster order
        if n == 0:
            feats += [0.0, 0.0]
        else:
            sizes = np.bincount(labels.ravel())[1:]
            best = int(np.argmax(sizes)) + 1       # first of the largest
            region = labels == best
            yy, xx = np.where(region)
            box = (yy.max() - yy.min() + 1) * (xx.max() - xx.min() + 1)
            feats += [region.sum() / (ny * nx), region.sum() / box]
    strong = maps[3] > 1.0
    if strong.any():
        phases = maps[4][strong].astype(int)
        feats.append(np.bincount(phases, minlength=64).max() / strong.sum())
    else:
        feats.append(NAN)
    return np.array(feats, np.float64), zmap, deviant, region


def temporal_features(maps_seq, deviant_seq, region_seq) -> np.ndarray:
    """[region_presence, centroid_motion, mask_iou, flicker_in, flicker_out, flicker_ratio]."""
    n = len(maps_seq)
    ny, nx = deviant_seq[0].shape
    diag = np.hypot(ny, nx)
    presence = np.mean([r.any() for r in region_seq])
    motion, iou, fin, fout = [], [], [], []
    for f in range(n - 1):
        ra, rb = region_seq[f], region_seq[f + 1]
        if ra.any() and rb.any():
            ca = np.array(np.where(ra)).mean(axis=1)
            cb = np.array(np.where(rb)).mean(axis=1)
            motion.append(np.hypot(*(ca - cb)) / diag)
        da, db = deviant_seq[f], deviant_seq[f + 1]
        if (da | db).any():
            iou.append((da & db).sum() / (da | db).sum())
        va = np.log1p(maps_seq[f][[0, 1, 2]])
        vb = np.log1p(maps_seq[f + 1][[0, 1, 2]])
        d = np.abs(vb - va).mean(axis=0)
        if ra.any():
            fin.append(d[ra].mean())
        if (~ra).any():
            fout.append(d[~ra].mean())

    def mean(x):
        return float(np.mean(x)) if x else NAN

    fi, fo = mean(fin), mean(fout)
    ratio = (fi + LOCAL_EPS) / (fo + LOCAL_EPS) if fin and fout else NAN
    return np.array([presence, mean(motion), mean(iou), fi, fo, ratio])
