"""Numba kernels of fvcflow: the per-frame forensic features, the local
(tile) maps and features, and luma conversion.

Arrays in, arrays out; this package imports only numpy and numba. Definitions:
docs/FEATURES.md; the features' names, groups and positions: the tables ``FRAME``, ``MAPS``,
``LOCAL`` and ``TEMPORAL`` (``kernels/table.py``). Importable as ``fvcflow.kernels``.

The tables are plain Python and load with the package; the kernels (and numpy, numba) load on
first use of one of their names (``from fvcflow.kernels import frame_features``), so that
``fvcflow.schema`` can read the tables without loading Numba.
"""

from .table import (
    FEATURE_NAMES,
    FEATURES,
    FRAME,
    GROUPS,
    LOCAL,
    LOCAL_NAMES,
    MAP_NAMES,
    MAPS,
    N_FEATURES,
    N_LOCAL,
    N_MAPS,
    N_TEMPORAL,
    TEMPORAL,
    TEMPORAL_NAMES,
    Feature,
    FeatureTable,
)

#: the kernels' public names -> the module that defines them (loaded on first use)
_LAZY = {
    "rgb_to_gray": "color",
    **dict.fromkeys(("batch_features", "blockiness", "dct_stats", "frame_features", "noise_residual",
                     "sharpness"), "features"),
    **dict.fromkeys(("Z_DEVIANT", "LocalFrame", "inconsistency", "local_frame", "temporal_features",
                     "tile_maps", "tile_maps_pair"), "local"),
}

__all__ = [
    "FEATURE_NAMES", "FEATURES", "FRAME", "GROUPS", "N_FEATURES", "Feature", "FeatureTable",
    "MAPS", "LOCAL", "TEMPORAL",
    "batch_features", "blockiness", "dct_stats", "frame_features", "noise_residual", "rgb_to_gray",
    "sharpness",
    "LOCAL_NAMES", "MAP_NAMES", "N_LOCAL", "N_MAPS", "N_TEMPORAL", "TEMPORAL_NAMES", "Z_DEVIANT",
    "LocalFrame",
    "inconsistency", "local_frame", "temporal_features", "tile_maps", "tile_maps_pair",
]


def __getattr__(name: str):
    home = _LAZY.get(name)
    if home == "color":
        from . import color as module
    elif home == "features":
        from . import features as module
    elif home == "local":
        from . import local as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
