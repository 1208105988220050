"""The logged detector takes videos: the pyfunc that MLflow's own scoring server runs.

``mlflow models serve -m models:/fvc-detector/<v> --env-manager local`` answers

    {"dataframe_records": [{"path": "/abs/video.mp4"}]}   or   [{"video_b64": "<base64 of the file>"}]

with one record per video: ``prob_fake``, ``calibrated``, ``calibration``, ``threshold`` and
``verdict`` (the model's own threshold, chosen at training), ``model`` (the fvcflow model: the
logged metadata's, else the registry version's or its run's ``fvc.model`` tag, as ``fvc
predict`` reads it), ``registered_name`` and ``version`` (from the registry at
``MLFLOW_TRACKING_URI`` when the server can read it), and the evidence (``evidence_method``,
``evidence_approximate``, ``top_features``, JSON). It runs ``fvc predict``'s code path: the
model is rebuilt from its safe parts (:func:`fvcflow.saved.load_folder`), its feature columns
and calibration come from the logged model (MLmodel: signature, metadata), the scoring settings
(letterbox size, face detector, video bounds) from fvcflow's settings in the server's
environment (``FVC_*``, ``FVC_CONFIG``), as for ``fvc predict``. A ``video_b64`` record is
written to a private temporary folder (mode 0700), identified by probing its content, and
deleted after scoring.

A record that cannot be scored makes the request an error response (HTTP 400) naming the record
and what is wrong; the server goes on serving. Feature rows (the model's columns) are still
scored as before: ``predict_proba``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from fvcflow.config import served_model_env
from fvcflow.errors import FvcError
from fvcflow.saved.format import ARTIFACT, VIDEO_INPUTS, is_video_model, load_folder

#: the largest decoded ``video_b64`` accepted (bytes); FVC_SERVE_MAX_BYTES changes it
MAX_BYTES = served_model_env()["max_bytes"]


def _registry(meta) -> tuple[str | None, str | None, dict]:
    """(registered name, version, version tags) of the served model, looked up by its logged model
    id in the registry at ``MLFLOW_TRACKING_URI``; (None, None, {}) when it cannot be read."""
    uri = served_model_env()["tracking_uri"]
    model_id = getattr(meta, "model_id", None)
    if not uri or not model_id:
        return None, None, {}
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri, uri)
        hits = [v for v in client.search_model_versions(max_results=1000)
                if getattr(v, "model_id", None) == model_id or str(v.source).endswith(model_id)]
    except Exception:  # noqa: BLE001 - the version is informative; scoring does not need it
        return None, None, {}
    if not hits:
        return None, None, {}
    best = max(hits, key=lambda v: int(v.version))
    tags = dict(best.tags or {})
    if not tags.get("fvc.model") and getattr(best, "run_id", None):   # as fvc predict: the run's tag
        try:
            model = client.get_run(best.run_id).data.tags.get("fvc.model")
        except Exception:  # noqa: BLE001 - informative only
            model = None
        if model:
            tags["fvc.model"] = model
    return best.name, str(best.version), tags


class ServedDetector(mlflow.pyfunc.PythonModel):
    """The pyfunc of every model fvcflow logs from this version on: feature rows, clip batches
    (deep models), or videos by ``path`` / ``video_b64``."""

    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from mlflow.models import Model

        from fvcflow.config import Settings
        from fvcflow.detector.predict import Detector, _video_model, model_threshold

        folder = Path(context.artifacts[ARTIFACT])
        self.model = load_folder(folder)
        meta = Model.load(str(folder.parents[1] / "MLmodel"))
        extra = meta.metadata or {}
        schema = meta.get_input_schema()
        columns = [c for c in (schema.input_names() if schema is not None else []) if c not in VIDEO_INPUTS]
        video = _video_model(self.model)
        name, version, tags = _registry(meta)
        threshold, rule = model_threshold(extra, tags)
        self.settings = Settings.load().resolved()
        model_name = extra.get("fvc_model") or extra.get("fvc_model_name") or tags.get("fvc.model")
        self.detector = Detector(self.model, f"models:/{name}/{version}" if name else str(folder), name or "",
                                 version, model_name,
                                 [] if video is not None else columns, None, video,
                                 calibration=extra.get("fvc_calibration"), threshold=threshold,
                                 threshold_rule=rule)

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame) and any(c in model_input.columns for c in VIDEO_INPUTS):
            return self.score_records(model_input)
        if is_video_model(self.model):
            import torch

            x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
            return torch.sigmoid(self.model.clip_logits(x)).numpy()
        return self.model.predict_proba(pd.DataFrame(model_input).drop(columns=list(VIDEO_INPUTS),
                                                                       errors="ignore"))

    def score_records(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One output row per input record; any record that cannot be scored: an error response."""
        from fvcflow.detector.evidence import explain
        from fvcflow.detector.predict import scoring_options

        s, det = self.settings, self.detector
        out, errors = [], []
        for k, rec in enumerate(frame.to_dict("records")):
            tmp = None
            try:
                path, tmp = self._video(k, rec)
                got = explain(det, path, **scoring_options(s))
                out.append({"prob_fake": got.prob_fake, "calibrated": det.calibration is not None,
                            "calibration": det.calibration, "threshold": det.threshold,
                            "verdict": det.verdict(got.prob_fake), "model": det.model_name,
                            "registered_name": det.name or None, "version": det.version,
                            "evidence_method": got.method, "evidence_approximate": got.approximate,
                            "top_features": json.dumps(got.top_features)})
            except FvcError as exc:
                errors.append(f"record {k}: {self._named(exc, rec, tmp)}")
            except Exception as exc:  # noqa: BLE001 - the user's video, whatever failed: say which
                errors.append(f"record {k}: {type(exc).__name__}: {exc}"[:500])
            finally:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
        if errors:
            raise MlflowException("; ".join(errors), error_code=INVALID_PARAMETER_VALUE)
        return pd.DataFrame(out)

    @staticmethod
    def _named(exc: Exception, rec: dict, tmp: str | None) -> str:
        text = str(exc)
        return text.replace(str(Path(tmp) / "upload"), "video_b64") if tmp else text

    @staticmethod
    def _video(k: int, rec: dict[str, Any]) -> tuple[str, str | None]:
        path, data = rec.get("path"), rec.get("video_b64")
        has_path = isinstance(path, str) and path != ""
        has_data = isinstance(data, str) and data != ""
        if has_path == has_data:
            raise FvcError("give exactly one of 'path' (an absolute path on the server) or 'video_b64'")
        if has_path:
            if not os.path.isabs(path):
                raise FvcError(f"{path}: not an absolute path")
            return path, None
        if len(data) > MAX_BYTES * 4 // 3 + 4:
            raise FvcError(f"video_b64: larger than {MAX_BYTES} bytes (FVC_SERVE_MAX_BYTES)")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise FvcError("video_b64: not base64") from None
        tmp = tempfile.mkdtemp(prefix="fvc-serve-")      # mode 0700: this user's alone
        target = Path(tmp) / "upload"                    # no name from the request: probed, not named
        target.write_bytes(raw)
        return str(target), tmp
