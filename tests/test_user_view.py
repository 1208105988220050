"""What a user sees: ``fvc run``'s terminal output, ``fvc explore``'s page, the report in a browser.

One real small run (the tiny corpus, one copy per video, two models, two folds) as a user starts
it: ``python -m fvcflow run`` in a subprocess, its output piped (so the display prints its plain
lines), recorded in the session's Prefect test server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import polars as pl
import pytest

from fvcflow.store import Lake
from tests.corpus import make_tiny_corpus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SECTIONS = ["summary", "leaderboard", "roc", "pr", "confusion", "folds", "importance", "timing", "wrong",
            "features", "corpus"]
#: what a library's log record or a traceback looks like on a terminal
LIBRARY_LINE = re.compile(r"\| (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\||^(INFO|WARNING|ERROR|DEBUG)[: ]|"
                          r"distributed\.|mlflow\.|prefect\.|numba|Traceback|Error logging to API|"
                          r"Worker process still alive|UserWarning|FutureWarning|DeprecationWarning",
                          re.MULTILINE)

CONFIG = """
[augment]
copies = 1

[train]
models = "logreg_s2,xgb_s24"
folds = 2
inner_folds = 2
test_size = 0.0
"""


def fvc(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fvcflow", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def run(prefect_server, tmp_path_factory):
    from prefect.settings import PREFECT_API_URL

    tmp = tmp_path_factory.mktemp("user-view")
    corpus = make_tiny_corpus(tmp / "corpus")
    (tmp / "fvc.toml").write_text(CONFIG)
    home = tmp / "fvc-data"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("FVC_CONFIG", None)
    env.pop("PREFECT_LOGGING_LEVEL", None)          # as in a user's shell (conftest quiets it)
    res = fvc("--home", str(home), "run", "--config", str(tmp / "fvc.toml"), "--corpus", "folder",
              "--root", str(corpus), "--labels", str(corpus / "labels.csv"), "--workers", "2", env=env)
    return Lake.at(home), res


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows (stage -> cells), from the plain output."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["stage", "videos", "cached"])
    rows = {}
    for line in lines[start + 2:]:
        cells = line.split()
        if not cells or cells[0] == "done;":
            break
        rows[cells[0]] = cells[1:]
    return rows


def test_run_succeeds_and_the_summary_counts_equal_the_tables(run):
    lake, res = run
    assert res.returncode == 0, res.stdout + res.stderr
    rows = summary_rows(res.stdout)
    assert list(rows) == ["ingest", "augment", "faces", "features", "scale", "scaled_features", "train"]
    tables = {"ingest": lake.index, "augment": lake.stage1, "faces": lake.faces, "features": lake.stage2,
              "scale": lake.stage3, "scaled_features": lake.stage4}
    for stage, path in tables.items():
        assert int(rows[stage][0]) == pl.read_parquet(path).height, (stage, rows[stage])
    assert rows["ingest"][2] == "1"                     # the text file posing as a video
    assert "best" in " ".join(rows["train"]) and "AUC" in " ".join(rows["train"])
    # progress lines (stderr) came from the stages as they ran; the table is the result (stdout)
    for stage in tables:
        assert re.search(rf"^{stage}: done, \d+ videos", res.stderr, re.MULTILINE), stage
    assert re.search(r"^train: model 2 of 2: xgb_s24$", res.stderr, re.MULTILINE)


def test_no_library_log_line_and_no_error_after_success(run):
    lake, res = run
    seen = LIBRARY_LINE.findall(res.stdout + res.stderr)
    assert not seen, (seen, res.stdout, res.stderr)
    assert not re.search(r"(?i)\berror\b", res.stdout + res.stderr), res.stderr
    assert res.stdout.rstrip().splitlines()[-1].startswith("done;")
    log = (lake.root / "logs" / "fvc-run.log").read_text()
    # the records went to the file instead (Dask's own are silenced while its cluster runs:
    # engine.dask_cluster's silence_logs; Prefect's are the libraries' records here)
    assert "prefect.flow_runs" in log and "Finished in state Completed" in log
    assert "pickle or cloudpickle format" not in log      # the models were logged with skops


def test_models_are_logged_in_the_safe_format(run):
    """Every logged model is fvcflow's code-based pyfunc over parts that load without unpickling."""
    lake, _ = run
    mlmodels = list(lake.mlartifacts.rglob("MLmodel"))
    assert len(mlmodels) >= 2
    for path in mlmodels:
        text = path.read_text()
        assert "python_model: pyfunc_model.py" in text or "pyfunc_model.py" in text, text
        assert not list(path.parent.rglob("*.pkl")), path.parent
        assert list(path.parent.rglob("fvc-model.json")), path.parent


def test_explore_writes_its_page_and_plots_from_the_tables(run):
    lake, _ = run
    out = lake.root / "explore"
    shutil.rmtree(out, ignore_errors=True)
    res = fvc("--home", str(lake.root), "explore", timeout=300)
    assert res.returncode == 0, res.stderr
    page = (out / "explore.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) >= 6 and all((out / name).stat().st_size > 1000 for name in images)
    index = pl.read_parquet(lake.index)
    real, fake = (index["label"] == 0).sum(), (index["label"] == 1).sum()
    assert f"<td>folder</td><td>{real}</td><td>{fake}</td>" in page       # balance from the index
    assert "not a video" in page                                            # failures by reason
    for cue in ("bit_rate", "codec", "container", "fps"):
        assert f"<td>{cue}</td>" in page
    assert re.search(r"^page: .*explore\.html$", res.stdout, re.MULTILINE)


def test_artifacts_show_the_leaderboard_table_and_the_figures(run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["leaderboard-table", "report-figures", "explore", "encoding-cues"]
    with get_client(sync_client=True) as client:
        found = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))}
    assert set(found) == set(keys)
    assert found["leaderboard-table"].type == "table" and found["encoding-cues"].type == "table"
    assert "![ROC, out-of-fold](data:image/png;base64," in found["report-figures"].data
    assert found["explore"].data.count("](data:image/png;base64,") >= 6


#: appended to a copy of the report: after load, records which images failed and which sections exist
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const ids = [...document.querySelectorAll('section[id]')].map(s => s.id);
  const out = document.createElement('pre');
  out.id = 'fvc-check';
  out.textContent = JSON.stringify({images: imgs.length, bad: bad, sections: ids});
  document.body.appendChild(out);
});
</script>"""


def test_the_report_renders_in_a_browser_with_every_image_and_section(run, tmp_path):
    import json

    lake, _ = run
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is needed (Debian: apt-get install -y chromium; .ci/run installs it)"
    report = lake.stage5 / "report.html"
    probe = report.with_name("report-check.html")
    probe.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
           probe.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r"<pre id=\"fvc-check\">(.*?)</pre>", res.stdout, re.S)
    assert found, res.stdout[-2000:] + res.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["bad"] == [] and check["images"] >= 15, check
    assert [s for s in SECTIONS if s not in check["sections"]] == [], check["sections"]
    html = report.read_text()
    wrong = html.split("<section id='wrong'>")[1].split("</section>")[0]
    assert wrong.count("class='thumb'") >= 1 and "P(fake)" in wrong
