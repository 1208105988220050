"""The feature tables: one row per feature, the only place a feature's position is written.

A table lists its features in output order; each row is ``(name, group)``, and the table adds
the position (the row's index) and the definition reference (the section of docs/FEATURES.md
whose table defines the feature, row ``# = position + 1``). Each table declares a ``version``:
bump it when a definition changes but no name does. Everything else derives from it:
``FEATURE_NAMES``, the positions every kernel pass writes (``positions("noise_energy", ...)``,
module-level ints that Numba freezes as constants), the slice each public per-group function
returns (``group_slice``), the naive twins' concatenation order in ``tests/naive.py`` and the
tests' expectations.

A group is the set of features one public function returns (``noise_residual``, ``dct_stats``,
...), named like that function and its naive twin; a group's positions are contiguous. One
kernel pass may compute several groups (the fused neighbourhood pass computes three).

Adding a per-frame feature: a row here, its definition in docs/FEATURES.md, the pass that writes
``out[position]`` and the naive twin's return value; ``test_kernels.py`` checks the rest. The
lake's column names, feature sets and the stage 2 and 4 cache keys follow by themselves
(``fvcflow.schema`` derives them, and the feature schema version, from these tables).

This module is plain Python (no numpy, no Numba): ``fvcflow.schema`` reads it without loading a
kernel. The tile-map, local and temporal tables of ``kernels/local.py`` live here for that reason.

>>> from fvcflow.kernels.table import FRAME
>>> FRAME.position("dct_dc_mean"), FRAME.group_slice("sharpness")
(3, slice(8, 11, None))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Feature:
    """One output of a kernel: its name, the group (public function) that returns it, its index
    in the output vector and where its definition is written."""

    name: str
    group: str
    position: int
    definition: str


class FeatureTable:
    """An ordered table of features: positions, groups and their slices, all from ``rows``."""

    def __init__(self, rows: Sequence[tuple[str, str]], definition: str, *, version: int):
        self.version = version
        self.features = tuple(Feature(name, group, i, definition) for i, (name, group) in enumerate(rows))
        self.names = tuple(f.name for f in self.features)
        self.groups = tuple(dict.fromkeys(f.group for f in self.features))
        self.definition = definition
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate feature names in {self.names}")
        self._position = {f.name: f.position for f in self.features}
        self._slices = {}
        for group in self.groups:
            at = [f.position for f in self.features if f.group == group]
            if at != list(range(at[0], at[-1] + 1)):
                raise ValueError(f"group {group!r} is not contiguous: positions {at}")
            self._slices[group] = slice(at[0], at[-1] + 1)

    def __len__(self) -> int:
        return len(self.features)

    def position(self, name: str) -> int:
        """The index of feature ``name`` in the output vector."""
        try:
            return self._position[name]
        except KeyError:
            raise KeyError(f"no feature {name!r}; the table has {', '.join(self.names)}") from None

    def positions(self, *names: str) -> tuple[int, ...]:
        return tuple(self.position(n) for n in names)

    def group_slice(self, group: str) -> slice:
        """The contiguous positions of ``group`` (what its public function returns)."""
        try:
            return self._slices[group]
        except KeyError:
            raise KeyError(f"no group {group!r}; the table has {', '.join(self.groups)}") from None

    def group_names(self, group: str) -> tuple[str, ...]:
        return self.names[self.group_slice(group)]


#: where the features are defined, and the section of each table
FEATURES_DOC = "docs/FEATURES.md"

#: the per-frame features of ``frame_features`` / ``batch_features``, in output order
FRAME = FeatureTable([
    ("noise_energy", "noise_residual"),
    ("noise_mean_abs", "noise_residual"),
    ("noise_kurtosis", "noise_residual"),
    ("dct_dc_mean", "dct_stats"),
    ("dct_dc_std", "dct_stats"),
    ("dct_ac_mean_abs", "dct_stats"),
    ("dct_hf_ratio", "dct_stats"),
    ("dct_ac_zero_frac", "dct_stats"),
    ("lap_var", "sharpness"),
    ("grad_mean", "sharpness"),
    ("grad_std", "sharpness"),
    ("blockiness", "blockiness"),
], definition=f"{FEATURES_DOC}#per-frame-features", version=1)

FEATURES = FRAME.features
FEATURE_NAMES = FRAME.names
N_FEATURES = len(FRAME)
GROUPS = FRAME.groups

# ---------------------------------------------------------------- local features (kernels/local.py)

#: the tile maps, in the order of the first axis of every maps array
MAPS = FeatureTable([
    ("noise", "luma"), ("lap_var", "luma"), ("grad_energy", "luma"),
    ("block_strength", "grid"), ("block_phase", "grid"),
    ("resample", "resample"),
    ("cb_mean", "chroma"), ("cb_std", "chroma"), ("cr_mean", "chroma"), ("cr_std", "chroma"),
], definition=f"{FEATURES_DOC}#tile-maps", version=1)
MAP_NAMES = MAPS.names
N_MAPS = len(MAPS)

#: the maps that define deviant tiles (each gives a spread and a maxz feature of ``LOCAL``)
DEVIANCE = ("noise", "lap_var", "grad_energy", "resample", "cb_mean", "cr_mean")

#: frame-level features of one grid, in order: per deviance map (spread, maxz), then the region
#: and the grid phase (``_frame_local`` writes out[2 * map index + 0/1], then the last three)
LOCAL = FeatureTable(
    [(f"{c}_{s}", "deviance") for c in DEVIANCE for s in ("spread", "maxz")]
    + [("region_size", "region"), ("region_compactness", "region"), ("phase_agreement", "grid")],
    definition=f"{FEATURES_DOC}#frame-level-inconsistency", version=1)
LOCAL_NAMES = LOCAL.names
N_LOCAL = len(LOCAL)

#: temporal features over the sampled frames (base grid)
TEMPORAL = FeatureTable([
    ("region_presence", "region"), ("centroid_motion", "region"), ("mask_iou", "region"),
    ("flicker_in", "flicker"), ("flicker_out", "flicker"), ("flicker_ratio", "flicker"),
], definition=f"{FEATURES_DOC}#temporal-stability", version=1)
TEMPORAL_NAMES = TEMPORAL.names
N_TEMPORAL = len(TEMPORAL)
