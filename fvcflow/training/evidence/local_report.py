"""The report's "where in the frame" section: for the top-scored videos, a frame with its deviant
tiles drawn over it (people would rather look than read).

For each of the ``top`` videos the best model scores most likely fake (out-of-fold originals),
the sampled frames are decoded again (:func:`fvcflow.video.iter_yuv`) and measured with
:func:`fvcflow.kernels.local_frame`; the frame whose most deviant tile has the largest robust z is
drawn in gray with the combined z of every 32 px tile as a translucent heat map and the largest
connected group of deviant tiles outlined.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from fvcflow.errors import FvcError
from fvcflow.kernels import Z_DEVIANT, LocalFrame, local_frame
from fvcflow.stages.local import COARSE, TILE
from fvcflow.store import Lake, read_parquet
from fvcflow.video import iter_yuv, probe, sample_indices

log = logging.getLogger("fvcflow.report")


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


def overlay_figure(gray: np.ndarray, result: LocalFrame, title: str = "", *, tile: int = TILE) -> Figure:
    """The frame in gray, the tiles' combined robust z as a heat map, the deviant region outlined.

    >>> import numpy as np
    >>> from fvcflow.kernels import local_frame
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


def local_section(lake: Lake, predictions: pl.DataFrame, best: str | None, img_dir: Path, *,
                  top: int = 3) -> str:
    """HTML of the section (empty when there is nothing to show); images go to ``img_dir``.

    ``predictions``: the best model's (video_id, label, split, prob_fake, ...).
    """
    if not best or predictions.height == 0:
        return ""
    index = read_parquet(lake.index)
    if index is None or "path" not in index.columns:
        return ""
    scored = (predictions.filter(pl.col("split") == "oof")
              .sort("prob_fake", descending=True).head(top)
              .join(index.select("video_id", "path"), on="video_id", how="inner")
              .sort("prob_fake", descending=True))
    parts = []
    for row in scored.iter_rows(named=True):
        try:
            i, gray, r = most_deviant_frame(row["path"])
        except FvcError as exc:                      # a video moved since: say so, draw the rest
            log.warning("local overlay of %s: %s", row["video_id"], exc)
            continue
        label = {0: "real", 1: "fake"}.get(row["label"], str(row["label"]))
        title = (f"{row['video_id']} (label {label}, P(fake) {row['prob_fake']:.2f}), frame {i}; "
                 f"region {int(r.region.sum())} of {r.region.size} tiles")
        name = f"local_{len(parts)}.png"
        overlay_figure(gray, r, title).savefig(img_dir / name)
        parts.append(f"<figure><img src='report/{name}' alt='{html.escape(title)}'>"
                     f"<figcaption>{html.escape(title)}</figcaption></figure>")
    if not parts:
        return ""
    intro = (f"<p>The {len(parts)} videos {html.escape(best)} scores most likely fake (out-of-fold): "
             f"the sampled frame with the most deviant {TILE} px tile, each tile tinted by its robust "
             f"z (deviant above {Z_DEVIANT}: yellow outline; the largest connected group: cyan).</p>")
    return "<h2>Where in the frame: deviant tiles of the top-scored videos</h2>" + intro + "".join(parts)
