"""The lake's schema, in one home: where each table lives, its DuckDB view, the column names and
prefixes, the feature sets, the variants and the versions that go into the cache keys.

Everything else reads names from here: :class:`fvcflow.store.Lake` (paths), the stage specs (the
table each stage publishes, the variants), the training data loader and the model registry (the
feature sets), :mod:`fvcflow.analytics` and ``fvc sql`` (the views), docs/DESIGN.md ("The data
lake", compared with :data:`LAKE` by ``tests/test_docs.py``).

This module imports the standard library and the kernel tables only (``kernels/table.py``, plain
Python): reading a column name never loads Numba, OpenCV or a compute module.

The feature columns derive from the kernel tables (``FRAME``, ``MAPS``, ``LOCAL``,
``TEMPORAL``), and so does :data:`FEATURE_SCHEMA_VERSION`, a digest of every table's name order
and declared ``version`` and of the column layout written here. It is part of the stage 2 and 4
cache keys: adding, removing or reordering a feature, or bumping a table's version, recomputes the
cached feature rows by itself; no version number has to be remembered.

>>> len(feature_columns()), feature_columns(STAGE4_PREFIX)[0], local_columns()[0], face_columns()[0]
(51, 's4_noise_energy_mean', 'l32_noise_spread_mean', 'f_found')
>>> {name: len(cols) for name, cols in FEATURE_SETS.items()}
{'s2': 51, 's24': 104, 's2l': 117, 's2lf': 148, 's24l': 236, 's2lt': 122}
>>> LAKE_PATHS["stage2"], VIEWS["scaled_features"], STAGE_TABLES["augment"]
('stage2/features.parquet', 'stage4', 'stage1')
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from fvcflow.kernels.table import FRAME, LOCAL, MAPS, TEMPORAL, FeatureTable

# ---------------------------------------------------------------- the work directory


@dataclass(frozen=True)
class Place:
    """One place in the work dir.

    ``key``: its name (``Lake.path(key)``, and a ``Lake`` property of that name); ``path``:
    relative to the work dir, ``/``-separated, a folder ending in ``/``, ``{field}`` where
    ``Lake.path`` fills in a value; ``about``: what it holds (its line in docs/DESIGN.md);
    ``view``: the DuckDB view over this Parquet table (``fvc sql``), if any; ``stage``: the video
    stage (``fvcflow.stages.specs.SPECS``) that publishes it, if any.
    """

    key: str
    path: str
    about: str
    view: str | None = None
    stage: str | None = None

    @property
    def shown(self) -> str:
        """The path as docs/DESIGN.md writes it (``{source}`` as ``<source>``)."""
        return self.path.replace("{", "<").replace("}", ">")


#: every place of the work dir, in the order docs/DESIGN.md lists them
LAKE: tuple[Place, ...] = (
    Place("index", "index/videos.parquet", 'one row per source video (see "Keys")', view="videos"),
    Place("failures", "index/failures.parquet",
          "every input that could not be used: stage, path, reason", view="failures"),
    Place("unmatched", "index/unmatched-{source}.txt",
          "what the last ingest of a corpus could not pair (videos, rows)"),
    Place("raw", "raw/", "archives extracted by ingest"),
    Place("demo_corpus", "demo-corpus/", "the built-in demo corpus, when no corpus root is given"),
    Place("stage1_videos", "stage1/videos/", "augmented videos"),
    Place("stage1", "stage1/augmented.parquet", "one row per augmented copy (variant aug-k)",
          view="augmented", stage="augment"),
    Place("faces_tracks", "faces/tracks/", "one Parquet table of face tracks per video (frame, box, "
          "landmarks, score, track)"),
    Place("faces", "faces/faces.parquet", "one row per video: detector, tracks, face-found rate and size",
          view="faces", stage="faces"),
    Place("stage2", "stage2/features.parquet", "per-video handcrafted features (docs/FEATURES.md)",
          view="features", stage="features"),
    Place("stage3_videos", "stage3/videos/", "letterboxed videos"),
    Place("stage3", "stage3/scaled.parquet", "one row per letterboxed video, with its scaling flags",
          view="scaled", stage="scale"),
    Place("stage4", "stage4/features.parquet", "features of the scaled videos (s4_ columns)",
          view="scaled_features", stage="scaled_features"),
    Place("stage5", "stage5/", "training's tables and reports"),
    Place("splits", "stage5/splits.parquet", "video_id, group_id, fold (and the test hold-out)",
          view="splits"),
    Place("predictions", "stage5/predictions.parquet", "out-of-fold and test predictions per model",
          view="predictions"),
    Place("calibrated_predictions", "stage5/calibrated_predictions.parquet",
          "the registered detector's calibrated predictions"),
    Place("embeddings", "stage5/embeddings/",
          "frozen-backbone embeddings (Parquet) for XGBoost on deep features"),
    Place("resume", "stage5/resume/", "checkpoints of unfinished training, per model and key"),
    Place("report", "stage5/report.html", "the training report (HTML)"),
    Place("report_images", "stage5/report/", "its images"),
    Place("model_card", "stage5/model_card.md", "the registered detector's model card"),
    Place("cache", "cache/{stage}/", "each stage's manifest of per-video results, decoded clips"),
    Place("explore", "explore/", "`fvc explore`'s page and figures"),
    Place("logs", "logs/fvc-{command}.log", "each command's log: library records and warnings"),
    Place("locks", ".locks/{name}.lock", "advisory locks of shared tables' updates (flock)"),
    Place("mlflow_db", "mlflow.db", "MLflow tracking store (SQLite)"),
    Place("mlartifacts", "mlartifacts/", "MLflow artifacts"),
    Place("prefect_home", "prefect/", "PREFECT_HOME of the local server (SQLite)"),
)
#: place -> its path relative to the work dir
LAKE_PATHS: Mapping[str, str] = MappingProxyType({p.key: p.path for p in LAKE})
#: DuckDB view -> the place (a Parquet table) it reads
VIEWS: Mapping[str, str] = MappingProxyType({p.view: p.key for p in LAKE if p.view})
#: video stage -> the place of the table it publishes
STAGE_TABLES: Mapping[str, str] = MappingProxyType({p.stage: p.key for p in LAKE if p.stage})
#: views derived from the Parquet views (:mod:`fvcflow.analytics`)
DERIVED_VIEWS = ("feature_values",)
#: views over the MLflow store (:mod:`fvcflow.analytics`)
MLFLOW_VIEWS = ("mlflow_runs", "mlflow_metrics", "mlflow_params", "mlflow_model_versions")
#: the view over every scan's ``<home>/scans/<name>/scores.parquet`` (``fvc scan``; empty before any)
SCANS_VIEW = "scans"
#: the columns of a scan's scores.parquet, in order, with their DuckDB types
SCAN_COLUMNS: Mapping[str, str] = MappingProxyType({
    "path": "VARCHAR", "content_hash": "VARCHAR", "prob_fake": "DOUBLE", "verdict": "VARCHAR",
    "calibrated": "BOOLEAN", "calibration": "VARCHAR", "model": "VARCHAR", "registered_name": "VARCHAR",
    "version": "VARCHAR", "model_uri": "VARCHAR", "evidence_method": "VARCHAR",
    "evidence_approximate": "BOOLEAN", "top_features": "VARCHAR", "overlay": "VARCHAR",
    "overlay_frame": "BIGINT", "max_z": "DOUBLE", "top_tiles": "VARCHAR", "error": "VARCHAR",
    "error_type": "VARCHAR", "scanned_at": "VARCHAR", "scan": "VARCHAR", "threshold": "DOUBLE"})
#: every view ``fvc sql`` may offer (those whose tables exist)
ALL_VIEWS = (*VIEWS, *DERIVED_VIEWS, SCANS_VIEW, *MLFLOW_VIEWS)

# ---------------------------------------------------------------- keys and variants

#: the id of a video file, in every table
VIDEO_ID = "video_id"
#: columns every stage row carries from the index (docs/DESIGN.md, "Keys")
KEYS = ("group_id", "label", "label_raw", "source", "variant")
#: the variant of an indexed video; an augmented copy's is ``augmented_variant(k)``
ORIGINAL = "original"


def augmented_variant(copy: int) -> str:
    """The variant of the ``copy``-th augmented copy (1-based): ``aug-1``, ``aug-2``, ..."""
    return f"aug-{copy}"


def augmented_id(video_id: str, copy: int) -> str:
    """The ``video_id`` of the ``copy``-th augmented copy of ``video_id``."""
    return f"{video_id}~aug{copy}"


#: the variant prefix of a self-blended pseudo-fake (issue 22): labelled fake, trained on, never evaluated
BLEND_PREFIX = "blend-"


def blend_variant(copy: int) -> str:
    """The variant of the ``copy``-th self-blended pseudo-fake of a real video (1-based): ``blend-1``, ..."""
    return f"{BLEND_PREFIX}{copy}"


def blended_id(video_id: str, copy: int) -> str:
    """The ``video_id`` of the ``copy``-th self-blended pseudo-fake of ``video_id``."""
    return f"{video_id}~blend{copy}"

# ---------------------------------------------------------------- feature columns (stages 2 and 4)


#: aggregates of each per-frame feature over the sampled frames, in column order
AGGREGATES = ("mean", "std", "min", "max")
#: the container's cues, after the aggregated kernel columns
CODEC_COLUMNS = ("codec_bpp", "codec_gop", "codec_fps")
#: frames sampled and decoded (not features)
COUNT_COLUMNS = ("n_sampled", "n_decoded")
#: the prefix of every stage 4 feature column (stage 2's features of the letterboxed video)
STAGE4_PREFIX = "s4_"
#: stage 4's flags, from the scale stage
S4_FLAGS = ("is_upscaled", "is_downscaled")

#: base tile and coarse factor of the pipeline's local features: the grids l32 and l64
TILE, COARSE = 32, 2
GRIDS = (f"l{TILE}", f"l{TILE * COARSE}")
#: aggregates of each per-frame local feature over the sampled frames
LOCAL_AGGREGATES = ("mean", "max")
#: the prefix of the temporal local columns
TEMPORAL_PREFIX = "lt_"
#: how every local column name begins (after a stage prefix such as ``s4_``)
LOCAL_PREFIXES = tuple(f"{g}_" for g in GRIDS) + (TEMPORAL_PREFIX,)

#: the prefix of every face column
FACE_PREFIX = "f_"
#: the tile-map statistics compared between the face and its ring / the background
FACE_STATS = ("noise", "lap_var", "grad_energy", "block_strength", "resample", "cb_mean", "cr_mean")

#: the prefix of every embedding column (``stage5/embeddings/``)
EMBEDDING_PREFIX = "emb_"


def feature_columns(prefix: str = "") -> list[str]:
    """The 48 aggregated kernel columns (``FRAME`` x ``AGGREGATES``) and the 3 codec cues."""
    cols = [f"{prefix}{name}_{agg}" for name in FRAME.names for agg in AGGREGATES]
    return cols + [f"{prefix}{c}" for c in CODEC_COLUMNS]


def local_columns(prefix: str = "") -> list[str]:
    """The 60 aggregated per-frame local columns (``GRIDS`` x ``LOCAL`` x ``LOCAL_AGGREGATES``)
    and the 6 temporal ones (``lt_`` + ``TEMPORAL``)."""
    cols = [f"{prefix}{g}_{name}_{agg}" for g in GRIDS for name in LOCAL.names for agg in LOCAL_AGGREGATES]
    return cols + [f"{prefix}{TEMPORAL_PREFIX}{name}" for name in TEMPORAL.names]


def face_columns(prefix: str = "") -> list[str]:
    """``f_found``, ``f_box_area``, 14 face-vs-ring/background comparisons, the grid-phase match,
    the face box's 12 per-frame features (``f_box_{feature}``) and the landmark instability (2)."""
    cols = ["found", "box_area"]
    cols += [f"{s}_vs_{o}" for s in FACE_STATS for o in ("bg", "ring")]
    cols += ["phase_match"] + [f"box_{n}" for n in FRAME.names] + list(LANDMARK_FEATURES)
    return [f"{prefix}{FACE_PREFIX}{c}" for c in cols]


#: the face track's landmark instability columns (``f_`` + these; docs/FEATURES.md)
LANDMARK_FEATURES = ("lm_instability", "lm_step")


#: the columns of a stage row that are not features: the id, the keys, the counts, the file
NOT_FEATURES = frozenset({VIDEO_ID, *KEYS, *COUNT_COLUMNS, *(STAGE4_PREFIX + c for c in COUNT_COLUMNS),
                          "path", "content_hash", "split"})

# ---------------------------------------------------------------- feature sets

#: the learned tile evidence (issue 22): summaries of a tile model's scores, built inside each fold
#: of the cross-validation (``fvcflow.training.fitting.tiles``), never by a stage
TILE_PREFIX = "te_"
TILE_COLUMNS = tuple(TILE_PREFIX + c for c in ("peak", "peak_mean", "extent", "persistence", "mean"))

_S2, _LOCAL, _FACES = tuple(feature_columns()), tuple(local_columns()), tuple(face_columns())
_S4 = (*feature_columns(STAGE4_PREFIX), *S4_FLAGS)

#: every feature set a tabular model trains on -> its input columns, in order: stage 2 (``s2``),
#: with stage 4 (``s24``), with the local columns (``s2l``), and the face columns (``s2lf``),
#: stages 2 and 4 each with their local columns (``s24l``)
FEATURE_SETS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "s2": _S2,
    "s24": _S2 + _S4,
    "s2l": _S2 + _LOCAL,
    "s2lf": _S2 + _LOCAL + _FACES,
    "s24l": _S2 + _LOCAL + _S4 + tuple(local_columns(STAGE4_PREFIX)),
    "s2lt": _S2 + _LOCAL + TILE_COLUMNS,
})

# ---------------------------------------------------------------- versions (cache keys)

#: the kernel tables the feature columns derive from
KERNEL_TABLES: Mapping[str, FeatureTable] = MappingProxyType(
    {"frame": FRAME, "maps": MAPS, "local": LOCAL, "temporal": TEMPORAL})
#: what turns the tables into columns (written here, so part of the digest too)
_LAYOUT = {"aggregates": AGGREGATES, "codec": CODEC_COLUMNS, "counts": COUNT_COLUMNS, "grids": GRIDS,
           "local_aggregates": LOCAL_AGGREGATES, "temporal": TEMPORAL_PREFIX, "faces": FACE_STATS,
           "stage4": STAGE4_PREFIX}

#: bump when the local aggregation (``fvcflow/stages/local.py``) changes meaning; in the key when
#: ``features.local`` is on
LOCAL_VERSION = 1
#: bump when the face stage (``fvcflow/stages/faces.py``) changes meaning; in the key when
#: ``features.faces`` is on
FACE_VERSION = 2


def feature_schema_version(tables: Mapping[str, FeatureTable] = KERNEL_TABLES) -> str:
    """A digest of the feature tables (each one's name, declared version and feature names in
    order) and of the column layout: changes whenever a feature row's columns or meaning do.

    >>> from fvcflow.kernels.table import FeatureTable
    >>> extra = FeatureTable([(f.name, f.group) for f in FRAME.features] + [("new", "blockiness")],
    ...                      FRAME.definition, version=FRAME.version)
    >>> feature_schema_version({**KERNEL_TABLES, "frame": extra}) != FEATURE_SCHEMA_VERSION
    True
    """
    payload = {"tables": [[name, t.version, list(t.names)] for name, t in tables.items()], "layout": _LAYOUT}
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=8).hexdigest()


#: part of the stage 2 and 4 cache keys (``fvcflow.stages.specs``)
FEATURE_SCHEMA_VERSION = feature_schema_version()
