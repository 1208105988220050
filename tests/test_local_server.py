"""``fvc run``'s temporary Prefect server: it never outlives its run, and a finished run exits at once.

Real processes throughout: ``fvc run`` in a pseudo-terminal (as a user's shell runs it), a real
uvicorn Prefect server, ``kill -9``.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fvcflow.flows.local import SERVER_APP, TemporaryServer, stop_orphans
from tests.corpus import make_tiny_corpus

#: the variables a user's shell does not have: the test session sets them for its own runs
SESSION_ONLY = ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_API_URL", "PREFECT_HOME",
                "PREFECT_LOGGING_LEVEL")


def user_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def gone(pid: int, timeout: float) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaps counts as exited) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def servers_of(prefect_home: Path) -> list[int]:
    """Live Prefect server processes whose PREFECT_HOME is ``prefect_home``."""
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if SERVER_APP in " ".join(proc.info["cmdline"] or ()) and \
                    proc.environ().get("PREFECT_HOME") == str(prefect_home) and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except psutil.Error:
            continue
    return out


def run_in_pty(cmd: list[str], env: dict, timeout: float) -> tuple[list[tuple[float, str]], int, float]:
    """Run ``cmd`` on a pseudo-terminal; its lines with the time each arrived, exit code, end time."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvpe(cmd[0], cmd, env)
    lines, pending, t0 = [], b"", time.monotonic()
    while time.monotonic() - t0 < timeout:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        pending += data
        *done, pending = pending.split(b"\n")
        lines += [(time.monotonic(), raw.decode(errors="replace").rstrip("\r")) for raw in done]
    else:
        os.kill(pid, signal.SIGKILL)
    lines.append((time.monotonic(), pending.decode(errors="replace")))
    _, status = os.waitpid(pid, 0)
    return lines, os.waitstatus_to_exitcode(status), time.monotonic()


def fake_orphan(folder: Path) -> subprocess.Popen:
    """A process that looks like a temporary server whose ``fvc run`` was killed (its record stays)."""
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner_started = psutil.Process(owner.pid).create_time()
    owner.wait()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", SERVER_APP])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{owner.pid}.json").write_text(json.dumps(
        {"pid": orphan.pid, "started": psutil.Process(orphan.pid).create_time(), "owner_pid": owner.pid,
         "owner_started": owner_started, "port": 1}))
    return orphan


def fvc_run_args(home: Path, corpus: Path) -> list[str]:
    return [sys.executable, "-m", "fvcflow", "--home", str(home), "run", "--stages", "ingest",
            "--corpus", "folder", "--root", str(corpus), "--labels", str(corpus / "labels.csv")]


@pytest.mark.slow
def test_a_finished_run_exits_at_once_quietly_and_stops_an_orphan(tmp_path):
    """No "Error logging to API", no analytics notice, exit right after "done", no server left;
    an orphan of an earlier killed run on the same work dir is stopped."""
    corpus = make_tiny_corpus(tmp_path / "corpus", with_bad=False)
    home = tmp_path / "fvc-data"
    orphan = fake_orphan(home / "prefect" / "temporary-servers")
    try:
        lines, rc, ended = run_in_pty(fvc_run_args(home, corpus), user_env(), timeout=500)
        text = "\n".join(line for _, line in lines)
        assert rc == 0, text
        done = [t for t, line in lines if line.startswith("done; work dir")]
        assert done, text
        assert ended - done[0] < 20, f"exited {ended - done[0]:.0f} s after its last stage\n{text}"
        assert "Error logging to API" not in text and "Traceback" not in text, text
        assert "anonymous usage" not in text, text
        assert gone(orphan.pid, 15), "the orphan server of the killed run is still running"
        assert servers_of(home / "prefect") == []
        assert list((home / "prefect" / "temporary-servers").glob("*.json")) == []
    finally:
        orphan.kill()
        orphan.wait()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux only")
def test_kill_9_of_fvc_run_takes_its_server_with_it(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus", with_bad=False)
    home = tmp_path / "fvc-data"
    records = home / "prefect" / "temporary-servers"
    run = subprocess.Popen(fvc_run_args(home, corpus), env=user_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    server = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None:
            found = [p for p in records.glob("*.json")] if records.exists() else []
            if found:
                server = json.loads(found[0].read_text())["pid"]
                break
            time.sleep(0.1)
        assert server is not None and run.poll() is None, "fvc run ended before its server was recorded"
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        assert gone(server, 30), "the temporary server outlived its killed fvc run"
    finally:
        if run.poll() is None:
            run.kill()
        if server is not None and not gone(server, 0.1):
            os.kill(server, signal.SIGKILL)


@pytest.mark.slow
def test_an_orphan_real_server_is_found_and_stopped_by_the_next_run(tmp_path):
    """Without the parent-death signal (other systems), the record alone finds the orphan."""
    folder = tmp_path / "prefect" / "temporary-servers"
    code = ("import sys, time; from pathlib import Path; from fvcflow.flows.local import TemporaryServer;"
            "s = TemporaryServer(Path(sys.argv[1]), die_with_parent=False); s.start(timeout=300);"
            "print(s.process.pid, flush=True); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                             env=user_env(PREFECT_HOME=tmp_path / "prefect"))
    server = None
    try:
        server = int(owner.stdout.readline())
        owner.kill()
        owner.wait()
        assert not gone(server, 2), "the server died with its owner although it was not asked to"
        assert stop_orphans(folder) == [server]
        assert gone(server, 15)
        assert list(folder.glob("*.json")) == []
    finally:
        if owner.poll() is None:
            owner.kill()
        if server is not None and not gone(server, 0.1):
            os.kill(server, signal.SIGKILL)


def test_servers_of_live_runs_and_reused_pids_are_left_alone(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", SERVER_APP])
    try:
        started = psutil.Process(busy.pid).create_time()
        me = psutil.Process(os.getpid()).create_time()
        (folder / "live.json").write_text(json.dumps(      # a concurrent run that is still going
            {"pid": busy.pid, "started": started, "owner_pid": os.getpid(), "owner_started": me}))
        (folder / "reused.json").write_text(json.dumps(    # the recorded server is long gone; its pid reused
            {"pid": busy.pid, "started": started - 1000, "owner_pid": 2 ** 22 + 1, "owner_started": 1.0}))
        (folder / "torn.json").write_text("{")              # a record cut by a kill mid-write
        assert stop_orphans(folder) == []
        assert busy.poll() is None
        assert sorted(p.name for p in folder.glob("*.json")) == ["live.json"]
    finally:
        busy.kill()
        busy.wait()


def test_the_record_names_the_server_and_is_removed_when_it_stops(tmp_path, monkeypatch):
    """A server that cannot start is stopped and unrecorded; the error is one FvcError line."""
    from fvcflow.errors import FvcError

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "nowhere"))
    server = TemporaryServer(tmp_path / "records")
    with pytest.raises(FvcError, match="did not answer within 0 s"):
        server.start(timeout=0.01)
    assert server.process is None and list((tmp_path / "records").glob("*.json")) == []


@pytest.mark.parametrize("entry", ["import fvcflow.flows.pipeline", "deployments/serve.py"])
def test_no_analytics_notice_from_any_entry_point(tmp_path, entry):
    """In a terminal, with a fresh Prefect home and no opt-out of the user's own: no "collects
    anonymous usage data" notice (Prefect prints it on import unless DO_NOT_TRACK is set)."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / entry)] if entry.endswith(".py") else [sys.executable, "-c", entry]
    (tmp_path / "prefect").mkdir()
    lines, rc, _ = run_in_pty(cmd, user_env(PREFECT_HOME=tmp_path / "prefect"), timeout=300)
    text = "\n".join(line for _, line in lines)
    assert "anonymous usage" not in text, text
    assert rc == (2 if entry.endswith(".py") else 0), text     # serve.py: no PREFECT_API_URL, refused
    demo = (root / "deployments" / "demo.sh").read_text()
    assert "DO_NOT_TRACK=1" in demo and "PREFECT_SERVER_ANALYTICS_ENABLED=false" in demo
