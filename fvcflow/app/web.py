"""``fvc app``: upload a video, read P(fake), the verdict and the evidence, the model card, the last scans.

A Starlette app run by uvicorn, on 127.0.0.1 by default. What it guards:

- a host other than loopback needs a token (``--token`` or ``FVC_APP_TOKEN``), else it refuses
  to start; with a token every request must carry it (``Authorization: Bearer`` or ``?token=``);
- an upload is the request body (the page sends the file's bytes), read up to ``max_bytes`` and
  refused past it (HTTP 413) without being stored whole;
- it is written into a private temporary folder (mode 0700) under a fixed name, identified by
  probing its content (never by the name the browser gave), scored, and deleted;
- at most ``concurrency`` videos are scored at once; past that the answer is HTTP 503, "busy";
- no request names a path: the server reads only the uploads it stored itself and its own work dir.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from fvcflow.config import Settings
from fvcflow.errors import FvcError

DEFAULT_MAX_MB = 200.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_start(host: str, token: str | None) -> None:
    """The app refuses to start on a non-loopback host without a token."""
    if not is_loopback(host) and not token:
        raise FvcError(f"--host {host} is reachable from other machines: give a token (--token or "
                       "FVC_APP_TOKEN), which every request must then carry")


class _Slots:
    """At most ``n`` scorings at once; ``take`` answers False when all are taken."""

    def __init__(self, n: int):
        self.n, self.used, self.lock = n, 0, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.used >= self.n:
                return False
            self.used += 1
            return True

    def give(self) -> None:
        with self.lock:
            self.used -= 1


def _card(settings: Settings) -> dict[str, Any]:
    """The model card's summary: its first lines (``stage5/model_card.md``), when there is one."""
    path = settings.lake().model_card
    if not path.exists():
        return {"text": "no model card yet (fvc train writes one)"}
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()][:12]
    return {"text": "\n".join(lines)}


def _scans(settings: Settings, n: int = 10) -> list[dict[str, Any]]:
    """The last ``n`` scans: name, files, failed, fake verdicts, when."""
    import polars as pl

    root = settings.lake().root / "scans"
    tables = sorted((p for p in root.glob("*/scores.parquet") if not p.parent.name.startswith("_")),
                    key=lambda p: p.stat().st_mtime, reverse=True)[:n]
    out = []
    for p in tables:
        df = pl.read_parquet(p, columns=["prob_fake", "verdict", "scanned_at"])
        out.append({"scan": p.parent.name, "files": df.height, "failed": int(df["prob_fake"].is_null().sum()),
                    "fake": int((df["verdict"] == "fake").sum()),
                    "when": df["scanned_at"][0] if df.height else None})
    return out


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fvc app</title>
<style>body{font-family:system-ui,sans-serif;margin:1.5em;max-width:70em}#verdict{font-size:1.4em}
.fake{color:#b00020;font-weight:700}.real{color:#1b5e20;font-weight:700}.err{color:#b00020}
td,th{padding:.2em .6em;text-align:left}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}</style>
</head><body><h1>Is this video manipulated?</h1>
<p>Model: <b>%(model)s</b>, P(fake) %(cal)s. Uploads up to %(max_mb)s MB.</p>
<form id="f"><input type="file" id="video" name="video"> <button id="go" type="submit">Score</button></form>
<p id="status"></p><div id="result" hidden><p id="verdict"></p><img id="frame" alt="first frame">
<h3>Where in the frame: deviant tiles of the local features</h3>
<figure><img id="overlay" alt="deviant tiles"><figcaption id="ovnote"></figcaption></figure>
<h3>What moved the score (log-odds)</h3><table id="features"></table><p id="method"></p></div>
<h2>Model card</h2><pre id="card"></pre><h2>Last scans</h2><table id="scans"></table>
<script>
const token = new URLSearchParams(location.search).get("token");
const auth = token ? {"Authorization": "Bearer " + token} : {};
const ents = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
const esc = s => String(s).replace(/[&<>"']/g, c => ents[c]);
const $ = id => document.getElementById(id);
fetch("api/card", {headers: auth}).then(r => r.json()).then(j => $("card").textContent = j.text);
fetch("api/scans", {headers: auth}).then(r => r.json()).then(rows => {
  $("scans").innerHTML =
    "<tr><th>scan</th><th>files</th><th>fake</th><th>failed</th><th>when</th></tr>" +
    rows.map(s => `<tr><td>${esc(s.scan)}</td><td>${s.files}</td><td>${s.fake}</td>` +
                  `<td>${s.failed}</td><td>${esc(s.when)}</td></tr>`).join("");
});
$("f").addEventListener("submit", async ev => {
  ev.preventDefault();
  const file = $("video").files[0], status = $("status"), result = $("result");
  if (!file) { status.textContent = "choose a video first"; return; }
  status.textContent = "scoring..."; status.className = ""; result.hidden = true;
  const r = await fetch("api/score", {method: "POST", body: file,
                                      headers: {...auth, "Content-Type": "application/octet-stream"}});
  const j = await r.json();
  if (!r.ok) { status.textContent = j.error; status.className = "err"; return; }
  status.textContent = "";
  const cal = j.calibrated ? "calibrated, " + esc(j.calibration) : "uncalibrated";
  $("verdict").innerHTML = `<span class="${j.verdict}">${j.verdict}</span>: ` +
    `P(fake) = ${j.prob_fake.toFixed(4)} (${cal}; threshold ${j.threshold})`;
  $("frame").src = j.frame ? "data:image/jpeg;base64," + j.frame : "";
  $("overlay").src = j.overlay ? "data:image/png;base64," + j.overlay : "";
  $("ovnote").textContent = j.overlay_note;
  $("features").innerHTML = "<tr><th>feature</th><th>value</th><th>contribution</th></tr>" +
    j.top_features.map(f => `<tr><td>${esc(f.feature)}</td>` +
      `<td>${f.value === null ? "" : f.value.toPrecision(4)}</td>` +
      `<td>${f.contribution.toFixed(3)}</td></tr>`).join("");
  $("method").textContent = j.evidence_method + (j.evidence_approximate ? " (approximate)" : "");
  result.hidden = false;
});
</script></body></html>"""


def create_app(settings: Settings, *, model: str | None = None, token: str | None = None,
               max_bytes: int = int(DEFAULT_MAX_MB * 1e6), concurrency: int = 2,
               threshold: float | None = None) -> Starlette:
    """The app over the detector ``model`` (default the registered one, latest version)."""
    import base64

    from fvcflow.detector.evidence import explain, tile_overlay
    from fvcflow.detector.predict import load_detector, scoring_options
    from fvcflow.scan.core import thumbnail

    det = load_detector(settings.lake(), model or settings.train.registered_name,
                        tracking_uri=settings.train.tracking_uri)
    slots = _Slots(concurrency)
    if threshold is None:                   # the model's own (chosen at training), else 0.5
        threshold = det.threshold

    def allowed(request: Request) -> bool:
        if not token:
            return True
        given = request.query_params.get("token") or request.headers.get("authorization", "").removeprefix(
            "Bearer ")
        return hmac.compare_digest(given.encode(), token.encode())

    def refuse() -> JSONResponse:
        return JSONResponse({"error": "a token is required (Authorization: Bearer TOKEN or ?token=)"}, 401)

    async def page(request: Request):
        if not allowed(request):
            return refuse()
        cal = f"calibrated ({det.calibration})" if det.calibration else "uncalibrated"
        return HTMLResponse(PAGE % {"model": html.escape(f"{det.name} v{det.version} ({det.model_name})"),
                                    "cal": html.escape(cal), "max_mb": f"{max_bytes / 1e6:g}"})

    async def card(request: Request):
        return JSONResponse(_card(settings)) if allowed(request) else refuse()

    async def scans(request: Request):
        return JSONResponse(_scans(settings)) if allowed(request) else refuse()

    def score_file(path: Path) -> dict[str, Any]:
        s = settings
        got = explain(det, path, **scoring_options(s))
        frame = thumbnail(path, width=320)
        try:
            ov = tile_overlay(path, limits=scoring_options(s)["limits"])
            note = (f"frame {ov['frame']}: {ov['deviant_tiles']} deviant tiles (robust z above "
                    f"{ov['z_deviant']:g}; largest group {ov['region_tiles']}, cyan), max z "
                    f"{ov['max_z'] if ov['max_z'] is None else round(ov['max_z'], 2)}")
        except FvcError as exc:             # scored, but its frames cannot be measured again: say so
            ov, note = None, f"no tile map: {exc}".replace(str(path), "the upload")
        return {"prob_fake": got.prob_fake, "verdict": "fake" if got.prob_fake >= threshold else "real",
                "threshold": threshold, "threshold_rule": det.threshold_rule or "default 0.5 (none logged)",
                "calibrated": det.calibration is not None,
                "calibration": det.calibration, "model": det.model_name, "registered_name": det.name,
                "version": det.version, "evidence_method": got.method,
                "evidence_approximate": got.approximate, "top_features": got.top_features,
                "frame": base64.b64encode(frame).decode() if frame else None,
                "overlay": base64.b64encode(ov["png"]).decode() if ov else None, "overlay_note": note}

    async def score(request: Request):
        if not allowed(request):
            return refuse()
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            return JSONResponse({"error": f"upload too large: {int(declared)} bytes, the limit is "
                                          f"{max_bytes} (app.max_mb)"}, 413)
        if not slots.take():
            return JSONResponse({"error": f"busy: {concurrency} videos are being scored; retry in a moment"},
                                503, headers={"Retry-After": "5"})
        tmp = tempfile.mkdtemp(prefix="fvc-app-")            # mode 0700
        try:
            target = Path(tmp) / "upload"                     # never the browser's file name
            size = 0
            with open(target, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_bytes:
                        return JSONResponse({"error": f"upload too large: over the limit of {max_bytes} "
                                                      "bytes (app.max_mb)"}, 413)
                    fh.write(chunk)
            if size == 0:
                return JSONResponse({"error": "empty upload: choose a video file"}, 400)
            try:
                return JSONResponse(await run_in_threadpool(score_file, target))
            except FvcError as exc:
                reason = getattr(exc, "reason", None) or str(exc).replace(str(target), "the upload")
                return JSONResponse({"error": f"the upload is not a usable video: {reason}"}, 400)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            slots.give()

    app = Starlette(routes=[Route("/", page), Route("/api/card", card), Route("/api/scans", scans),
                            Route("/api/score", score, methods=["POST"])])
    app.state.detector, app.state.slots = det, slots
    return app


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8050, **kw) -> None:
    """Run the app with uvicorn until Ctrl-C."""
    import uvicorn

    check_start(host, kw.get("token"))
    app = create_app(settings, **kw)
    print(f"fvc app: http://{host}:{port}/" + ("?token=..." if kw.get("token") else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["check_start", "create_app", "is_loopback", "serve"]
