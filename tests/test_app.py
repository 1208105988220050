"""`fvc app` in a real headless Chromium (Debian's chromium, driven over the DevTools protocol):
upload a real video and read the verdict; a text file named .mp4; an over-size upload; a
non-loopback host without a token."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from websockets.sync.client import connect

from fvcflow.cli import main as fvc
from fvcflow.detector.evidence import tile_overlay
from tests.media import write_video
from tests.training_runs import shared_trained_lake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "no chromium on this machine (apt install chromium)"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium and one page, driven over the Chrome DevTools Protocol (a WebSocket)."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                                      "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and self.proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        self.ws = connect(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"],
                          max_size=None)
        self.n = 0

    def send(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return msg["result"]

    def js(self, expr: str):
        return self.send("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && document.getElementById('card').textContent !== ''")

    def wait(self, expr: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expr):
            assert time.monotonic() < deadline, f"timed out waiting for {expr}"
            time.sleep(0.2)

    def upload(self, path: Path) -> str:
        """Choose ``path`` in the page's file input, press Score, return the status or verdict text."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector="#video")["nodeId"]
        self.send("DOM.setFileInputFiles", files=[str(path)], nodeId=node)
        self.js("document.getElementById('status').textContent = 'x';"
                "document.getElementById('go').click()")
        self.wait("document.getElementById('status').textContent !== 'scoring...' && "
                  "document.getElementById('status').textContent !== 'x'")
        return self.js("document.getElementById('status').textContent || "
                       "document.getElementById('verdict').textContent")

    def close(self) -> None:
        self.ws.close()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_trained_lake(tmp_path_factory)


@pytest.fixture(scope="module")
def app(trained, tmp_path_factory):
    lake, _, _ = trained
    port = _port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "fvcflow", "--home", str(lake.root), "app", "--port",
                                 str(port), "--max-mb", "0.3", "--concurrency", "1"],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    assert proc.poll() is None, log.read_text()[-3000:]
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_upload_a_video_see_verdict_frame_and_evidence(trained, app, browser, tmp_path, capsys):
    lake, _, summary = trained
    video = write_video(tmp_path / "clip.mp4", n=24, width=96, height=64, seed=2)
    assert fvc(["--home", str(lake.root), "predict", str(video), "--json"]) == 0
    want = json.loads(capsys.readouterr().out)[0]
    browser.open(app)
    text = browser.upload(video)
    verdict = "fake" if want["prob_fake"] >= want["threshold"] else "real"     # the model's own threshold
    assert want["verdict"] == verdict and want["threshold"] != 0.5
    assert text.startswith(f"{verdict}: P(fake) = {want['prob_fake']:.4f} (calibrated, "), text
    assert f"threshold {want['threshold']}" in text
    assert browser.js("document.getElementById('frame').src").startswith("data:image/jpeg;base64,")
    assert browser.js("document.getElementById('frame').naturalWidth") == 320
    # the deviant-tile map over the frame the local features found most deviant
    ov = tile_overlay(video)
    assert browser.js("document.getElementById('overlay').src").startswith("data:image/png;base64,")
    width = Image.open(io.BytesIO(ov["png"])).width
    assert browser.js("document.getElementById('overlay').naturalWidth") == width
    note = browser.js("document.getElementById('ovnote').textContent")
    assert note.startswith(f"frame {ov['frame']}: {ov['deviant_tiles']} deviant tiles"), note
    rows = browser.js("Array.from(document.querySelectorAll('#features tr')).slice(1)"
                      ".map(r => r.cells[0].textContent)")
    assert rows == [f["feature"] for f in want["evidence"]["top_features"]]
    assert summary.best in browser.js("document.body.textContent")          # the model, in the header
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("fvc-app-*"))   # the upload is gone


def test_a_text_file_named_mp4_gets_a_clear_message(app, browser, tmp_path):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is a text file, not a video\n" * 20)
    browser.open(app)
    text = browser.upload(fake)
    assert text.startswith("the upload is not a usable video: "), text
    assert "holiday" not in text and "/tmp" not in text
    assert browser.js("document.getElementById('status').className") == "err"


def test_an_over_size_upload_is_refused(app, browser, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(400_000))                     # the app runs with --max-mb 0.3
    browser.open(app)
    text = browser.upload(big)
    assert text.startswith("upload too large: 400000 bytes, the limit is 300000"), text
    res = httpx.post(app + "api/score", content=b"x" * 400_000, timeout=60)
    assert res.status_code == 413


def test_no_request_names_a_path(app):
    res = httpx.post(app + "api/score", json={"path": "/etc/passwd"}, timeout=60)
    assert res.status_code == 400 and "not a usable video" in res.json()["error"]
    assert "passwd" not in res.text


def test_a_non_loopback_host_without_a_token_is_refused_at_start(trained, tmp_path):
    lake, _, _ = trained
    env = {k: v for k, v in os.environ.items() if k != "FVC_APP_TOKEN"}
    cmd = [sys.executable, "-m", "fvcflow", "--home", str(lake.root), "app", "--host", "0.0.0.0",
           "--port", str(_port())]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2
    assert res.stderr.strip() == ("error: --host 0.0.0.0 is reachable from other machines: give a token "
                                  "(--token or FVC_APP_TOKEN), which every request must then carry")


def test_past_the_concurrency_bound_the_answer_is_busy(app, tmp_path):
    """The app runs with --concurrency 1: a second upload while one holds the slot gets 503, busy.
    The first upload is sent slowly (its body in pieces, a pause between them), so it holds the
    slot for seconds whatever the machine's speed."""
    from concurrent.futures import ThreadPoolExecutor

    slow = write_video(tmp_path / "slow.mp4", n=24, width=96, height=64, seed=3)
    quick = write_video(tmp_path / "quick.mp4", n=12, width=64, height=48, seed=1)
    data = slow.read_bytes()
    started = threading.Event()

    def trickle():
        started.set()
        for i in range(0, len(data), max(1, len(data) // 8)):
            yield data[i:i + max(1, len(data) // 8)]
            time.sleep(0.5)

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, app + "api/score", content=trickle(), timeout=300)
        started.wait(30)
        time.sleep(1.0)                                  # its first pieces are in: it holds the slot
        second = httpx.post(app + "api/score", content=quick.read_bytes(), timeout=300)
        assert first.result().status_code == 200
    assert second.status_code == 503 and second.json()["error"].startswith("busy: 1 videos are being scored")
    assert second.headers["retry-after"] == "5"
    assert httpx.post(app + "api/score", content=quick.read_bytes(), timeout=300).status_code == 200


def test_with_a_token_every_request_carries_it(trained):
    lake, _, _ = trained
    port = _port()
    cmd = [sys.executable, "-m", "fvcflow", "--home", str(lake.root), "app", "--port", str(port),
           "--token", "s3cret"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url + "api/scans", timeout=10).status_code == 401
        assert httpx.post(url + "api/score", content=b"x", headers={"Authorization": "Bearer nope"},
                          timeout=10).status_code == 401
        assert httpx.get(url + "?token=s3cret", timeout=10).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert httpx.get(url + "api/card", headers=bearer, timeout=10).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
