"""Latency of one request to MLflow's scoring server and to ``fvc app`` for a 10 s 720p H.264 clip.

    .venv/bin/python -m benchmarks.serve [--seconds 10] [--repeat 3]

A synthetic trained lake (the tests' small training: the calibrated best of logreg/xgb/stack on
stage 2 + 4 features, registered as fvc-detector) is served with
``mlflow models serve -m models:/fvc-detector@champion --env-manager local`` on 127.0.0.1. A clip of
``--seconds`` at 25 fps, 1280x720, H.264, is sent as ``{"path": ...}`` and as ``{"video_b64": ...}``:
the first request after the server answers /ping (cold) and the best of ``--repeat`` more (warm),
side by side with ``fvc predict``'s in-process scoring of the same file (detector loaded). Then
``fvc app`` is started on 127.0.0.1 with the same model and the same clip is uploaded (the browser's
``POST api/score`` of the file's bytes): the first upload after the page answers (cold) and the best
of ``--repeat`` more (warm); each answer is checked to give the in-process P(fake).
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.kernels import row


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(url: str, proc: subprocess.Popen, path: str = "/ping") -> None:
    while True:
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit("the server did not start")


def app_latency(lake, clip: Path, repeat: int, expected: float) -> tuple[float, float, float]:
    """(start to the page answering, first upload, best of ``repeat`` more) of ``fvc app``."""
    port = _port()
    t_start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fvcflow", "--home", str(lake.root), "app", "--port",
                             str(port), "--model", "fvc-detector@champion", "--max-mb", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    data = clip.read_bytes()
    try:
        _up(url, proc, "/")
        t_up = time.perf_counter() - t_start

        def upload() -> float:
            t0 = time.perf_counter()
            r = httpx.post(f"{url}/api/score", content=data, timeout=600,
                           headers={"Content-Type": "application/octet-stream"})
            r.raise_for_status()
            got = r.json()["prob_fake"]
            assert abs(got - expected) <= 1e-6, (got, expected)
            return time.perf_counter() - t0

        cold = upload()
        warm = min(upload() for _ in range(repeat))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    return t_up, cold, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from fvcflow.detector.predict import load_detector
    from fvcflow.training import run_training
    from tests.feature_tables import write_lake
    from tests.media import write_video
    from tests.training_runs import small_config

    with tempfile.TemporaryDirectory(prefix="fvc-bench-serve-") as tmp:
        tmp = Path(tmp)
        lake = write_lake(tmp / "lake", n_groups=30, n_aug=0, signal=2.0, seed=11)
        run_training(lake, small_config(report=False, shortcut_check=False))
        clip = write_video(tmp / "clip720.mp4", n=int(args.seconds * 25), width=1280, height=720, fps=25)
        payload_b64 = base64.b64encode(clip.read_bytes()).decode()

        det = load_detector(lake, "fvc-detector@champion")
        t = time.perf_counter()
        p_clip = det.score(clip)
        t_pred_cold = time.perf_counter() - t
        t = time.perf_counter()
        det.score(clip)
        t_pred = time.perf_counter() - t

        port = _port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": lake.mlflow_uri, "FVC_HOME": str(lake.root),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        t_start = time.perf_counter()
        proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
                                 "models:/fvc-detector@champion", "--env-manager", "local", "-h", "127.0.0.1",
                                 "-p", str(port), "-w", "1"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
                if proc.poll() is not None:
                    raise SystemExit("the server did not start")
            t_up = time.perf_counter() - t_start

            def ask(rec: dict) -> float:
                t0 = time.perf_counter()
                r = httpx.post(f"{url}/invocations", json={"dataframe_records": [rec]}, timeout=600)
                r.raise_for_status()
                return time.perf_counter() - t0

            cold_path = ask({"path": str(clip)})
            warm_path = min(ask({"path": str(clip)}) for _ in range(args.repeat))
            cold_b64 = ask({"video_b64": payload_b64})
            warm_b64 = min(ask({"video_b64": payload_b64}) for _ in range(args.repeat))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        app_up, app_cold, app_warm = app_latency(lake, clip, args.repeat, p_clip)

    size = f"{args.seconds:g} s 720p H.264, {len(payload_b64) * 3 // 4 / 1e6:.1f} MB"
    print(f"clip: {size}; model {det.model_name} ({det.name} v{det.version})")
    row("mlflow models serve: start to /ping", f"{t_up:8.2f} s", "", True)
    row("request {path}, cold (first)", f"{cold_path:8.2f} s", "", True)
    row(f"request {{path}}, warm (best of {args.repeat})", f"{warm_path:8.2f} s", "", True)
    row("request {video_b64}, cold (first of its kind)", f"{cold_b64:8.2f} s", "", True)
    row(f"request {{video_b64}}, warm (best of {args.repeat})", f"{warm_b64:8.2f} s", "", True)
    row("fvc predict in-process, first / second", f"{t_pred_cold:5.2f} / {t_pred:5.2f} s", "", True)
    row("server (warm, path) vs in-process", f"{warm_path / t_pred:8.2f} x", "", True)
    row("fvc app: start to the page", f"{app_up:8.2f} s", "", True)
    row("fvc app upload, cold (first)", f"{app_cold:8.2f} s", "", True)
    row(f"fvc app upload, warm (best of {args.repeat})", f"{app_warm:8.2f} s", "", True)
    row("fvc app (warm) vs in-process", f"{app_warm / t_pred:8.2f} x", "", True)


if __name__ == "__main__":
    main()
