"""The registered detector takes videos through MLflow's own scoring server (`mlflow models serve
--env-manager local` on 127.0.0.1), with the scores of `fvc predict`."""

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fvcflow.cli import main as fvc
from tests.media import write_video
from tests.training_runs import shared_trained_lake

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_trained_lake(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def model_server(lake, model_uri: str, log: Path):
    """`mlflow models serve -m MODEL_URI --env-manager local` on 127.0.0.1, a real process; yields its URL."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": lake.mlflow_uri, "MLFLOW_REGISTRY_URI": lake.mlflow_uri,
           "FVC_HOME": str(lake.root),     # MLflow runs `uvicorn` from PATH: the venv's, as after `activate`
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([MLFLOW, "models", "serve", "-m", model_uri,
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    assert proc.poll() is None, log.read_text()[-3000:]
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """`mlflow models serve -m models:/fvc-detector@champion` on 127.0.0.1, a real process."""
    lake, _, _ = trained
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with model_server(lake, "models:/fvc-detector@champion", log) as url:
        yield url, log


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("served")
    good = write_video(d / "good.mp4", n=24, width=96, height=64, seed=2)
    other = write_video(d / "other.webm", n=20, width=64, height=64, seed=5)
    bad = d / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    return good, other, bad


def _post(url: str, records: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=300)


@pytest.mark.slow
def test_both_request_forms_give_fvc_predicts_scores(trained, server, videos, capsys):
    lake, _, summary = trained
    url, _ = server
    good, other, _ = videos
    assert fvc(["--home", str(lake.root), "predict", str(good), str(other), "--model",
                "fvc-detector@champion", "--json"]) == 0
    want = {r["path"]: r for r in json.loads(capsys.readouterr().out)}
    res = _post(url, [{"path": str(good)}, {"path": str(other)}])
    assert res.status_code == 200, res.text
    got = res.json()["predictions"]
    assert len(got) == 2
    for rec, path in zip(got, (good, other)):
        ref = want[str(path)]
        assert rec["prob_fake"] == pytest.approx(ref["prob_fake"], abs=1e-6)
        assert rec["calibrated"] is True and rec["calibration"] == ref["calibration"]
        assert rec["registered_name"] == "fvc-detector" and rec["version"] == ref["version"]
        assert rec["model"] == summary.best
        assert json.loads(rec["top_features"]) and rec["evidence_method"]
    b64 = base64.b64encode(good.read_bytes()).decode()
    res = _post(url, [{"video_b64": b64}])
    assert res.status_code == 200, res.text
    assert res.json()["predictions"][0]["prob_fake"] == pytest.approx(want[str(good)]["prob_fake"], abs=1e-6)


def assert_bad_videos_refused(url: str, bad) -> None:
    """A damaged file named by path and an upload that is no video are 400 responses naming what is
    wrong (never the private temporary file of the upload)."""
    res = _post(url, [{"path": str(bad)}])
    assert res.status_code == 400, res.text
    assert str(bad) in res.json()["message"] and "record 0" in res.json()["message"]
    junk = base64.b64encode(b"plain text, not a video" * 20).decode()
    res = _post(url, [{"video_b64": junk}])
    assert res.status_code == 400 and "video_b64" in res.json()["message"], res.text
    assert "/tmp" not in res.json()["message"]                   # the private temporary file is not named


@pytest.mark.slow
def test_a_bad_video_is_an_error_response_and_the_server_goes_on(server, videos):
    url, _ = server
    good, _, bad = videos
    assert_bad_videos_refused(url, bad)
    res = _post(url, [{"video_b64": "%%% not base64"}])
    assert res.status_code == 400 and "not base64" in res.json()["message"]
    res = _post(url, [{"path": "relative.mp4"}])
    assert res.status_code == 400 and "not an absolute path" in res.json()["message"]
    res = _post(url, [{"path": str(good)}])                      # still serving
    assert res.status_code == 200 and 0.0 < res.json()["predictions"][0]["prob_fake"] < 1.0
