"""The local features of one video: per-frame tile inconsistency aggregated, and temporal stability.

Per sampled frame, :func:`fvcflow.kernels.local_frame` gives the 15 ``LOCAL_NAMES`` of the base
(32 px) and of the coarse (64 px) grid; over the frames each is aggregated as ``mean`` and
``max`` (NaN ignored), named ``l32_{name}_{agg}`` / ``l64_{name}_{agg}``; the 6
``TEMPORAL_NAMES`` follow as ``lt_{name}`` (docs/FEATURES.md, "Local features"). The grids, the
aggregates and the column names are :mod:`fvcflow.schema`'s.

>>> len(local_columns()), local_columns()[0], local_columns("s4_")[-1]
(66, 'l32_noise_spread_mean', 's4_lt_flicker_ratio')
"""

from __future__ import annotations

import warnings

import numpy as np

from fvcflow.kernels import LOCAL_NAMES, N_LOCAL, TEMPORAL_NAMES, LocalFrame, local_frame, temporal_features
from fvcflow.schema import COARSE, GRIDS, LOCAL_AGGREGATES, TEMPORAL_PREFIX, TILE, local_columns

__all__ = ["COARSE", "TILE", "LocalAccumulator", "local_columns"]


class LocalAccumulator:
    """Collects :class:`~fvcflow.kernels.LocalFrame` results of a video's sampled frames.

    Keeps only the small per-frame results (maps and masks are a few KB per frame), never the
    frames themselves.

    >>> import numpy as np
    >>> acc = LocalAccumulator()
    >>> for seed in range(3):
    ...     _ = acc.add(np.random.default_rng(seed).integers(0, 256, (96, 128)).astype(np.uint8))
    >>> row = acc.row()
    >>> len(row) == len(local_columns()), 0.0 <= row["lt_region_presence"] <= 1.0
    (True, True)
    """

    def __init__(self) -> None:
        self.frames: list[LocalFrame] = []

    def add(self, gray: np.ndarray, cb: np.ndarray | None = None, cr: np.ndarray | None = None) -> LocalFrame:
        result = local_frame(gray, cb, cr, tile=TILE, coarse=COARSE)
        # keep the features and the base grid's masks/maps; drop the coarse maps
        self.frames.append(result._replace(coarse_maps=result.coarse_maps[:, :0, :0]))
        return result

    def row(self, prefix: str = "") -> dict[str, float]:
        """The columns of :func:`local_columns` (NaN when no frame was added)."""
        per_frame = np.array([f.features for f in self.frames]).reshape(-1, 2 * N_LOCAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)       # all-NaN columns give NaN
            stats = {"mean": np.nanmean(per_frame, axis=0), "max": np.nanmax(per_frame, axis=0)} \
                if len(per_frame) else {a: np.full(2 * N_LOCAL, np.nan) for a in LOCAL_AGGREGATES}
        out: dict[str, float] = {}
        for gi, g in enumerate(GRIDS):
            for j, name in enumerate(LOCAL_NAMES):
                for agg in LOCAL_AGGREGATES:
                    out[f"{prefix}{g}_{name}_{agg}"] = float(stats[agg][gi * N_LOCAL + j])
        for name, v in zip(TEMPORAL_NAMES, temporal_features(self.frames)):
            out[f"{prefix}{TEMPORAL_PREFIX}{name}"] = float(v)
        return out
