"""A registered deep detector under MLflow's own scoring server (`mlflow models serve -m
models:/fvc-detector/<v> --env-manager local`, a real process on 127.0.0.1): both request forms
give `fvc predict`'s P(fake), calibration, model and version; a bad video is an error response
naming what is wrong, and the server answers the next request."""

import base64
import json

import pytest

from fvcflow.cli import main as fvc
from fvcflow.training import run_training
from tests.deep_lake import tiny_deep_config, write_deep_lake
from tests.media import write_video
from tests.test_model_server import _post, assert_bad_videos_refused, model_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]


@pytest.fixture(scope="module")
def deep_detector(tmp_path_factory):
    """A tiny 3D CNN trained (2 folds, 1 epoch) and registered as fvc-detector on the tiny deep lake."""
    lake = write_deep_lake(tmp_path_factory.mktemp("deep-serve") / "fvc-data", n_groups=6)
    summary = run_training(lake, tiny_deep_config("naive_3dcnn", epochs=1))
    return lake, summary


def test_the_deep_detector_under_mlflow_models_serve(deep_detector, tmp_path, capsys):
    lake, summary = deep_detector
    good = write_video(tmp_path / "good.mp4", n=14, width=80, height=60, seed=4)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    assert fvc(["--home", str(lake.root), "predict", str(good), "--json"]) == 0
    want = json.loads(capsys.readouterr().out)[0]
    assert want["model"] == "naive_3dcnn" and want["version"] == "1"

    with model_server(lake, f"models:/fvc-detector/{want['version']}", tmp_path / "server.log") as url:
        b64 = base64.b64encode(good.read_bytes()).decode()
        res = _post(url, [{"path": str(good)}, {"video_b64": b64}])
        assert res.status_code == 200, res.text
        got = res.json()["predictions"]
        assert [r["prob_fake"] for r in got] == pytest.approx([want["prob_fake"]] * 2, abs=1e-6)
        for r in got:
            assert (r["calibrated"], r["calibration"]) == (want["calibrated"], want["calibration"])
            assert (r["model"], r["registered_name"], r["version"]) == ("naive_3dcnn", "fvc-detector", "1")
            assert r["verdict"] == want["verdict"] and r["evidence_method"].startswith("deep model")
            clips = json.loads(r["top_features"])
            assert clips and 0.0 < clips[0]["value"] < 1.0          # its highest-scoring clip

        assert_bad_videos_refused(url, bad)
        res = _post(url, [{"path": str(good)}])                      # still serving
        assert res.status_code == 200 and res.json()["predictions"][0]["prob_fake"] == pytest.approx(
            want["prob_fake"], abs=1e-6)
    assert summary.best == "naive_3dcnn"
