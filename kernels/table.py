"""The feature tables: one row per feature, the only place a feature's position is written.

A table lists its features in output order; each row is ``(name, group)``, and the table adds
the position (the row's index) and the definition reference (the section of docs/FEATURES.md
whose table defines the feature, row ``# = position + 1``). Everything else derives from it:
``FEATURE_NAMES``, the positions every kernel pass writes (``positions("noise_energy", ...)``,
module-level ints that Numba freezes as constants), the slice each public per-group function
returns (``group_slice``), the naive twins' concatenation order in ``tests/naive.py`` and the
tests' expectations.

A group is the set of features one public function returns (``noise_residual``, ``dct_stats``,
...), named like that function and its naive twin; a group's positions are contiguous. One
kernel pass may compute several groups (the fused neighbourhood pass computes three).

Adding a per-frame feature: a row here, its definition in docs/FEATURES.md, the pass that writes
``out[position]`` and the naive twin's return value; ``test_kernels.py`` checks the rest.

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

    def __init__(self, rows: Sequence[tuple[str, str]], definition: str):
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
], definition=f"{FEATURES_DOC}#per-frame-features")

FEATURES = FRAME.features
FEATURE_NAMES = FRAME.names
N_FEATURES = len(FRAME)
GROUPS = FRAME.groups
