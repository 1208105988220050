"""Numba kernels of fvcflow: the per-frame forensic features, the local
(tile) maps and features, and luma conversion.

Arrays in, arrays out; this package imports only numpy and numba. Definitions:
docs/FEATURES.md; the per-frame features' names, groups and positions: the table ``FRAME``
(``kernels/table.py``). Importable as ``fvcflow.kernels``.
"""

from .color import rgb_to_gray
from .features import batch_features, blockiness, dct_stats, frame_features, noise_residual, sharpness
from .local import (
    LOCAL_NAMES,
    MAP_NAMES,
    N_LOCAL,
    N_MAPS,
    N_TEMPORAL,
    TEMPORAL_NAMES,
    Z_DEVIANT,
    LocalFrame,
    inconsistency,
    local_frame,
    temporal_features,
    tile_maps,
    tile_maps_pair,
)
from .table import FEATURE_NAMES, FEATURES, FRAME, GROUPS, N_FEATURES, Feature, FeatureTable

__all__ = [
    "FEATURE_NAMES", "FEATURES", "FRAME", "GROUPS", "N_FEATURES", "Feature", "FeatureTable",
    "batch_features", "blockiness", "dct_stats", "frame_features", "noise_residual", "rgb_to_gray",
    "sharpness",
    "LOCAL_NAMES", "MAP_NAMES", "N_LOCAL", "N_MAPS", "N_TEMPORAL", "TEMPORAL_NAMES", "Z_DEVIANT",
    "LocalFrame",
    "inconsistency", "local_frame", "temporal_features", "tile_maps", "tile_maps_pair",
]
