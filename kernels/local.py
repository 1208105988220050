"""Where in the frame: tile maps, local-inconsistency and temporal-stability features.

Definitions: docs/FEATURES.md, "Local features". One sweep over the luma frame accumulates,
for every tile of the base grid (``tile`` px, default 32), the raw sums of every map; a
coarser grid (``coarse`` x the base tile, default 64 px) is pooled from those sums, not
recomputed; the chroma planes (Cb, Cr, any 4:2:0 / 4:2:2 / 4:4:4 subsampling) are swept once
too. Maps are float64 ``[N_MAPS, ny, nx]`` in ``MAP_NAMES`` order; the frame-level features
(``LOCAL_NAMES``) and the temporal ones (``TEMPORAL_NAMES``) are computed from the maps by
jitted cores as well. Public wrappers validate, jitted cores do not.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .config import JIT
from .features import _check_dtype, _prepare
from .table import DEVIANCE, LOCAL, MAPS, N_LOCAL, N_MAPS, N_TEMPORAL, TEMPORAL, TEMPORAL_NAMES

NAN = math.nan

# the tables (MAPS, LOCAL, TEMPORAL) are plain Python in kernels/table.py: fvcflow.schema reads them
M_NOISE, M_LAP, M_GRAD, M_BLOCK, M_PHASE, M_RESAMPLE = MAPS.positions(
    "noise", "lap_var", "grad_energy", "block_strength", "block_phase", "resample")
M_CB, M_CBS, M_CR, M_CRS = MAPS.positions("cb_mean", "cb_std", "cr_mean", "cr_std")
assert (M_CBS, M_CRS) == (M_CB + 1, M_CR + 1)     # a chroma plane's mean and std are neighbours

#: whether each deviance map (``DEVIANCE``) is compared in log(1 + x)
_DEV_IDX = np.array(MAPS.positions(*DEVIANCE), np.int64)
_DEV_LOG = np.array([c in ("noise", "lap_var", "grad_energy") for c in DEVIANCE])
#: robust z above which a tile is deviant; the scale of the MAD (normal consistency)
Z_DEVIANT = 3.5
MAD_SCALE = 1.4826
EPS = 1e-6

L_REGION = LOCAL.position("region_size")
assert LOCAL.positions(*(f"{c}_{s}" for c in DEVIANCE for s in ("spread", "maxz"))) == tuple(range(L_REGION))
assert LOCAL.positions("region_compactness", "phase_agreement") == (L_REGION + 1, L_REGION + 2)
T_PRESENCE, T_MOTION, T_IOU, T_FIN, T_FOUT, T_RATIO = TEMPORAL.positions(*TEMPORAL_NAMES)
#: the per-tile values whose frame-to-frame change is the flicker (log1p of these maps)
FLICKER = ("noise", "lap_var", "grad_energy")
_FLICKER_IDX = np.array(MAPS.positions(*FLICKER), np.int64)

# slots of the per-tile luma sums
S_N, S_R2, S_L, S_L2, S_G2 = 0, 1, 2, 3, 4
N_SUMS = 5


# ---------------------------------------------------------------- jitted cores: sweeps

@numba.jit(**JIT)
def _load(src, dst):
    for x in range(src.shape[0]):
        dst[x] = src[x]


@numba.jit(**JIT)
def _row_filters(p, q, t, col, dyy_row):
    """Filter outputs of the interior row q (rows p above, t below), added to the band's
    column sums ``col`` ([5, W]: R^2, L, L^2, gx^2 + gy^2, |dxx|); |dyy| is stored in
    ``dyy_row`` (``col``'s type). For uint8 input the rows are float32 and every value here is
    an integer below 2^24: exact, and stored as int32."""
    w = q.shape[0]
    two = q.dtype.type(2.0)
    eight = q.dtype.type(8.0)
    acc = col.dtype.type
    for j in range(1, w - 1):
        p0 = p[j - 1]
        p1 = p[j]
        p2 = p[j + 1]
        q0 = q[j - 1]
        q1 = q[j]
        q2 = q[j + 1]
        t0 = t[j - 1]
        t1 = t[j]
        t2 = t[j + 1]
        r = eight * q1 - ((p0 + p1 + p2) + (q0 + q2) + (t0 + t1 + t2))
        dxx = (q0 + q2) - two * q1
        dyy = (p1 + t1) - two * q1
        lap = dxx + dyy
        gx = (p2 - p0) + two * (q2 - q0) + (t2 - t0)
        gy = (t0 - p0) + two * (t1 - p1) + (t2 - p2)
        col[0, j] += acc(r * r)
        col[1, j] += acc(lap)
        col[2, j] += acc(lap * lap)
        col[3, j] += acc(gx * gx + gy * gy)
        col[4, j] += acc(abs(dxx))
        dyy_row[j] = acc(abs(dyy))


@numba.jit(**JIT)
def _segment_sum(v, j0, j1, zero):
    """``zero + sum v[j0:j1]``, added in index order. The uint8 path's sums are of integers
    (int32 column sums) with an int64 ``zero``: exact, and integer additions vectorise in any
    order; the float path's are float64 and add one after another (no ``reassoc``: the same
    order, so the same bits, on every machine)."""
    s = zero
    for j in range(j0, j1):
        s += v[j]
    return s


@numba.jit(**JIT)
def _diffs(row, nxt, colh, colv, xe, w, has_next):
    """Add |row[x+1] - row[x]| (x < xe) to ``colh`` and |nxt[x] - row[x]| to ``colv``."""
    acc = colh.dtype.type
    for x in range(xe):
        colh[x] += acc(abs(row[x + 1] - row[x]))
    if has_next:
        for x in range(w):
            colv[x] += acc(abs(nxt[x] - row[x]))


@numba.jit(**JIT)
def _luma_sums(a, b, ring, dyy_row, col, colh, colv, sums, px, py, hb, vb, zero):
    """Accumulate the raw per-tile sums of the 2-D C-contiguous frame ``a`` (tile ``b`` px).

    ``ring`` (3, W): scratch rows, float32 for uint8 input (exact), else float64; ``dyy_row``
    (W), ``col`` (5, W), ``colh`` (W), ``colv`` (8, W): scratch row and zeroed column sums over
    a band of tiles, int32 for uint8 input (exact integers: a band's column sum of R^2 is at
    most 2040^2 x 256 < 2^31 for tiles up to 256 px), else float64; ``zero``: what their
    segment sums start from (int64 0 for int32 columns, else 0.0). sums[ty, tx]: (count slot,
    filled by ``_luma_counts``; sum R^2, sum L, sum L^2,
    sum gx^2 + gy^2) over the filter centres in the tile; px[ty, tx, k] sum |dxx| of tile
    column k, py[ty, tx, k] sum |dyy| of tile row k; hb[ty, tx, p] sum |a[y, x+1] - a[y, x]|
    over x % 8 == p, vb the same vertically. Arrays come zeroed. Per band of tiles the
    filter outputs and differences are summed per column (vector adds), then folded into
    the tiles once.
    """
    h, w = a.shape
    ny = h // b
    nx = w // b
    wu = nx * b
    xe = min(wu, w - 1)
    _load(a[0], ring[0])
    if h > 1:
        _load(a[1], ring[1])
    for i in range(ny * b):
        ty = i // b
        ky = i - ty * b
        row = ring[i % 3]
        if i >= 1 and i + 1 < h:
            _load(a[i + 1], ring[(i + 1) % 3])
        _diffs(row, ring[(i + 1) % 3], colh, colv[i % 8], xe, wu, i + 1 < h)
        if 1 <= i <= h - 2 and w >= 3:
            _row_filters(ring[(i - 1) % 3], row, ring[(i + 1) % 3], col, dyy_row)
            for tx in range(nx):
                py[ty, tx, ky] += _segment_sum(dyy_row, max(tx * b, 1), min(tx * b + b, w - 1), zero)
        if ky == b - 1:                 # end of a band of tiles: fold the column sums in
            for tx in range(nx):
                x0 = tx * b
                for s in range(4):
                    sums[ty, tx, S_R2 + s] = _segment_sum(col[s], x0, x0 + b, zero)
                for p in range(8):
                    vb[ty, tx, p] = _segment_sum(colv[p], x0, x0 + b, zero)
                for k in range(b):
                    x = x0 + k
                    px[ty, tx, k] = col[4, x]
                    hb[ty, tx, x % 8] += colh[x]
            col[:, :] = 0
            colh[:] = 0
            colv[:, :] = 0


@numba.jit(**JIT)
def _luma_counts(h, w, b, sums, pxn, pyn, hbn, vbn):
    """The counts that go with ``_luma_sums``: filter centres, profile entries, pairs."""
    ny = h // b
    nx = w // b
    for ty in range(ny):
        y0 = ty * b
        rows = min(y0 + b, h - 1) - max(y0, 1)
        for tx in range(nx):
            x0 = tx * b
            cols = min(x0 + b, w - 1) - max(x0, 1)
            sums[ty, tx, S_N] = max(rows, 0) * max(cols, 0)
            for k in range(b):
                pxn[ty, tx, k] = max(rows, 0) if 1 <= x0 + k <= w - 2 else 0
                pyn[ty, tx, k] = max(cols, 0) if 1 <= y0 + k <= h - 2 else 0
                if x0 + k + 1 < w:
                    hbn[ty, tx, (x0 + k) % 8] += b
                if y0 + k + 1 < h:
                    vbn[ty, tx, (y0 + k) % 8] += b


@numba.jit(**JIT)
def _chroma_stats(plane, b, sy, sx, ny, nx, st, zero):
    """(n, mean, M2) of each tile of a chroma plane: tile (ty, tx) covers plane rows
    [ty b / sy, (ty + 1) b / sy) and columns likewise; shifted by the tile's first value. The
    sums start from ``zero``: int64 for uint8 planes (exact integer sums, which vectorise in any
    order), else 0.0 (float64, added in raster order)."""
    ch, cw = plane.shape
    by = b // sy
    bx = b // sx
    for ty in range(ny):
        r0 = ty * by
        r1 = min(r0 + by, ch)
        for tx in range(nx):
            c0 = tx * bx
            c1 = min(c0 + bx, cw)
            n = (r1 - r0) * (c1 - c0)
            if n <= 0:
                st[ty, tx, 0] = 0.0
                st[ty, tx, 1] = NAN
                st[ty, tx, 2] = NAN
                continue
            k = zero + plane[r0, c0]
            s1 = zero
            s2 = zero
            for r in range(r0, r1):
                pr = plane[r]
                for c in range(c0, c1):
                    d = (zero + pr[c]) - k
                    s1 += d
                    s2 += d * d
            st[ty, tx, 0] = n
            st[ty, tx, 1] = k + s1 / n
            st[ty, tx, 2] = max(s2 - s1 * s1 / n, 0.0)


# ---------------------------------------------------------------- jitted cores: pooling, maps

@numba.jit(**JIT)
def _pool_sums(sums, px, pxn, py, pyn, hb, hbn, vb, vbn, m):
    """Sums of the grid of (m b)-px tiles from those of the b-px grid (aligned top-left)."""
    ny = sums.shape[0] // m
    nx = sums.shape[1] // m
    b = px.shape[2]
    t = m * b
    o_sums = np.zeros((ny, nx, N_SUMS))
    o_px = np.zeros((ny, nx, t))
    o_pxn = np.zeros((ny, nx, t))
    o_py = np.zeros((ny, nx, t))
    o_pyn = np.zeros((ny, nx, t))
    o_hb = np.zeros((ny, nx, 8))
    o_hbn = np.zeros((ny, nx, 8))
    o_vb = np.zeros((ny, nx, 8))
    o_vbn = np.zeros((ny, nx, 8))
    for ty in range(ny):
        for tx in range(nx):
            for dy in range(m):
                for dx in range(m):
                    sy = ty * m + dy
                    sx = tx * m + dx
                    for s in range(N_SUMS):
                        o_sums[ty, tx, s] += sums[sy, sx, s]
                    for k in range(b):
                        o_px[ty, tx, dx * b + k] += px[sy, sx, k]
                        o_pxn[ty, tx, dx * b + k] += pxn[sy, sx, k]
                        o_py[ty, tx, dy * b + k] += py[sy, sx, k]
                        o_pyn[ty, tx, dy * b + k] += pyn[sy, sx, k]
                    for p in range(8):
                        o_hb[ty, tx, p] += hb[sy, sx, p]
                        o_hbn[ty, tx, p] += hbn[sy, sx, p]
                        o_vb[ty, tx, p] += vb[sy, sx, p]
                        o_vbn[ty, tx, p] += vbn[sy, sx, p]
    return o_sums, o_px, o_pxn, o_py, o_pyn, o_hb, o_hbn, o_vb, o_vbn


@numba.jit(**JIT)
def _pool_chroma(st, m):
    """(n, mean, M2) of (m b)-px tiles from the b-px tiles' (Chan et al. pairwise merge)."""
    ny = st.shape[0] // m
    nx = st.shape[1] // m
    out = np.zeros((ny, nx, 3))
    for ty in range(ny):
        for tx in range(nx):
            n = 0.0
            mean = 0.0
            m2 = 0.0
            for dy in range(m):
                for dx in range(m):
                    nb = st[ty * m + dy, tx * m + dx, 0]
                    if nb == 0.0:
                        continue
                    mb = st[ty * m + dy, tx * m + dx, 1]
                    tot = n + nb
                    delta = mb - mean
                    mean += delta * nb / tot
                    m2 += st[ty * m + dy, tx * m + dx, 2] + delta * delta * n * nb / tot
                    n = tot
            out[ty, tx, 0] = n
            out[ty, tx, 1] = mean if n > 0 else NAN
            out[ty, tx, 2] = m2 if n > 0 else NAN
    return out


@numba.jit(**JIT)
def _profile_peak(prof, cnt, cos_t, sin_t, vals, re, im):
    """Peak-to-mean ratio of the DFT magnitude of a mean |second derivative| profile.

    Bins without entries take the mean of the others; frequencies 1..T/2 except multiples
    of T/8 (the 8x8 coding grid's harmonics); (max + EPS) / (mean + EPS). ``cos_t``, ``sin_t``:
    the DFT tables [k, f]; ``vals`` (T), ``re``, ``im`` (T/2 + 1): scratch. The transform adds
    bin k's term to every frequency at once (a loop without reductions, which vectorises), so
    each frequency's sum adds the bins in order, on every machine.
    """
    t = prof.shape[0]
    tot = 0.0
    nv = 0
    for k in range(t):
        if cnt[k] > 0:
            vals[k] = prof[k] / cnt[k]
            tot += vals[k]
            nv += 1
    fill = tot / nv if nv else 0.0
    for k in range(t):
        if cnt[k] <= 0:
            vals[k] = fill
    nfreq = re.shape[0]
    re[:] = 0.0
    im[:] = 0.0
    for k in range(t):
        x = vals[k]
        ck = cos_t[k]
        sk = sin_t[k]
        for f in range(nfreq):
            re[f] += x * ck[f]
            im[f] += x * sk[f]          # the imaginary part's sign: squared away
    step = t // 8
    best = 0.0
    acc = 0.0
    nf = 0
    for f in range(1, t // 2 + 1):
        if f % step == 0:
            continue
        mag = math.sqrt(re[f] * re[f] + im[f] * im[f])
        best = max(best, mag)
        acc += mag
        nf += 1
    return (best + EPS) / (acc / nf + EPS)


@numba.jit(**JIT)
def _chroma_cell(st, ty, tx, c, out):
    """Mean and population std of one chroma tile into maps c, c + 1 (NaN without chroma)."""
    if st.shape[0] == 0 or st[ty, tx, 0] == 0.0:
        out[c, ty, tx] = NAN
        out[c + 1, ty, tx] = NAN
    else:
        out[c, ty, tx] = st[ty, tx, 1]
        out[c + 1, ty, tx] = math.sqrt(st[ty, tx, 2] / st[ty, tx, 0])


@numba.jit(**JIT)
def _maps_from_sums(sums, px, pxn, py, pyn, hb, hbn, vb, vbn, cb, cr, cos_t, sin_t, out):
    """Fill ``out[N_MAPS, ny, nx]`` from the pooled sums (cb, cr: (n, mean, M2) or empty)."""
    ny, nx = sums.shape[0], sums.shape[1]
    t = px.shape[2]
    vals = np.empty(t)
    re = np.empty(t // 2 + 1)
    im = np.empty(t // 2 + 1)
    for ty in range(ny):
        for tx in range(nx):
            n = sums[ty, tx, S_N]
            out[M_NOISE, ty, tx] = sums[ty, tx, S_R2] / n
            ml = sums[ty, tx, S_L] / n
            out[M_LAP, ty, tx] = max(sums[ty, tx, S_L2] / n - ml * ml, 0.0)
            out[M_GRAD, ty, tx] = sums[ty, tx, S_G2] / n
            # 8x8 grid: phase profiles, argmax (first), strength
            bh = 0
            bv = 0
            hv = np.empty(8)
            vv = np.empty(8)
            for p in range(8):
                hv[p] = hb[ty, tx, p] / hbn[ty, tx, p]
                vv[p] = vb[ty, tx, p] / vbn[ty, tx, p]
                if hv[p] > hv[bh]:
                    bh = p
                if vv[p] > vv[bv]:
                    bv = p
            oh = 0.0
            ov = 0.0
            for p in range(8):
                if p != bh:
                    oh += hv[p]
                if p != bv:
                    ov += vv[p]
            out[M_BLOCK, ty, tx] = (hv[bh] + vv[bv] + EPS) / (oh / 7.0 + ov / 7.0 + EPS)
            out[M_PHASE, ty, tx] = 8.0 * bv + bh
            rx = _profile_peak(px[ty, tx], pxn[ty, tx], cos_t, sin_t, vals, re, im)
            ry = _profile_peak(py[ty, tx], pyn[ty, tx], cos_t, sin_t, vals, re, im)
            out[M_RESAMPLE, ty, tx] = max(rx, ry)
            _chroma_cell(cb, ty, tx, M_CB, out)
            _chroma_cell(cr, ty, tx, M_CR, out)


# ---------------------------------------------------------------- jitted cores: frame features

@numba.jit(**JIT)
def _median(x):
    return np.median(x)


@numba.jit(**JIT)
def _flood(mask, marks, stack, y, x):
    """Mark in ``marks`` the 4-connected component of ``mask`` holding tile ``(y, x)``; return its
    size and bounding-box area (``stack``: scratch of ``mask.size`` rows)."""
    ny, nx = mask.shape
    top = 0
    stack[0, 0] = y
    stack[0, 1] = x
    marks[y, x] = True
    size = 0
    y0, y1, x0, x1 = y, y, x, x
    while top >= 0:
        cy = stack[top, 0]
        cx = stack[top, 1]
        top -= 1
        size += 1
        y0 = min(y0, cy)
        y1 = max(y1, cy)
        x0 = min(x0, cx)
        x1 = max(x1, cx)
        for k in range(4):
            qy = cy + (1 if k == 0 else (-1 if k == 1 else 0))
            qx = cx + (1 if k == 2 else (-1 if k == 3 else 0))
            if 0 <= qy < ny and 0 <= qx < nx and mask[qy, qx] and not marks[qy, qx]:
                marks[qy, qx] = True
                top += 1
                stack[top, 0] = qy
                stack[top, 1] = qx
    return size, (y1 - y0 + 1) * (x1 - x0 + 1)


@numba.jit(**JIT)
def _largest_component(mask, region):
    """Mark in ``region`` the largest 4-connected component of ``mask`` (ties: the first met
    in raster order); return its size and its bounding-box area."""
    ny, nx = mask.shape
    seen = np.zeros((ny, nx), np.bool_)
    stack = np.empty((ny * nx, 2), np.int64)
    best, best_area, best_y, best_x = 0, 0, -1, -1
    for y in range(ny):
        for x in range(nx):
            if mask[y, x] and not seen[y, x]:
                size, area = _flood(mask, seen, stack, y, x)
                if size > best:
                    best, best_area, best_y, best_x = size, area, y, x
    region[:, :] = False
    if best == 0:
        return 0, 0
    _flood(mask, region, stack, best_y, best_x)     # mark the winner again from its first tile
    return best, best_area


@numba.jit(**JIT)
def _frame_local(maps, dev_idx, dev_log, out, zmap, deviant, region):
    """``LOCAL_NAMES`` of one grid into ``out``; the combined robust z of every tile into
    ``zmap`` (NaN where no deviance map is defined), the deviant and region masks."""
    ny, nx = maps.shape[1], maps.shape[2]
    nt = ny * nx
    zmap[:, :] = NAN
    deviant[:, :] = False
    region[:, :] = False
    any_map = False
    for ci in range(dev_idx.shape[0]):
        raw = maps[dev_idx[ci]].ravel()
        if nt == 0 or np.isnan(raw).any():
            out[2 * ci] = NAN
            out[2 * ci + 1] = NAN
            continue
        med = _median(raw)
        mad = _median(np.abs(raw - med))
        out[2 * ci] = mad / (abs(med) + EPS)
        v = np.log1p(raw) if dev_log[ci] else raw.copy()
        mv = _median(v)
        scale = MAD_SCALE * _median(np.abs(v - mv)) + EPS
        zmax = 0.0
        for t in range(nt):
            z = abs(v[t] - mv) / scale
            zmax = max(zmax, z)
            y = t // nx
            x = t - y * nx
            if np.isnan(zmap[y, x]) or z > zmap[y, x]:
                zmap[y, x] = z
        any_map = True
        out[2 * ci + 1] = zmax
    k = L_REGION
    if not any_map:
        out[k] = NAN
        out[k + 1] = NAN
    else:
        for y in range(ny):
            for x in range(nx):
                deviant[y, x] = zmap[y, x] > Z_DEVIANT
        size, area = _largest_component(deviant, region)
        out[k] = size / nt
        out[k + 1] = size / area if size else 0.0
    # grid-phase agreement over the tiles that show a grid (strength > 1)
    counts = np.zeros(64)
    n_grid = 0
    for y in range(ny):
        for x in range(nx):
            if maps[M_BLOCK, y, x] > 1.0:
                counts[int(maps[M_PHASE, y, x])] += 1.0
                n_grid += 1
    out[k + 2] = NAN if n_grid == 0 else counts.max() / n_grid


@numba.jit(**JIT)
def _temporal(values, deviant, region, out):
    """``TEMPORAL_NAMES`` over frames: values[f, c, ny, nx] (log1p of the flicker maps),
    deviant[f] and region[f] masks of the base grid."""
    nf, _, ny, nx = values.shape
    present = 0
    for f in range(nf):
        if region[f].any():
            present += 1
    out[T_PRESENCE] = present / nf if nf else NAN
    motion = 0.0
    n_motion = 0
    iou = 0.0
    n_iou = 0
    fin = 0.0
    n_in = 0
    fout = 0.0
    n_out = 0
    diag = math.sqrt(ny * ny + nx * nx) if ny * nx else 1.0
    for f in range(nf - 1):
        if region[f].any() and region[f + 1].any():
            ya, xa = _centroid(region[f])
            yb, xb = _centroid(region[f + 1])
            motion += math.sqrt((ya - yb) ** 2 + (xa - xb) ** 2) / diag
            n_motion += 1
        inter = 0
        union = 0
        s_in = 0.0
        c_in = 0
        s_out = 0.0
        c_out = 0
        for y in range(ny):
            for x in range(nx):
                a = deviant[f, y, x]
                b = deviant[f + 1, y, x]
                if a and b:
                    inter += 1
                if a or b:
                    union += 1
                d = 0.0
                for c in range(values.shape[1]):
                    d += abs(values[f + 1, c, y, x] - values[f, c, y, x])
                d /= values.shape[1]
                if region[f, y, x]:
                    s_in += d
                    c_in += 1
                else:
                    s_out += d
                    c_out += 1
        if union:
            iou += inter / union
            n_iou += 1
        if c_in:
            fin += s_in / c_in
            n_in += 1
        if c_out:
            fout += s_out / c_out
            n_out += 1
    out[T_MOTION] = motion / n_motion if n_motion else NAN
    out[T_IOU] = iou / n_iou if n_iou else NAN
    out[T_FIN] = fin / n_in if n_in else NAN
    out[T_FOUT] = fout / n_out if n_out else NAN
    out[T_RATIO] = (out[T_FIN] + EPS) / (out[T_FOUT] + EPS) if n_in and n_out else NAN


@numba.jit(**JIT)
def _log1p(a):
    """``log1p`` of every element by the C library, as ``_frame_local`` takes it (NumPy's own
    ``np.log1p`` picks a vectorised implementation by the CPU: AVX-512 machines get other bits)."""
    return np.log1p(a)


@numba.jit(**JIT)
def _centroid(mask):
    sy = 0.0
    sx = 0.0
    n = 0
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x]:
                sy += y
                sx += x
                n += 1
    return sy / n, sx / n


# ---------------------------------------------------------------- public API

class LocalFrame(NamedTuple):
    """What :func:`local_frame` returns for one frame.

    ``features``: float64[2 * N_LOCAL], ``LOCAL_NAMES`` of the base grid then of the coarse
    grid; ``maps`` / ``coarse_maps``: float64[N_MAPS, ny, nx] (``MAP_NAMES``); ``zmap``: the
    combined robust z of each base tile; ``deviant`` / ``region``: bool[ny, nx] masks of the
    base grid (deviant tiles; the largest connected group of them).
    """

    features: np.ndarray
    maps: np.ndarray
    coarse_maps: np.ndarray
    zmap: np.ndarray
    deviant: np.ndarray
    region: np.ndarray


def _check_tile(tile: int, coarse: int) -> None:
    if not isinstance(tile, (int, np.integer)) or tile < 16 or tile % 8:
        raise ValueError(f"tile must be a multiple of 8 and at least 16 pixels, got {tile!r}")
    if not isinstance(coarse, (int, np.integer)) or coarse < 1:
        raise ValueError(f"coarse must be a positive int (coarse tiles = coarse x tile), got {coarse!r}")


def _subsampling(name: str, plane: np.ndarray, h: int, w: int) -> tuple[int, int]:
    """(sy, sx) of a chroma plane against an (h, w) luma frame: each 1 or 2."""
    factors = []
    for n_c, n_l, axis in ((plane.shape[0], h, "rows"), (plane.shape[1], w, "columns")):
        if n_c == n_l:
            factors.append(1)
        elif n_c == (n_l + 1) // 2:
            factors.append(2)
        else:
            raise ValueError(f"{name} must have the luma's {axis} ({n_l}) or half of them "
                             f"(rounded up, {(n_l + 1) // 2}), got shape {plane.shape}")
    return factors[0], factors[1]


def _dft_tables(t: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the DFT of length t, [k, f] (bin, frequency 0..t/2), C-contiguous."""
    ang = 2.0 * np.pi * np.outer(np.arange(t), np.arange(t // 2 + 1)) / t
    return np.ascontiguousarray(np.cos(ang)), np.ascontiguousarray(np.sin(ang))


_TABLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _tables(t: int) -> tuple[np.ndarray, np.ndarray]:
    if t not in _TABLES:
        _TABLES[t] = _dft_tables(t)
    return _TABLES[t]


def _maps(sums_all, chroma, t: int) -> np.ndarray:
    sums = sums_all[0]
    out = np.empty((N_MAPS, sums.shape[0], sums.shape[1]))
    if sums.shape[0] and sums.shape[1]:
        cb, cr = chroma
        _maps_from_sums(*sums_all, cb, cr, *_tables(t), out)
    return out


_NO_CHROMA = np.zeros((0, 0, 3))


def tile_maps_pair(gray: np.ndarray, cb: np.ndarray | None = None, cr: np.ndarray | None = None, *,
                   tile: int = 32, coarse: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The tile maps of one frame on the base grid and on the coarse grid, from one sweep.

    Parameters
    ----------
    gray : ndarray, shape (H, W), dtype uint8, float32 or float64
        The luma frame; any memory layout.
    cb, cr : ndarray, optional
        The chroma planes (same dtypes), each of shape (H or ceil(H/2), W or ceil(W/2)); both
        or neither. Without them the four chroma maps are NaN.
    tile : int
        Base tile side in luma pixels, a multiple of 8, at least 16. Full tiles from the
        top-left; the remainder rows and columns belong to no tile.
    coarse : int
        The coarse grid's tiles are ``coarse`` x ``coarse`` base tiles.

    Returns
    -------
    (ndarray, ndarray)
        float64[N_MAPS, H // tile, W // tile] and float64[N_MAPS, H // (coarse tile),
        W // (coarse tile)], maps in ``MAP_NAMES`` order (docs/FEATURES.md).

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import MAP_NAMES, tile_maps_pair
    >>> fine, coarse = tile_maps_pair(np.full((64, 96), 9, np.uint8))
    >>> fine.shape, coarse.shape
    ((10, 2, 3), (10, 1, 1))
    >>> float(fine[MAP_NAMES.index("noise")].max()), float(fine[MAP_NAMES.index("block_strength")].max())
    (0.0, 1.0)
    """
    _check_tile(tile, coarse)
    a = _prepare(gray, 2, "gray", "(H, W)")
    h, w = a.shape
    planes = []
    if (cb is None) != (cr is None):
        raise ValueError("give both chroma planes cb and cr, or neither")
    if cb is not None:
        for name, p in (("cb", cb), ("cr", cr)):
            p = np.asarray(p)
            _check_dtype(p, name)
            if p.ndim != 2:
                raise ValueError(f"{name} must be a 2-D array, got shape {p.shape}")
            sy, sx = _subsampling(name, p, h, w)
            planes.append((_prepare(p, 2, name, "(H, W)"), sy, sx))
    b = int(tile)
    ny, nx = h // b, w // b
    sums = np.zeros((ny, nx, N_SUMS))
    px, pxn, py, pyn = (np.zeros((ny, nx, b)) for _ in range(4))
    hb, hbn, vb, vbn = (np.zeros((ny, nx, 8)) for _ in range(4))
    if ny and nx:
        exact = a.dtype == np.uint8 and b <= 256      # integer arithmetic (see _luma_sums)
        work, acc = (np.float32, np.int32) if exact else (np.float64, np.float64)
        _luma_sums(a, b, np.zeros((3, w), work), np.zeros(w, acc), np.zeros((5, w), acc), np.zeros(w, acc),
                   np.zeros((8, w), acc), sums, px, py, hb, vb, np.int64(0) if exact else 0.0)
        _luma_counts(h, w, b, sums, pxn, pyn, hbn, vbn)
    chroma = [_NO_CHROMA, _NO_CHROMA]
    for k, (p, sy, sx) in enumerate(planes):
        st = np.zeros((ny, nx, 3))
        if ny and nx:
            _chroma_stats(p, b, sy, sx, ny, nx, st, np.int64(0) if p.dtype == np.uint8 else 0.0)
        chroma[k] = st
    base = (sums, px, pxn, py, pyn, hb, hbn, vb, vbn)
    fine = _maps(base, chroma, b)
    m = int(coarse)
    if m == 1:
        return fine, fine.copy()
    pooled = _pool_sums(*base, m) if ny and nx else tuple(
        np.zeros((ny // m, nx // m, s)) for s in (N_SUMS, m * b, m * b, m * b, m * b, 8, 8, 8, 8))
    pooled_chroma = [st if st.shape[0] == 0 else _pool_chroma(st, m) for st in chroma]
    return fine, _maps(pooled, pooled_chroma, m * b)


def tile_maps(gray: np.ndarray, cb: np.ndarray | None = None, cr: np.ndarray | None = None, *,
              tile: int = 32) -> np.ndarray:
    """The tile maps of one frame, float64[N_MAPS, H // tile, W // tile] (``MAP_NAMES``).

    See :func:`tile_maps_pair` for the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import tile_maps
    >>> tile_maps(np.zeros((40, 70), np.uint8)).shape
    (10, 1, 2)
    """
    return tile_maps_pair(gray, cb, cr, tile=tile, coarse=1)[0]


def _check_maps(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != N_MAPS:
        raise ValueError(f"maps must be an array of shape ({N_MAPS}, ny, nx), got shape {maps.shape}")
    if maps.dtype.kind != "f":
        raise TypeError(f"maps must be a float array, got {maps.dtype}")
    return np.ascontiguousarray(maps, np.float64)


def inconsistency(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frame-level inconsistency features of one grid's maps.

    Parameters
    ----------
    maps : ndarray, shape (N_MAPS, ny, nx), float
        As :func:`tile_maps` returns them.

    Returns
    -------
    features : float64[N_LOCAL]
        ``LOCAL_NAMES``: per deviance map its robust spread (MAD / median) and the largest
        robust z of a tile; the size (share of tiles) and compactness (tiles / bounding box)
        of the largest 4-connected group of deviant tiles; the grid-phase agreement.
    zmap : float64[ny, nx]
        The combined robust z of each tile (the largest over the deviance maps).
    deviant, region : bool[ny, nx]
        Tiles with ``zmap > Z_DEVIANT``; the largest connected group of them.

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import LOCAL_NAMES, inconsistency, tile_maps
    >>> gray = np.random.default_rng(0).integers(100, 110, (128, 128)).astype(np.uint8)
    >>> gray[32:64, 32:64] = 105                         # one flat tile among noisy ones
    >>> f, z, deviant, region = inconsistency(tile_maps(gray))
    >>> int(region.sum()), bool(region[1, 1]), float(f[LOCAL_NAMES.index("region_size")])
    (1, True, 0.0625)
    """
    maps = _check_maps(maps)
    ny, nx = maps.shape[1:]
    out = np.empty(N_LOCAL)
    zmap = np.empty((ny, nx))
    deviant = np.zeros((ny, nx), bool)
    region = np.zeros((ny, nx), bool)
    _frame_local(maps, _DEV_IDX, _DEV_LOG, out, zmap, deviant, region)
    return out, zmap, deviant, region


def local_frame(gray: np.ndarray, cb: np.ndarray | None = None, cr: np.ndarray | None = None, *,
                tile: int = 32, coarse: int = 2) -> LocalFrame:
    """Maps, inconsistency features and masks of one frame (base and coarse grid).

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import N_LOCAL, local_frame
    >>> r = local_frame(np.random.default_rng(1).integers(0, 256, (130, 200)).astype(np.uint8))
    >>> r.features.shape == (2 * N_LOCAL,), r.maps.shape, r.coarse_maps.shape
    (True, (10, 4, 6), (10, 2, 3))
    """
    fine, coarse_maps = tile_maps_pair(gray, cb, cr, tile=tile, coarse=coarse)
    f1, zmap, deviant, region = inconsistency(fine)
    f2 = inconsistency(coarse_maps)[0]
    return LocalFrame(np.concatenate([f1, f2]), fine, coarse_maps, zmap, deviant, region)


def temporal_features(frames: list[LocalFrame]) -> np.ndarray:
    """Temporal stability of the deviant region over consecutive frames, ``TEMPORAL_NAMES``.

    ``region_presence``: share of frames with a deviant region; ``centroid_motion``: mean
    distance between consecutive region centroids, in tiles over the grid diagonal;
    ``mask_iou``: mean intersection over union of consecutive deviant masks (pairs with an
    empty union left out); ``flicker_in``/``flicker_out``: mean absolute change of the
    log1p noise, Laplacian and gradient maps between consecutive frames inside / outside the
    earlier frame's region, and their ratio. NaN where no pair defines a value; all NaN when
    the grid changes size between frames.

    Examples
    --------
    >>> import numpy as np
    >>> from fvcflow.kernels import TEMPORAL_NAMES, local_frame, temporal_features
    >>> rng = np.random.default_rng(2)
    >>> frames = [local_frame(rng.integers(0, 256, (64, 64)).astype(np.uint8)) for _ in range(3)]
    >>> temporal_features(frames).shape == (len(TEMPORAL_NAMES),)
    True
    """
    out = np.full(N_TEMPORAL, NAN)
    if not frames:
        return out
    shapes = {f.maps.shape for f in frames}
    if len(shapes) != 1:
        return out
    values = _log1p(np.ascontiguousarray(np.stack([f.maps[_FLICKER_IDX] for f in frames])))
    deviant = np.ascontiguousarray(np.stack([f.deviant for f in frames]))
    region = np.ascontiguousarray(np.stack([f.region for f in frames]))
    _temporal(values, deviant, region, out)
    return out
