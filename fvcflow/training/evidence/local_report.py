"""The report's "where in the frame" section: for the top-scored videos, a frame with its deviant
tiles drawn over it (people would rather look than read).

For each of the ``top`` videos the best model scores most likely fake (out-of-fold originals),
the drawing of :mod:`fvcflow.stages.overlay` (shared with ``fvc app`` and ``fvc scan``): the
sampled frame whose most deviant tile has the largest robust z, in gray, with the combined z of
every 32 px tile as a translucent heat map and the largest connected group of deviant tiles
outlined.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import polars as pl

from fvcflow.errors import FvcError
from fvcflow.kernels import Z_DEVIANT
from fvcflow.stages.local import TILE
from fvcflow.stages.overlay import most_deviant_frame, overlay_figure
from fvcflow.store import Lake, read_parquet

log = logging.getLogger("fvcflow.report")


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
