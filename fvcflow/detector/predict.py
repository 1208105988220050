"""The trained detector on new videos: load a model from the MLflow store, score video files.

The features come from the same code as the pipeline (:func:`fvcflow.stages.features.video_features`);
when the model's signature asks for stage 4 columns, the video is scaled first as stage 3 does
(:func:`fvcflow.stages.specs.scale_as`: the configured method and size) and measured again.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils import get_results_from_paginated_fn

from fvcflow import saved
from fvcflow.config import REGISTERED_NAME, ScaleConfig
from fvcflow.errors import FvcError
from fvcflow.saved.format import ARTIFACT, retrain_message
from fvcflow.schema import FACE_PREFIX, LOCAL_PREFIXES, S4_FLAGS, STAGE4_PREFIX
from fvcflow.store import Lake
from fvcflow.video.limits import Limits, bounded

DEFAULT_NAME = REGISTERED_NAME  # fvcflow.config: the one place the name is written
#: the verdict's threshold of a model logged without one (fvcflow.metrics.operating_threshold)
DEFAULT_THRESHOLD = 0.5
log = logging.getLogger(__name__)
#: URIs resolved in the tracking store's own registry and runs
REGISTRY_URIS = ("models:/", "runs:/")


@dataclass
class Detector:
    """A loaded model, what it is, and the feature columns it reads."""

    model: Any                  # the model (fvcflow.saved.load_logged): predict_proba on feature rows
    uri: str
    name: str                   # registry name, or the URI when loaded by URI
    version: str | None
    model_name: str | None      # the fvcflow registry name (xgb_s24, ...), from the version or run tags
    columns: list[str]
    staging: Any = field(default=None, repr=False)   # the private copy the model was loaded from
    video: Any = None           # a deep model (fvcflow.deep.export.TrainedVideo): scores clips, no columns
    calibration: str | None = None   # "sigmoid"/"isotonic": P(fake) is calibrated (fvc-detector); None: raw
    threshold: float = DEFAULT_THRESHOLD   # the verdict's: fake when P(fake) >= threshold
    threshold_rule: str | None = None       # how training chose it; None: the default 0.5 (none logged)

    def verdict(self, prob: float | None) -> str | None:
        """``fake`` / ``real`` at the detector's threshold (None without a score)."""
        return None if prob is None else ("fake" if prob >= self.threshold else "real")

    @property
    def needs_stage4(self) -> bool:
        return any(c.startswith(STAGE4_PREFIX) or c in S4_FLAGS for c in self.columns)

    @property
    def video_bases(self) -> list[tuple[str, Any]]:
        """(name, model) of a stack's bases that score video files (deep, embedding); else empty."""
        raw = self.model
        stack = raw if hasattr(raw, "video_bases") else getattr(raw, "model", None)   # calibrated wrapper
        return list(getattr(stack, "video_bases", []))

    def _needs(self, prefixes: tuple[str, ...], stage4: bool = False) -> bool:
        lead = STAGE4_PREFIX if stage4 else ""
        return any(c.startswith(tuple(lead + p for p in prefixes)) for c in self.columns)

    @property
    def needs_local(self) -> bool:
        """The model reads local (tile) columns (``s2l``, ``s2lf``, ``s24l``)."""
        return self._needs(LOCAL_PREFIXES)

    @property
    def needs_faces(self) -> bool:
        return self._needs((FACE_PREFIX,))

    def features(self, path: str | Path, *, scale: ScaleConfig | None = None,
                 face_model: str | Path | None = None, face_every: int = 3,
                 face_tracker: dict | None = None) -> dict[str, float]:
        """The input row of one video: stage 2 features (with the local and face columns when the
        model reads them), stage 4 ones when the model needs them, and for a stack over deep or
        embedding models their ``P(fake)`` of the letterboxed video."""
        from fvcflow.models.stack import video_column
        from fvcflow.stages.facetrack import tracker_as
        from fvcflow.stages.features import video_features
        from fvcflow.stages.specs import scale_as
        from fvcflow.video import probe

        tracker = tracks = None
        if self.needs_faces:        # the face tracker's main track, as stage 2, from the same decode
            info = probe(path)
            settings = {"every": face_every, **(face_tracker or {})}
            tracker = tracker_as(info, settings, face_model)
            row: dict[str, float] = dict(video_features(path, info=info, local=self.needs_local,
                                                        tracker=tracker, track_faces=True))
            # the same tracks as a face-clip base would track (its tracker has no face_model): shared
            if settings == {"every": 3, **(face_tracker or {})} and (face_model is None
                                                                     or tracker.detector.kind == "yuface"):
                tracks = tracker.result()[0]
        else:
            row = dict(video_features(path, local=self.needs_local))
        video_bases = self.video_bases
        if self.needs_stage4 or video_bases:
            with tempfile.TemporaryDirectory(prefix="fvc-predict-") as tmp:
                scaled = Path(tmp) / "scaled.mp4"
                flags = scale_as(path, scaled, scale)
                if self.needs_stage4:
                    row.update(video_features(scaled, prefix=STAGE4_PREFIX,
                                              local=self._needs(LOCAL_PREFIXES, True)))
                    row.update({k: float(flags[k]) for k in S4_FLAGS})
                shared = {} if tracks is None else {"tracks": tracks}    # the faces tracked above
                for name, base in video_bases:    # seen as in training: letterboxed like stage 3
                    row[video_column(name)] = base.predict_video(scaled, src_width=flags["src_width"],
                                                                 src_height=flags["src_height"],
                                                                 original=path, face_tracker=face_tracker,
                                                                 **shared)
        return row

    def score(self, path: str | Path, *, scale: ScaleConfig | None = None,
              face_model: str | Path | None = None, face_every: int = 3,
              limits: Limits | None = None, face_tracker: dict | None = None) -> float:
        """``P(fake)`` of one video file, whatever the model's kind.

        A feature model measures the video (:meth:`features`); a deep model sees it as training
        did: scaled like stage 3 (``scale``: the ``scale.*`` settings, letterbox or autoencoder),
        then its evaluation clips with its own normalisation, the clip logits averaged. The video
        is read within ``limits`` (default: the bounds in force, :mod:`fvcflow.video.limits`),
        its watchdog started here: a bound crossed is a VideoError naming it. ``face_tracker``:
        the face tracker's settings (``faces.*``: detector, every, max_tracks, max_side) for the
        face columns, as stage 2 computes them.
        """
        with bounded(limits):
            return self._score(path, scale=scale, face_model=face_model,
                               face_every=face_every, face_tracker=face_tracker)

    def _score(self, path, *, scale, face_model, face_every, face_tracker=None) -> float:
        if self.video is None:
            return self.predict_rows([self.features(path, scale=scale,
                                                    face_model=face_model, face_every=face_every,
                                                    face_tracker=face_tracker)])[0]
        from fvcflow.stages.specs import scale_as

        with tempfile.TemporaryDirectory(prefix="fvc-predict-") as tmp:
            scaled = Path(tmp) / "scaled.mp4"
            row = scale_as(path, scaled, scale)
            return self.video.predict_video(scaled, src_width=row["src_width"], src_height=row["src_height"],
                                            original=path, face_tracker=face_tracker)

    def predict_rows(self, rows: list[dict[str, float]]) -> list[float]:
        """``P(fake)`` of feature rows (missing columns are NaN, imputed by the model)."""
        X = pd.DataFrame([{c: float(r.get(c, math.nan)) for c in self.columns} for r in rows],
                         dtype="float64")
        out = np.asarray(self.model.predict_proba(X))
        return [float(v) for v in (out[:, 1] if out.ndim == 2 else out)]


def _source_run(client: MlflowClient, uri: str, version) -> str | None:
    """The run that logged the model: from the registry version, ``runs:/ID/...`` or ``models:/m-ID``."""
    if version is not None:
        return version.run_id
    if m := re.fullmatch(r"runs:/([^/]+)/.*", uri):
        return m.group(1)
    if m := re.fullmatch(r"models:/(m-[0-9a-f]+)", uri):
        return client.get_logged_model(m.group(1)).source_run_id
    return None


def _model_name(client: MlflowClient, uri: str, version) -> str | None:
    """The fvcflow registry name of the model (``fvc.model`` tag), when it can be found."""
    if version is not None and version.tags.get("fvc.model"):
        return version.tags["fvc.model"]
    try:
        run_id = _source_run(client, uri, version)
        return client.get_run(run_id).data.tags.get("fvc.model") if run_id else None
    except MlflowException:     # a URI from another store: the name is unknown, the model still loads
        return None


def scoring_options(settings) -> dict:
    """The keywords of :meth:`Detector.score` (and :func:`fvcflow.detector.evidence.explain`) that
    ``settings`` give: every way of scoring a video (predict, scan, the model server, the app) reads
    it as stage 2-4 did, with the same tracker and the same bounds."""
    return dict(scale=settings.scale,
                face_model=settings.features.face_model, face_every=settings.faces.every,
                face_tracker=settings.faces.model_dump(), limits=settings.limits.video_limits())


def check_model_uri(lake: Lake, model: str, *, allow_external: bool = False) -> None:
    """Refuse a model URI from outside the tracking store's registry and the work dir (an MLflow
    URI of another store, a ``file:`` folder elsewhere, ``s3://``, ``https://`` ...) unless
    ``allow_external``: the detector loads only what this work dir's training logged.

    >>> check_model_uri(Lake.at("/w"), "models:/fvc-detector/3")
    >>> check_model_uri(Lake.at("/w"), "file:///w/mlartifacts/1/models/m-1/artifacts")
    >>> check_model_uri(Lake.at("/w"), "file:///tmp/planted")
    Traceback (most recent call last):
    fvcflow.errors.FvcError: --model file:///tmp/planted: not a model of this work dir's registry ...
    """
    if ":/" not in model or model.startswith(REGISTRY_URIS) or allow_external:
        return
    if model.startswith("file:"):
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(model).path)).resolve()
        if path.is_relative_to(lake.root):
            return
    raise FvcError(f"--model {model}: not a model of this work dir's registry (models:/NAME/VERSION, "
                   f"runs:/ID/PATH, or a file: URI under {lake.root}); pass --allow-external-model to "
                   "load a model from elsewhere")


@dataclass(frozen=True)
class DetectorInfo:
    """What a registered (or any) detector is, read from the registry and its ``MLmodel`` file
    alone: enough to pin a scan to it and key its cache, without loading the model."""

    uri: str                    # models:/NAME/VERSION (pinned) or the URI given
    name: str
    version: str | None
    model_name: str | None
    calibration: str | None
    threshold: float = DEFAULT_THRESHOLD
    threshold_rule: str | None = None


def _resolve(lake: Lake, model: str | None, tracking_uri: str | None,
             allow_external: bool) -> tuple[MlflowClient, str, str, str, Any]:
    """(client, store URI, name, target URI pinned to its version, the registry version or None)."""
    uri = tracking_uri or lake.mlflow_uri
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():
        raise FvcError(f"no MLflow store at {db}: run `fvc train` first (or pass --home)")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    model = model or DEFAULT_NAME
    check_model_uri(lake, model, allow_external=allow_external)
    version = None
    if a := re.fullmatch(r"(?:models:/)?([^/@:]+)@([\w-]+)", model):   # an alias: NAME@champion
        version = _alias(client, uri, a.group(1), a.group(2))
        name, target = a.group(1), f"models:/{a.group(1)}/{version.version}"
    elif ":/" in model:
        m = re.fullmatch(r"models:/([^/@]+)/(\d+)", model)
        name, target = (m.group(1), model) if m else (model, model)
        if m:
            version = _version(client, uri, m.group(1), m.group(2))
    else:
        # the newest *whole* version: a registry backend that copies artifacts shows a version
        # PENDING_REGISTRATION until the copy is done (the SQL store creates it READY at once)
        versions = _versions(client, uri, model)
        ready = [v for v in versions if getattr(v, "status", None) in (None, "READY")]
        if not ready:
            raise FvcError(f"no version of {model!r} in {uri} is ready yet (statuses: "
                           f"{', '.join(sorted({str(v.status) for v in versions}))}); retry when `fvc train` "
                           "has finished registering")
        version = max(ready, key=lambda v: int(v.version))
        name, target = model, f"models:/{model}/{version.version}"
    return client, uri, name, target, version


def describe_detector(lake: Lake, model: str | None = None, *, tracking_uri: str | None = None,
                      allow_external: bool = False) -> DetectorInfo:
    """:class:`DetectorInfo` of ``model`` (as :func:`load_detector` names it) from the registry and
    the model's ``MLmodel`` file (its metadata: calibration, threshold) only: the model's parts are
    neither downloaded nor loaded. A model without fvcflow's marker (an older format) is refused
    here too, so that a scan says so once, before any video is read.

    >>> describe_detector(Lake.at("fvc-data"), "fvc-detector@champion").version   # doctest: +SKIP
    '3'
    """
    from mlflow.models import get_model_info

    client, _, name, target, version = _resolve(lake, model, tracking_uri, allow_external)
    try:
        info = get_model_info(target)
    except (MlflowException, OSError) as exc:
        raise FvcError(f"cannot load model {target}: {str(exc).splitlines()[0]}") from None
    if info.signature is None or info.signature.inputs is None:
        raise FvcError(f"model {target} has no input signature: it was not logged by fvcflow")
    flavor = (info.flavors or {}).get("python_function", {})
    if not flavor.get("model_code_path") or ARTIFACT not in (flavor.get("artifacts") or {}):
        raise saved.OlderFormat(retrain_message(target, []))
    extra = info.metadata or {}
    threshold, rule = model_threshold(extra, version.tags if version is not None else None)
    return DetectorInfo(target, name, str(version.version) if version else None,
                        _model_name(client, target, version), extra.get("fvc_calibration"), threshold, rule)


def load_detector(lake: Lake, model: str | None = None, *, tracking_uri: str | None = None,
                  allow_external: bool = False) -> Detector:
    """Load ``model`` (registry name, default ``fvc-detector`` latest; ``NAME@ALIAS`` or
    ``models:/NAME@champion``: the version with that alias; or an MLflow URI of the tracking
    store's registry or the work dir: others only with ``allow_external``, :func:`check_model_uri`).

    >>> det = load_detector(Lake.at("fvc-data"))          # doctest: +SKIP
    >>> det.predict_rows([det.features("clip.mp4")])      # doctest: +SKIP
    [0.87]
    """
    client, _, name, target, version = _resolve(lake, model, tracking_uri, allow_external)
    # Downloaded into a private copy and rebuilt by our loader from safe parts: the model's own
    # code is not run, nothing is unpickled; a model of an older format is refused (retrain).
    staging = tempfile.TemporaryDirectory(prefix="fvc-model-")
    saved.format.quiet_mlflow()
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=target, dst_path=staging.name)
        loaded, meta = saved.load_logged(local)
    except (MlflowException, OSError) as exc:
        staging.cleanup()
        raise FvcError(f"cannot load model {target}: {str(exc).splitlines()[0]}") from None
    except FvcError:
        staging.cleanup()
        raise
    schema = meta.get_input_schema()
    if schema is None:
        raise FvcError(f"model {target} has no input signature: it was not logged by fvcflow")
    video = _video_model(loaded)
    columns = [] if video is not None else [c for c in schema.input_names() if c not in saved.VIDEO_INPUTS]
    extra = meta.metadata or {}
    threshold, rule = model_threshold(extra, version.tags if version is not None else None)
    return Detector(loaded, target, name, str(version.version) if version else None,
                    _model_name(client, target, version), columns, staging, video,
                    calibration=extra.get("fvc_calibration"), threshold=threshold, threshold_rule=rule)


def model_threshold(metadata: dict | None, tags: dict | None) -> tuple[float, str | None]:
    """(threshold, rule) of a logged model: its metadata (``fvc_threshold``, the calibrated
    detector's), else its registry version's tags (``fvc.threshold``), else the default 0.5 and
    no rule. A value that is not a probability is ignored (the default, and a warning).

    >>> model_threshold({"fvc_threshold": 0.31, "fvc_threshold_rule": "max balanced accuracy"}, None)
    (0.31, 'max balanced accuracy')
    >>> model_threshold({}, {"fvc.threshold": "0.42"})
    (0.42, None)
    >>> model_threshold(None, None)
    (0.5, None)
    """
    metadata, tags = metadata or {}, tags or {}
    for value, rule in ((metadata.get("fvc_threshold"), metadata.get("fvc_threshold_rule")),
                        (tags.get("fvc.threshold"), tags.get("fvc.threshold_rule"))):
        if value is None:
            continue
        try:
            t = float(value)
        except (TypeError, ValueError):
            t = math.nan
        if 0.0 < t < 1.0:
            return t, rule
        log.warning("ignoring the logged threshold %r: not a probability strictly between 0 and 1", value)
    return DEFAULT_THRESHOLD, None


def _video_model(loaded) -> Any:
    """The model itself when it is a deep model (:class:`~fvcflow.deep.export.TrainedVideo`), else None."""
    return loaded if hasattr(loaded, "clip_logits") else None


def _versions(client: MlflowClient, uri: str, name: str) -> list:
    """Every version of registered model ``name``; a user-facing error when there is none."""
    try:
        versions = [v for v in get_results_from_paginated_fn(     # the name is compared, never put in a
            lambda n, page: client.search_model_versions(max_results=n, page_token=page), 1000)   # filter
            if v.name == name]                                       # string (a quote would break it)
        if not versions:
            names = sorted(r.name for r in client.search_registered_models())
    except MlflowException as exc:
        raise FvcError(f"cannot read the model registry at {uri}: {str(exc).splitlines()[0]}") from None
    if not versions:
        known = f"registered models: {', '.join(names)}" if names else "no model is registered yet"
        raise FvcError(f"no registered model {name!r} in {uri} ({known}): run `fvc train` first, "
                       "or pass --model")
    return versions


def _alias(client: MlflowClient, uri: str, name: str, alias: str):
    """The version of ``name`` that carries ``alias`` (``champion``: the best of the latest training)."""
    versions = _versions(client, uri, name)
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        held = sorted({a for v in versions for a in (getattr(v, "aliases", None) or [])})
        raise FvcError(f"registered model {name} has no alias {alias!r} in {uri}; aliases: "
                       f"{', '.join(held) or 'none (retrain with `fvc train` to set champion)'}") from None


def _version(client: MlflowClient, uri: str, name: str, number: str):
    """Version ``number`` of ``name``; when it does not exist, the error lists the versions that do."""
    versions = _versions(client, uri, name)
    for v in versions:
        if str(v.version) == str(int(number)):
            return v
    have = ", ".join(str(n) for n in sorted(int(v.version) for v in versions))
    raise FvcError(f"registered model {name} has no version {number} in {uri}; versions: {have}")
