"""The progress display and the numbers behind the exploration and the report (no run needed)."""

from __future__ import annotations

import io
import logging
import re
import time

import numpy as np
import polars as pl
import pytest
from rich.console import Console
from sklearn.metrics import roc_auc_score, roc_curve

from fvcflow import progress
from fvcflow.cli import logs
from fvcflow.cli.display import Display
from fvcflow.explore import cue_table
from fvcflow.training.evidence.report import eer_threshold

EVENTS = [
    ("stage_start", dict(stage="features", total=10, todo=8, cached=2)),
    ("stage_batch", dict(stage="features", done=4, failed=1)),
    ("stage_batch", dict(stage="features", done=3, failed=0)),
    ("stage_end", dict(stage="features", videos=9, done=7, cached=2, failed=1, seconds=3.25,
                       reasons={"not a video": 1}, digest="0a1b2c3d4e5f")),
    ("train_start", dict(models=["logreg_s2", "xgb_s24"], folds=2)),
    ("model_start", dict(model="logreg_s2")),
    ("fold_end", dict(model="logreg_s2", fold=0, folds=2)),
    ("fold_end", dict(model="logreg_s2", fold=1, folds=2)),
    ("model_end", dict(model="logreg_s2", oof_roc_auc=0.75, seconds=1.0)),
    ("model_start", dict(model="xgb_s24")),
    ("model_end", dict(model="xgb_s24", oof_roc_auc=0.8125, seconds=2.0)),
    ("train_end", dict(best="xgb_s24", best_auc=0.8125, models=2, registered_version="3",
                       digest="9f8e7d6c5b4a")),
]


def play(display: Display) -> str:
    with display, progress.listening(display):
        for event, fields in EVENTS:
            progress.emit(event, **fields)
    display.print_summary()
    return display.console.file.getvalue()


def test_plain_lines_and_summary_when_not_a_terminal():
    out = play(Display(Console(file=io.StringIO(), width=140), interval=0.0))
    assert "features: 10 videos, 2 cached, 8 to compute" in out
    # two batches are the warm-up (compilation, workers starting): no rate and no ETA from them
    assert "features: 7/10 videos  2 cached  1 failed  ETA after the first batches" in out
    assert "videos/s" not in out
    assert "features: done, 9 videos (7 computed, 2 cached, 1 failed) in 3.2 s" in out
    assert "note: features: 1 videos failed (1 x not a video); all of them: fvc sql --query failures" in out
    assert "train: model 2 of 2: xgb_s24" in out
    table = out[out.index(" stage "):].splitlines()
    assert table[2].split() == ["features", "9", "2", "1", "3.2", "0a1b2c3d4e5f"]
    assert table[3].split()[:4] == ["train", "-", "-", "0"] and table[3].split()[5] == "9f8e7d6c5b4a"
    assert "best xgb_s24, out-of-fold AUC 0.812 (registered v3)" in table[3]


def _eta_seconds(text: str) -> int:
    m, s = re.search(r"ETA (\d+):(\d\d)\b", text).groups()
    return int(m) * 60 + int(s)


def test_the_first_eta_comes_from_the_rate_after_the_warm_up_batches():
    """A slow first batch (the kernels compiling) does not make the ETA: it is measured from the
    batches after the warm-up, and shown only then."""
    display = Display(Console(file=io.StringIO(), width=140), interval=0.0)
    with display, progress.listening(display):
        progress.emit("stage_start", stage="features", total=100_000, todo=100_000, cached=0)
        t0 = time.monotonic()
        time.sleep(1.0)                                            # compiling: 10 videos in 1 s
        progress.emit("stage_batch", stage="features", done=10, failed=0)
        progress.emit("stage_batch", stage="features", done=10, failed=0)
        t1 = time.monotonic()
        time.sleep(0.1)                                            # then 200 videos in 0.1 s
        progress.emit("stage_batch", stage="features", done=199, failed=1)
        t2 = time.monotonic()
    lines = [ln for ln in display.console.file.getvalue().splitlines() if "/100000 videos" in ln]
    assert len(lines) == 3
    assert all("ETA after the first batches" in ln and "videos/s" not in ln for ln in lines[:2])
    left = 100_000 - 220
    shown = _eta_seconds(lines[2])
    assert shown <= left / (200 / (t2 - t1)) + 1              # at least the measured rate
    assert shown < 0.6 * left / (220 / (t2 - t0))             # well under what the whole stage's rate says


def test_live_lines_on_a_terminal_end_with_the_same_table():
    display = Display(Console(file=io.StringIO(), width=140, force_terminal=True))
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", play(display))
    assert "model 1 of 2" in out and "fold 2 of 2 done" in out and "out-of-fold AUC 0.812" in out
    assert [r["stage"] for r in display.rows] == ["features", "train"]
    assert display.rows[0]["videos"] == 9


def test_a_sink_that_raises_is_removed_and_the_work_goes_on():
    calls = []

    def bad(event, fields):
        calls.append(event)
        raise RuntimeError("boom")

    with progress.listening(bad):
        progress.emit("note", text="a")
        progress.emit("note", text="b")
    assert calls == ["note"]


def test_fvcflow_warnings_reach_the_user_once(tmp_path):
    shown = []
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        logs.route(tmp_path / "x.log", show=shown.append)
        for _ in range(3):
            logging.getLogger("fvcflow.training").warning("skipped %s: %s", "m", "why")
        logging.getLogger("distributed.nanny").warning("Worker process still alive")
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
            h.close()
    assert shown == ["skipped m: why"]
    text = (tmp_path / "x.log").read_text()
    assert "Worker process still alive" in text and text.count("skipped m: why") == 3


def test_cue_aucs_against_sklearn():
    rng = np.random.default_rng(0)
    n = 60
    y = np.repeat([0, 1], n // 2)
    videos = pl.DataFrame({
        "video_id": [f"v{i}" for i in range(n)], "group_id": [f"g{i // 2}" for i in range(n)],
        "label": y.astype(np.int8), "bit_rate": rng.normal(1e6, 1e5, n) + y * 5e4,
        "fps": np.full(n, 25.0), "width": np.full(n, 640), "height": np.full(n, 360),
        "codec": np.where(y == 1, "hevc", "h264"), "container": np.full(n, "mp4"),
    })
    table, combined = cue_table(videos)
    auc = dict(zip(table["cue"], table["auc"]))
    assert auc["bit_rate"] == pytest.approx(roc_auc_score(y, videos["bit_rate"].to_numpy()))
    assert auc["codec"] == 1.0                   # one codec per class
    assert auc["container"] is None and auc["fps"] is None   # one value: no signal, not 0.5
    assert table["cue"][0] == "codec"            # most separating first
    assert combined > 0.9                        # the codec alone gives it away, out of fold too


def test_eer_threshold_is_where_the_error_rates_meet():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    thr = eer_threshold(y, p)
    fpr = ((p >= thr) & (y == 0)).sum() / (y == 0).sum()
    fnr = ((p < thr) & (y == 1)).sum() / (y == 1).sum()
    f, t, _ = roc_curve(y, p)
    assert abs(fpr - fnr) == pytest.approx(np.min(np.abs((1 - t) - f)))


@pytest.mark.parametrize("verbose", [False, True])
def test_a_record_no_handler_can_deliver_prints_no_traceback_unless_verbose(tmp_path, verbose):
    """As Prefect's API log handler once its server is gone: no "--- Logging error ---" traceback
    on the terminal of a command; ``-v`` shows it."""
    import subprocess
    import sys

    code = ("import logging, sys\n"
            "from pathlib import Path\n"
            "from fvcflow.cli import logs\n"
            "class Broken(logging.Handler):\n"
            "    def emit(self, record):\n"
            "        try:\n"
            "            raise ConnectionError('the API is gone')\n"
            "        except ConnectionError:\n"
            "            self.handleError(record)\n"
            "logs.route(Path(sys.argv[1]), verbose=sys.argv[2] == 'v')\n"
            "logging.getLogger('prefect.flow_runs').addHandler(Broken())\n"
            "logging.getLogger('prefect.flow_runs').warning('a record for the API')\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.log"), "v" if verbose else "-"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert ("Logging error" in res.stderr) == verbose, res.stderr
    assert "a record for the API" in (tmp_path / "x.log").read_text()
