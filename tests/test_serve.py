"""``fvc serve`` (and ``deployments/serve.py``): only against a server other shells can reach, and a
clean stop on Ctrl-C or SIGTERM. Real processes, a real Prefect server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION_ONLY = ("PREFECT_API_URL", "DO_NOT_TRACK", "PREFECT_LOGGING_LEVEL")


def entry(kind: str, home: Path) -> list[str]:
    if kind == "fvc serve":
        return [sys.executable, "-m", "fvcflow", "--home", str(home), "serve"]
    return [sys.executable, str(ROOT / "deployments" / "serve.py")]


def env_with(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    env.update(FVC_HOME=str(home), PREFECT_HOME=str(home / "prefect"), **extra)
    return env


@pytest.mark.parametrize("kind", ["fvc serve", "deployments/serve.py"])
@pytest.mark.parametrize("url", [None, "http://127.0.0.1:1/api"], ids=["unset", "nobody-there"])
def test_serve_refuses_without_a_reachable_server(tmp_path, kind, url):
    home = tmp_path / "fvc-data"
    env = env_with(home, **({"PREFECT_API_URL": url} if url else {}))
    try:
        res = subprocess.run(entry(kind, home), env=env, capture_output=True, text=True, timeout=240,
                             cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{kind} served instead of refusing: {exc.stdout!r}")
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "Traceback" not in out and "being served" not in out, out
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "PREFECT_API_URL" in lines[0] and "make demo" in lines[0]
    if url:
        assert f"no Prefect server answers at PREFECT_API_URL={url}" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_stops_cleanly_on_ctrl_c_and_sigterm(prefect_server, tmp_path, sig):
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "fvc-data"
    env = env_with(home, PREFECT_API_URL=PREFECT_API_URL.value())
    proc = subprocess.Popen(entry("fvc serve", home), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        def serving() -> bool:
            return any("being served" in x for x in lines)

        while time.monotonic() < deadline and proc.poll() is None and not serving():
            time.sleep(0.2)
        assert serving(), "".join(lines)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines)
    assert rc in (0, 130), out
    assert "Traceback" not in out and "ConnectError" not in out and "Error logging to API" not in out, out


@pytest.mark.slow
def test_a_served_deployment_runs_from_the_api_with_the_root_never_first_on_sys_path(prefect_server,
                                                                                    tmp_path):
    """`prefect deployment run fvc/ingest` against `fvc serve` started from the repository root: the
    flow run (a subprocess of the runner) loads the flow by module path and indexes the corpus, and
    its processes inherit PYTHONSAFEPATH (a script entry point or `python -m` from the root would
    put the root, and with it our kernels/ folder, ahead of site-packages)."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from fvcflow.store import Lake, read_parquet
    from tests.corpus import TINY, make_tiny_corpus

    corpus = make_tiny_corpus(tmp_path / "corpus", with_bad=False)
    home = tmp_path / "fvc-data"
    env = env_with(home, PREFECT_API_URL=PREFECT_API_URL.value(), FVC_CORPUS_KIND="folder",
                   FVC_CORPUS_ROOT=str(corpus), FVC_CORPUS_LABELS=str(corpus / "labels.csv"))
    env.pop("PYTHONSAFEPATH", None)                # as in a user's shell: fvc serve sets it for its children
    proc = subprocess.Popen(entry("fvc serve", home), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not any("being served" in x
                                                                               for x in lines):
            time.sleep(0.2)
        assert any("being served" in x for x in lines), "".join(lines)
        run = run_deployment("fvc/ingest", timeout=300)
        assert run.state.is_completed(), (run.state.message, "".join(lines))
        index = read_parquet(Lake.at(home).index)
        assert index is not None and index.height == len(TINY)
        # a run whose parameters name another work dir is refused before any work (issue 26)
        other = tmp_path / "elsewhere"
        config = {"home": str(other), "stages": ["ingest"], "corpus": {
            "kind": "folder", "root": str(corpus), "labels": str(corpus / "labels.csv")}}
        refused = run_deployment("fvc/ingest", parameters={"config": config}, timeout=300)
        assert refused.state.is_failed(), (refused.state, "".join(lines))
        assert f"setting 'home': {other} is not the served work dir {home}" in refused.state.message
        assert not other.exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
