"""No pickles in what we load (issue 26, part 1): every model kind round-trips through the safe
format, tampered models and resume entries are refused without running their payload, a model
of the older (pickled) format is refused with the retrain message, and no module of the library
unpickles."""

from __future__ import annotations

import ast
import functools
import logging
import pickle
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from fvcflow import saved
from fvcflow.config import TrainConfig
from fvcflow.errors import FvcError
from fvcflow.models import create_model, get_model_spec, list_models
from fvcflow.models.calibrated import CalibratedDetector, logit
from fvcflow.models.grouped import ScoreCalibrator
from fvcflow.models.stack import StackedModel, TopKMean, video_column
from fvcflow.resume import FoldCache
from fvcflow.saved.format import OlderFormat
from fvcflow.store import Lake, write_checked_bytes
from fvcflow.training.fitting.preprocess import build_pipeline

ROOT = Path(__file__).resolve().parents[1]
MARK = "payload-ran"


class Payload:
    """A pickle payload: unpickling it writes the marker file (so a test sees whether it ran)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, MARK))


class Planted:
    """A type no trusted list names; skops would rebuild it through ``__setstate__``."""

    def __init__(self, marker: str = ""):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).write_text(MARK)


def _table(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    y = (X["a"] + 0.5 * rng.normal(size=n) > 0).astype(int).to_numpy()
    X.iloc[3, 1] = np.nan
    return X, y


def _fitted(name: str, X: pd.DataFrame, y: np.ndarray):
    spec = get_model_spec(name)
    pipe = build_pipeline(spec, create_model(name, seed=0, n_jobs=1))
    return pipe.fit(X, y)


def _tabular_names() -> list[str]:
    out = []
    for name in list_models(kind="tabular"):
        try:
            create_model(name)
        except (ImportError, FvcError):       # an optional extra that is not installed
            continue
        out.append(name)
    return out


@pytest.mark.parametrize("name", _tabular_names())
def test_every_tabular_model_round_trips(tmp_path, name):
    X, y = _table()
    model = _fitted(name, X, y)
    back = saved.load_folder(saved.save_folder(model, tmp_path / "m"))
    assert not list((tmp_path / "m").rglob("*.pkl"))
    np.testing.assert_allclose(back.predict_proba(X), model.predict_proba(X), rtol=1e-6, atol=1e-9)


def _calibrated_stack(X, y) -> CalibratedDetector:
    bases = [("lr", _fitted("logreg_s2", X[["a", "b"]], y), ["a", "b"]),
             ("xgb", _fitted("xgb_s24", X, y), list(X.columns))]
    P = np.column_stack([m.predict_proba(X[c])[:, 1] for _, m, c in bases])
    stack = StackedModel(bases, TopKMean().fit(P, y))
    cal = ScoreCalibrator("sigmoid").fit(logit(stack.predict_proba(X)[:, 1]), y)
    return CalibratedDetector(stack, cal, method="sigmoid")


def _store(tmp_path) -> tuple[Lake, str]:
    lake = Lake.at(tmp_path / "home")
    lake.root.mkdir(parents=True, exist_ok=True)
    uri = lake.mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("t")
    return lake, uri


def test_calibrated_stack_logs_registers_and_loads(tmp_path):
    from fvcflow.detector.predict import load_detector

    X, y = _table()
    det = _calibrated_stack(X, y)
    lake, _ = _store(tmp_path)
    with mlflow.start_run():
        info = saved.log_model(det, X, name="detector", metadata={"fvc_calibration": "sigmoid"})
    mlflow.register_model(info.model_uri, "fvc-detector")
    loaded = load_detector(lake)
    assert isinstance(loaded.model, CalibratedDetector) and loaded.calibration == "sigmoid"
    rows = X.to_dict("records")
    np.testing.assert_allclose(loaded.predict_rows(rows), det.predict_proba(X)[:, 1], rtol=1e-9)
    # MLflow's own loader runs our code model, which uses the same loader
    pyfunc = mlflow.pyfunc.load_model("models:/fvc-detector/1")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(X))[:, 1], det.predict_proba(X)[:, 1], rtol=1e-9)


def _tiny_video():
    from fvcflow.deep.export import TrainedVideo
    from fvcflow.models.torch_common import ClipSpec, build_video_model

    clip = ClipSpec(frames=4, clips=1, size=32)
    module = build_video_model("naive_3dcnn", clip=clip, widths=(2, 2, 2)).eval()
    return TrainedVideo("naive_3dcnn", module, clip, {"widths": [2, 2, 2]})


def test_video_embedding_and_stack_over_them_round_trip(tmp_path):
    import torch

    from fvcflow.deep.embedding_model import EmbeddingModel

    video = _tiny_video()
    x = torch.randn(2, 3, 4, 32, 32)
    back = saved.load_folder(saved.save_folder(video, tmp_path / "v"))
    torch.testing.assert_close(back.clip_logits(x), video.clip_logits(x))

    X, y = _table()
    emb = EmbeddingModel("emb", video, _fitted("logreg_s2", X, y), list(X.columns))
    again = saved.load_folder(saved.save_folder(emb, tmp_path / "e"))
    np.testing.assert_allclose(again.predict_proba(X), emb.predict_proba(X))
    torch.testing.assert_close(again.backbone.clip_logits(x), video.clip_logits(x))

    Xs = X.assign(**{video_column("emb"): np.linspace(0, 1, len(X))})
    base = _fitted("logreg_s2", X, y)
    P = np.column_stack([base.predict_proba(X)[:, 1], Xs[video_column("emb")]])
    stack = StackedModel([("lr", base, list(X.columns)), ("emb", emb, [])], TopKMean().fit(P, y))
    lake, _ = _store(tmp_path)
    with mlflow.start_run():
        info = saved.log_model(stack, Xs)
        vinfo = saved.log_model(video)
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl"))
    model, _ = saved.load_logged(local)
    np.testing.assert_allclose(model.predict_proba(Xs), stack.predict_proba(Xs))
    assert [n for n, _ in model.video_bases] == ["emb"]
    pyfunc = mlflow.pyfunc.load_model(vinfo.model_uri)
    # its logged input is a video (path / video_b64); the clip batches, through the python model
    assert pyfunc.metadata.get_input_schema().input_names() == ["path", "video_b64"]
    np.testing.assert_allclose(pyfunc.unwrap_python_model().predict(None, x.numpy()),
                               torch.sigmoid(video.clip_logits(x)).numpy(), rtol=1e-5)


BOOSTERS = {"xgb_s24": ("xgboost", ".json"), "lgbm_s24": ("lightgbm", ".txt"),
            "catboost_s24": ("catboost", ".cbm")}


@functools.lru_cache(maxsize=None)
def _booster_model(name: str):
    """The registered booster ``name`` fitted on :func:`_table` once for the module's tests."""
    return _fitted(name, *_table())


@pytest.mark.parametrize("name", [n for n in BOOSTERS if n in _tabular_names()])
def test_tree_boosters_are_saved_in_their_own_model_files(tmp_path, name):
    """Each library's booster is a file of its own format, read back by that library alone
    (independently of fvcflow here too); the skops file of the rest names no booster type, and
    the loaded model's probabilities are bit for bit the original's."""
    import skops.io as sio

    library, suffix = BOOSTERS[name]
    X, y = _table()
    model = _booster_model(name)
    before = model.predict_proba(X)
    folder = saved.save_folder(model, tmp_path / "m")
    root = __import__("json").loads((folder / "fvc-model.json").read_text())["root"]
    fitted = [b for b in root["boosters"] if b["fitted"]]
    assert [b["library"] for b in fitted] == [library]
    own = folder / fitted[0]["part"]
    assert own.suffix == suffix
    if library == "xgboost":
        import xgboost
        booster = xgboost.Booster()
        booster.load_model(str(own))
        assert "learner" in __import__("json").loads(own.read_text())
    elif library == "lightgbm":
        import lightgbm
        booster = lightgbm.Booster(model_file=str(own))
        assert own.read_text().startswith("tree\n")
    else:
        import catboost
        booster = catboost.CatBoostClassifier().load_model(str(own), format="cbm")
    trees = {"xgboost": lambda b: b.num_boosted_rounds(), "lightgbm": lambda b: b.num_trees(),
             "catboost": lambda b: b.tree_count_}[library](booster)
    assert trees > 0
    types = sio.get_untrusted_types(data=(folder / root["part"]).read_bytes())
    assert not [t for t in types if "Booster" in t or t.startswith("catboost")], types
    np.testing.assert_array_equal(saved.load_folder(folder).predict_proba(X), before)
    np.testing.assert_array_equal(model.predict_proba(X), before)           # the original untouched


def test_a_booster_inside_skops_and_a_missing_booster_file_are_refused(tmp_path):
    """A skops file that holds a booster itself (the layout of format 1) is refused by the
    trusted list, nothing built (in a model of format 1, with the retrain message); a marker
    naming a booster file that is not there is an error."""
    import skops.io as sio

    model = _booster_model("xgb_s24")
    folder = saved.save_folder(model, tmp_path / "m")
    root = __import__("json").loads((folder / "fvc-model.json").read_text())["root"]
    (folder / root["part"]).write_bytes(sio.dumps(model))
    with pytest.raises(FvcError, match=r"xgboost\.core\.Booster.*refused"):
        saved.load_folder(folder)
    marker = __import__("json").loads((folder / "fvc-model.json").read_text())
    (folder / "fvc-model.json").write_text(__import__("json").dumps({**marker, "version": 1}))
    with pytest.raises(OlderFormat, match=r"retrain it with `fvc train`.*xgboost\.core\.Booster"):
        saved.load_folder(folder)                         # a model of format 1: retrain
    folder = saved.save_folder(model, tmp_path / "n")
    (folder / root["boosters"][0]["part"]).unlink()
    with pytest.raises(Exception, match="part0.json"):
        saved.load_folder(folder)


def test_planted_skops_part_is_refused_unbuilt(tmp_path):
    import skops.io as sio

    X, y = _table()
    folder = saved.save_folder(_fitted("logreg_s2", X, y), tmp_path / "m")
    marker = tmp_path / "marker"
    (folder / "part0.skops").write_bytes(sio.dumps(Planted(str(marker))))
    with pytest.raises(FvcError, match=r"part0\.skops.*(Planted).*refused"):
        saved.load_folder(folder)
    assert not marker.exists()


def test_tampered_logged_model_code_is_not_run(tmp_path):
    X, y = _table()
    lake, _ = _store(tmp_path)
    with mlflow.start_run():
        info = saved.log_model(_fitted("logreg_s2", X, y), X)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    marker = tmp_path / "marker"
    codes = [p for p in local.rglob("*.py")]
    assert codes, "a code-based model keeps its code file"
    for code in codes:
        code.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text({MARK!r})\n")
    model, _ = saved.load_logged(local)
    assert model.predict_proba(X).shape == (len(X), 2)
    assert not marker.exists()


def _old_model(tmp_path, marker: Path) -> Path:
    """A model folder as an older fvcflow logged it: a cloudpickled PythonModel (here: a payload)."""

    class Old(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    path = tmp_path / "old"
    mlflow.pyfunc.save_model(str(path), python_model=Old())
    pickled = [p for p in path.rglob("*.pkl")]
    assert pickled
    for p in pickled:
        p.write_bytes(pickle.dumps(Payload(marker)))
    return path


def test_older_pickled_model_is_refused_with_the_retrain_message(tmp_path):
    from fvcflow.detector.predict import load_detector

    marker = tmp_path / "marker"
    old = _old_model(tmp_path, marker)
    with pytest.raises(OlderFormat, match=r"python_model\.pkl.*retrain it with `fvc train`"):
        saved.load_logged(old)
    lake, _ = _store(tmp_path)
    with mlflow.start_run():
        saved.log_model(_fitted("logreg_s2", *_table()), _table()[0])   # the store exists
    with pytest.raises(FvcError, match="not a model of this work dir's registry"):
        load_detector(lake, old.as_uri())                      # from elsewhere: refused by its URI
    with pytest.raises(FvcError, match="retrain"):
        load_detector(lake, old.as_uri(), allow_external=True)   # allowed: refused by its format
    assert not marker.exists()
    with pytest.raises(OlderFormat, match="retrain"):
        saved.load_folder(old)


def test_resume_entry_round_trips_without_pickle(tmp_path):
    X, y = _table()
    cache = FoldCache.for_model(Lake.at(tmp_path), "logreg_s2", TrainConfig(), data="d")
    pipe = _fitted("logreg_s2", X, y)
    frame = pl.DataFrame({"video_id": ["a", "b"], "prob_fake": [0.1, 0.9]})
    cache.save("fold0", {"params": {"C": np.float64(1.0), "k": None}, "pipeline": pipe, "inner_oof": frame,
                         "arr": np.arange(3), "seconds": 1.5})
    got = cache.load("fold0")
    assert got["params"] == {"C": 1.0, "k": None} and got["seconds"] == 1.5
    assert got["inner_oof"].equals(frame) and got["arr"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(got["pipeline"].predict_proba(X), pipe.predict_proba(X))
    assert pickle.PROTO not in cache._file("fold0").read_bytes()[:2]
    for name in [n for n in BOOSTERS if n in _tabular_names()]:           # boosters in their own files
        model = _booster_model(name)
        cache.save(name, {"pipeline": model})
        np.testing.assert_array_equal(cache.load(name)["pipeline"].predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("planted", ["pickle", "skops"])
def test_tampered_resume_entry_is_refused_unrun(tmp_path, caplog, planted):
    import io
    import zipfile

    import skops.io as sio

    cache = FoldCache.for_model(Lake.at(tmp_path), "logreg_s2", TrainConfig(), data="d")
    marker = tmp_path / "marker"
    if planted == "pickle":       # an older version's entry, or a planted one with a valid digest
        data = pickle.dumps(Payload(marker))
    else:                          # our format, naming an untrusted type
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("entry.json", '{"$dict": {"fit": {"$estimator": "e0.skops"}}}')
            z.writestr("e0.skops", sio.dumps(Planted(str(marker))))
        data = buf.getvalue()
    write_checked_bytes(data, cache._file("fold0"))
    with caplog.at_level(logging.WARNING, logger="fvcflow.training"):
        assert cache.load("fold0") is None
    assert not marker.exists()
    assert str(cache._file("fold0")) in caplog.text and "refused" in caplog.text
    assert not cache._file("fold0").exists()      # removed: recomputed


#: (module, attribute) calls that unpickle
UNPICKLING = {("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
              ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("pickle", "Unpickler")}


def _unpickling(path: Path) -> list[str]:
    out = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"{path}:{node.lineno}: imports {n}" for n in names
                    if n.split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib", "_pickle")]
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            kw = {k.arg: k.value for k in node.keywords}
            if (f.value.id, f.attr) in UNPICKLING:
                out.append(f"{path}:{node.lineno}: {f.value.id}.{f.attr}")
            if f.value.id == "torch" and f.attr == "load":
                w = kw.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    out.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
            if f.value.id in ("np", "numpy") and f.attr == "load":
                a = kw.get("allow_pickle")
                if a is not None and not (isinstance(a, ast.Constant) and a.value is False):
                    out.append(f"{path}:{node.lineno}: np.load with allow_pickle")
        for k in node.keywords:
            if isinstance(k.value, ast.Constant) and k.value.value == "cloudpickle":
                out.append(f"{path}:{node.lineno}: {k.arg}='cloudpickle'")
    return out


def test_no_module_of_the_library_unpickles():
    files = [p for folder in ("fvcflow", "kernels", "flows", "deployments")
             for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 50
    found = [hit for p in files for hit in _unpickling(p)]
    assert found == []


def test_the_unpickling_check_sees_a_breach(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport torch\nx = pickle.loads(b'')\ntorch.load('f')\n"
                   "mlflow.sklearn.log_model(m, serialization_format='cloudpickle')\n")
    assert len(_unpickling(bad)) == 4
