"""The deviant-tile map of a video's local features, drawn over a frame: one drawing for the
training report's "where in the frame" section, ``fvc app`` and ``fvc scan``.

Of the sampled frames (those the features read, :func:`fvcflow.video.sample_indices`), the one
whose most deviant 32 px tile has the largest robust z (:func:`fvcflow.kernels.local_frame`) is
shown in gray, each tile tinted by its combined robust z, the deviant tiles (z above
``Z_DEVIANT``) outlined in yellow and their largest connected group in cyan.
:func:`overlay_figure` draws it with matplotlib (the report, the app: a colour bar);
:func:`overlay_image` draws the same with Pillow as a small JPEG (the scan page: one per video,
in milliseconds); :func:`top_tiles` gives the most deviant tiles as numbers (scores.parquet,
``--json``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fvcflow.errors import FvcError
from fvcflow.kernels import Z_DEVIANT, LocalFrame, local_frame
from fvcflow.stages.local import COARSE, TILE
from fvcflow.video import iter_yuv, probe, sample_indices

#: outline colours: the largest connected group of deviant tiles, and the other deviant tiles
REGION_RGB, DEVIANT_RGB = (0, 229, 255), (255, 212, 0)


def most_deviant_frame(path: str | Path) -> tuple[int, np.ndarray, LocalFrame]:
    """(frame index, luma, its LocalFrame) of the sampled frame with the largest tile z."""
    info = probe(path)
    best = None
    for i, (y, cb, cr) in iter_yuv(path, sample_indices(info.n_frames), info=info):
        r = local_frame(y, cb, cr, tile=TILE, coarse=COARSE)
        score = float(np.nanmax(r.zmap)) if r.zmap.size and np.isfinite(r.zmap).any() else -1.0
        if best is None or score > best[0]:
            best = (score, i, np.array(y), r)
    if best is None:
        raise FvcError(f"{path}: no decodable frames")
    return best[1], best[2], best[3]


def top_tiles(result: LocalFrame, n: int = 5, *, tile: int = TILE) -> list[dict[str, Any]]:
    """The ``n`` tiles of highest combined robust z, highest first: ``x``, ``y`` (top-left pixel),
    ``size`` (pixels), ``z``, ``deviant`` (z above ``Z_DEVIANT``), ``region`` (in the largest
    connected group of deviant tiles).

    >>> g = np.random.default_rng(0).integers(0, 256, (96, 128)).astype(np.uint8)
    >>> r = local_frame(g)
    >>> t = top_tiles(r, 2)
    >>> t[0]["z"] >= t[1]["z"], t[0]["size"], t[0]["z"] == round(float(np.nanmax(r.zmap)), 4)
    (True, 32, True)
    """
    z = np.asarray(result.zmap, dtype=np.float64)
    if not z.size:
        return []
    flat = np.where(np.isfinite(z), z, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:n]
    out = []
    for k in order:
        if not np.isfinite(flat[k]):
            break
        ty, tx = divmod(int(k), z.shape[1])
        out.append({"x": tx * tile, "y": ty * tile, "size": tile, "z": round(float(z[ty, tx]), 4),
                    "deviant": bool(result.deviant[ty, tx]), "region": bool(result.region[ty, tx])})
    return out


def overlay_figure(gray: np.ndarray, result: LocalFrame, title: str = "", *, tile: int = TILE) -> Figure:
    """The frame in gray, the tiles' combined robust z as a heat map, the deviant region outlined.

    >>> g = np.random.default_rng(0).integers(0, 256, (96, 128)).astype(np.uint8)
    >>> overlay_figure(g, local_frame(g)).axes[0].get_title()
    ''
    """
    h, w = gray.shape
    ny, nx = result.zmap.shape
    fig = Figure(figsize=(6.0, 6.0 * h / max(w, 1) + 0.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if ny and nx:
        z = np.clip(np.nan_to_num(result.zmap, nan=0.0), 0, 3 * Z_DEVIANT)
        im = ax.imshow(z, cmap="magma", alpha=0.45, extent=(0, nx * tile, ny * tile, 0),
                       vmin=0, vmax=3 * Z_DEVIANT, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.7, label="tile robust z")
        for ty, tx in zip(*np.nonzero(result.region)):
            ax.add_patch(_rect(tx * tile, ty * tile, tile, "#00e5ff", 1.8))
        for ty, tx in zip(*np.nonzero(result.deviant & ~result.region)):
            ax.add_patch(_rect(tx * tile, ty * tile, tile, "#ffd400", 0.8))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return fig


def _rect(x, y, size, color, lw):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), size, size, fill=False, edgecolor=color, linewidth=lw)


def overlay_image(gray: np.ndarray, result: LocalFrame, *, width: int = 192, tile: int = TILE,
                  quality: int = 80) -> bytes:
    """:func:`overlay_figure`'s drawing as a small JPEG ``width`` pixels wide (Pillow, no axes):
    the frame in gray, each tile tinted red by its robust z (clipped at 3 x ``Z_DEVIANT``), the
    deviant tiles outlined in yellow and their largest connected group in cyan.

    >>> g = np.random.default_rng(0).integers(0, 256, (96, 128)).astype(np.uint8)
    >>> overlay_image(g, local_frame(g), width=64)[:2] == b"\\xff\\xd8"
    True
    """
    from PIL import Image, ImageDraw

    h, w = gray.shape
    rgb = np.repeat(np.asarray(gray, dtype=np.float32)[..., None], 3, axis=2)
    ny, nx = result.zmap.shape
    if ny and nx:
        a = np.clip(np.nan_to_num(result.zmap, nan=0.0), 0, 3 * Z_DEVIANT) / (3 * Z_DEVIANT) * 0.6
        alpha = np.zeros((h, w), np.float32)
        alpha[:ny * tile, :nx * tile] = np.kron(a, np.ones((tile, tile)))[:h, :w]
        rgb = rgb * (1 - alpha[..., None]) + alpha[..., None] * np.array([255, 40, 0], np.float32)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    scale = width / max(w, 1)
    img = img.resize((width, max(1, round(h * scale))), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    outlines = ((result.deviant & ~result.region, DEVIANT_RGB, 1), (result.region, REGION_RGB, 2))
    for mask, colour, lw in outlines:
        for ty, tx in zip(*np.nonzero(mask)):
            x0, y0 = tx * tile * scale, ty * tile * scale
            draw.rectangle((x0, y0, x0 + tile * scale - 1, y0 + tile * scale - 1), outline=colour, width=lw)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


__all__ = ["most_deviant_frame", "overlay_figure", "overlay_image", "top_tiles"]
