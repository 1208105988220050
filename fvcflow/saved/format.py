"""Every model we log, as parts that load without unpickling, and the one loader of them.

A logged model is an MLflow pyfunc built from code (models-from-code: the code is
:mod:`fvcflow.saved.pyfunc_model`, nothing cloudpickled) with one artifact, the folder
``fvc_model``: a marker :data:`MARKER` (JSON: :data:`FORMAT`, its version, the tree of parts) and
the parts it names, ``part<N>`` or ``part<N>.skops``:

- ``skops``: a scikit-learn estimator or pipeline, loaded with fvcflow's trusted types
  (:mod:`fvcflow.models.skops_safe`), never the file's; the tree boosters inside it are parts
  of their own, ``part<N>.json`` / ``.txt`` in XGBoost's, LightGBM's or CatBoost's format, read
  by that library's loader and put back in place (:mod:`fvcflow.models.boosters`);
- ``video``: a torch video model: ``spec.json`` (the registered name, its keywords, the clip) and
  its state dict, read with ``torch.load(weights_only=True)``, rebuilt from the registry;
- ``embedding``, ``stack``, ``calibrated``: JSON fields (names, columns, method) over parts.

:func:`load_folder` is the one loader: the pyfunc's ``load_context`` calls it, and so does
:func:`load_logged`, which ``fvc predict`` uses on a downloaded model folder *without* running
the model's stored code. A folder without the marker (a model logged by an older fvcflow: a
pickle) is refused with :class:`OlderFormat`, which says to retrain; nothing of it is read.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from fvcflow.errors import FvcError
from fvcflow.models import boosters
from fvcflow.models.calibrated import CalibratedDetector
from fvcflow.models.requirements import pip_requirements
from fvcflow.models.skops_safe import dump_estimator, load_estimator
from fvcflow.models.stack import StackedModel

FORMAT, VERSION = "fvcflow-safe-model", 2
#: versions this loader reads (1: tree boosters inside the skops file; refused by the trusted list)
READS = (1, 2)
MARKER = "fvc-model.json"
ARTIFACT = "fvc_model"                       # the pyfunc artifact holding the parts
#: the code of the logged pyfunc: the served detector, which also takes videos (``path``,
#: ``video_b64``); a path, not an import (the detector layer sits above this one). Models logged
#: before carry their own copy of ``pyfunc_model.py`` here, which still loads.
CODE = Path(__file__).parents[1] / "detector" / "pyfunc_model.py"
#: the optional input columns of a row model's signature that name a video instead of features
VIDEO_INPUTS = ("path", "video_b64")
_PART = re.compile(r"part\d+(\.skops|\.json|\.txt|\.cbm)?")


class OlderFormat(FvcError):
    """A model folder not written by this format (an older fvcflow's pickle): never loaded."""


def _is_video(model: Any) -> bool:
    return hasattr(model, "clip_logits") and hasattr(model, "module")


def is_video_model(model: Any) -> bool:
    """Whether ``model`` is a deep video model (it scores clip batches)."""
    return _is_video(model)


def _is_embedding(model: Any) -> bool:
    return hasattr(model, "backbone") and hasattr(model, "pipeline") and hasattr(model, "embed_video")


class _Writer:
    def __init__(self, folder: Path):
        self.folder, self.n = folder, 0

    def _name(self, suffix: str = "") -> str:
        self.n += 1
        return f"part{self.n - 1}{suffix}"

    def encode(self, model: Any) -> dict[str, Any]:
        if _is_video(model):
            from fvcflow.deep.export import save_trained  # torch only for a deep model

            name = self._name()
            save_trained(model, self.folder / name)
            return {"kind": "video", "part": name}
        if _is_embedding(model):
            return {"kind": "embedding", "name": model.name, "columns": list(model.columns),
                    "backbone": self.encode(model.backbone), "pipeline": self.encode(model.pipeline)}
        if isinstance(model, StackedModel):
            return {"kind": "stack", "meta": self.encode(model.meta),
                    "bases": [{"name": n, "columns": list(c), "model": self.encode(m)}
                              for n, m, c in model.bases]}
        if isinstance(model, CalibratedDetector):
            return {"kind": "calibrated", "method": model.method, "eps": float(model.eps),
                    "model": self.encode(model.model), "calibrator": self.encode(model.calibrator)}
        model, lifted = boosters.lift(model, self._name)     # tree boosters in their own formats
        name = self._name(".skops")
        (self.folder / name).write_bytes(dump_estimator(model))
        node: dict[str, Any] = {"kind": "skops", "part": name}
        if lifted:
            node["boosters"] = []
            for entry in lifted:
                boosters.save(entry, self.folder / entry["part"])
                node["boosters"].append(boosters.describe(entry))
        return node


def save_folder(model: Any, folder: str | Path) -> Path:
    """Write ``model`` (any kind we train) into ``folder`` as safe parts and the marker."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = _Writer(folder).encode(model)
    (folder / MARKER).write_text(json.dumps({"format": FORMAT, "version": VERSION, "root": root}, indent=1))
    return folder


def _part(folder: Path, node: dict[str, Any]) -> Path:
    name = str(node.get("part", ""))
    if not _PART.fullmatch(name):
        raise FvcError(f"{folder / MARKER}: bad part name {name!r}; refused")
    return folder / name


def _decode(node: dict[str, Any], folder: Path) -> Any:
    kind = node.get("kind")
    if kind == "skops":
        path = _part(folder, node)
        model = load_estimator(path.read_bytes(), path)
        if "boosters" not in node:
            return model
        held = {}
        for b in node["boosters"]:
            part = _part(folder, b)
            held[part.name] = boosters.load(str(b["library"]), part, params=b.get("params"),
                                            cls=str(b.get("class", "")), fitted=bool(b.get("fitted", True)))
        return boosters.drop(model, held)
    if kind == "video":
        from fvcflow.deep.export import load_trained

        return load_trained(_part(folder, node))
    if kind == "embedding":
        from fvcflow.deep.embedding_model import EmbeddingModel

        return EmbeddingModel(str(node["name"]), _decode(node["backbone"], folder),
                              _decode(node["pipeline"], folder), [str(c) for c in node["columns"]])
    if kind == "stack":
        bases = [(str(b["name"]), _decode(b["model"], folder), [str(c) for c in b["columns"]])
                 for b in node["bases"]]
        return StackedModel(bases, _decode(node["meta"], folder))
    if kind == "calibrated":
        return CalibratedDetector(_decode(node["model"], folder), _decode(node["calibrator"], folder),
                                  method=str(node["method"]), eps=float(node["eps"]))
    raise FvcError(f"{folder / MARKER}: unknown part kind {kind!r}; refused")


def retrain_message(where: str | Path, found: list[str]) -> str:
    held = f" (it holds {', '.join(found)})" if found else ""
    return (f"{where}: this model was not saved by this version of fvcflow{held}: models of older "
            "versions are pickles, which fvcflow no longer loads (loading one could run any code); "
            "retrain it with `fvc train`")


def load_folder(folder: str | Path) -> Any:
    """The model saved in ``folder`` by :func:`save_folder`; :class:`OlderFormat` for any other folder."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        found = sorted(p.name for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle"))
        raise OlderFormat(retrain_message(folder, found))
    try:
        spec = json.loads(marker.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FvcError(f"{marker}: not JSON ({exc}); refused") from None
    if spec.get("format") != FORMAT or spec.get("version") not in READS:
        raise OlderFormat(retrain_message(marker, []))
    try:
        return _decode(spec["root"], folder)
    except OlderFormat:
        raise
    except FvcError as exc:
        if spec.get("version") == 1:                     # boosters inside skops: refused by the list
            raise OlderFormat(f"{retrain_message(marker, [])} ({exc})") from None
        raise


def load_logged(model_dir: str | Path) -> tuple[Any, Any]:
    """A downloaded MLflow model folder: (our model, MLflow's ``Model`` metadata). Reads the
    ``MLmodel`` description (YAML, safe) and our parts; never imports the folder's code or
    unpickles anything. A folder of another format is refused (:class:`OlderFormat`)."""
    from mlflow.models import Model

    model_dir = Path(model_dir)
    meta = Model.load(str(model_dir / "MLmodel"))
    pyfunc = meta.flavors.get("python_function", {})
    art = (pyfunc.get("artifacts") or {}).get(ARTIFACT)
    if not pyfunc.get("model_code_path") or not art:
        found = sorted(p.name for p in model_dir.rglob("*")
                       if p.suffix in (".pkl", ".pickle", ".cloudpickle") or p.name == "model.skops")
        raise OlderFormat(retrain_message(model_dir, found))
    rel = Path(art["path"] if isinstance(art, dict) else art)
    folder = (model_dir / rel).resolve()
    if rel.is_absolute() or not folder.is_relative_to(model_dir.resolve()):
        raise FvcError(f"{model_dir / 'MLmodel'}: artifact path {rel} leaves the model folder; refused")
    return load_folder(folder), meta


class FvcPythonModel(mlflow.pyfunc.PythonModel):
    """The pyfunc of every logged model: ``P(fake)`` per clip (video models, input a float32 clip
    batch ``(B, C, T, H, W)``) or ``predict_proba`` per row (every other kind)."""

    # ``predict`` takes feature rows (a DataFrame) or clip batches (an array), which MLflow's
    # type-hint validation cannot describe (the logged signature does): no hint-driven wrapper, and
    # no "Add type hints" warning printed on every import
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.model = load_folder(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        if _is_video(self.model):
            import torch

            x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
            return torch.sigmoid(self.model.clip_logits(x)).numpy()
        return self.model.predict_proba(pd.DataFrame(model_input))


def _torch_requirements() -> list[str]:
    return [f"{d}=={dist_version(d)}" for d in ("torch", "torchvision", "timm")]


def _parts(model: Any) -> list[Any]:
    out, todo = [], [model]
    while todo:
        m = todo.pop()
        out.append(m)
        todo += [b for _, b, _ in getattr(m, "bases", [])] if isinstance(m, StackedModel) else []
        todo += [m.model] if isinstance(m, CalibratedDetector) else []
        todo += [m.backbone, m.pipeline] if _is_embedding(m) else []
    return out


def _signature(model: Any, example: Any):
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, DataType, Schema

    if _is_video(model):
        # a deep model takes videos like the others ({"path"} / {"video_b64"} records: the clips are
        # extracted inside the pyfunc, fvcflow.detector.serving); its clip batches stay reachable
        # through the unwrapped python model (no schema there)
        return ModelSignature(inputs=Schema([ColSpec(DataType.string, name, required=False)
                                             for name in VIDEO_INPUTS]))
    sig = infer_signature(example, model.predict_proba(example))
    # every feature column optional, and two optional string columns naming a video instead:
    # MLflow's scoring server then takes feature rows or {"path": ...} / {"video_b64": ...} records
    cols = [ColSpec(c.type, c.name, required=False) for c in sig.inputs.inputs]
    cols += [ColSpec(DataType.string, name, required=False) for name in VIDEO_INPUTS]
    return ModelSignature(inputs=Schema(cols), outputs=sig.outputs)


def quiet_mlflow() -> None:
    """No MLflow progress bars: logging a pyfunc copies its artifacts back ("Downloading
    artifacts", a tqdm bar on stderr mid-run) and loading one downloads them. MLflow reads its
    own setting at each call, unlike tqdm's TQDM_DISABLE (read when tqdm is first imported); a
    value the user set is kept."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def log_model(model: Any, example: Any = None, *, name: str = "model",
              metadata: dict[str, Any] | None = None):
    """Log ``model`` (any kind we train) as a code-based MLflow pyfunc named ``name``; MLflow's
    ``ModelInfo``. ``example``: a feature table (rows models) for the signature and input example."""
    parts = _parts(model)
    reqs = set(pip_requirements(model)) | {f"skops=={dist_version('skops')}",
                                           f"fvcflow=={dist_version('fvcflow')}"}
    for p in parts:
        if _is_embedding(p):
            reqs |= set(pip_requirements(p.pipeline))
        if _is_video(p):
            reqs |= set(_torch_requirements())
    rows = not _is_video(model)
    quiet_mlflow()
    with tempfile.TemporaryDirectory(prefix="fvc-model-") as tmp:
        folder = save_folder(model, Path(tmp) / ARTIFACT)
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(CODE), artifacts={ARTIFACT: str(folder)},
            signature=_signature(model, example),
            input_example=example.head(3) if rows and isinstance(example, pd.DataFrame) else None,
            pip_requirements=sorted(reqs), metadata={"fvc_format": FORMAT, **(metadata or {})})

