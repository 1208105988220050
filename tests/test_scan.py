"""``fvc scan`` on real encoded videos, on a real Dask LocalCluster, with a model from the MLflow store."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from fvcflow.analytics import query
from fvcflow.cli import main as fvc
from fvcflow.metrics import THRESHOLD_RULE, operating_threshold
from fvcflow.scan.core import cache_dir, read_cache
from fvcflow.scan.inputs import collect
from fvcflow.store import file_hash, read_parquet
from tests.media import write_video
from tests.training_runs import shared_trained_lake


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_trained_lake(tmp_path_factory)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Good videos (one in a subfolder), a byte-identical copy, a text file named .mp4, a note."""
    d = tmp_path_factory.mktemp("inbox")
    (d / "sub").mkdir()
    a = write_video(d / "a.mp4", n=24, width=96, height=64, seed=2)
    write_video(d / "sub" / "b.webm", n=20, width=64, height=64, seed=5)
    write_video(d / "c.mkv", n=16, width=80, height=48, seed=7)
    shutil.copyfile(a, d / "sub" / "a-copy.mp4")
    (d / "bad.mp4").write_bytes(b"this is not a video at all" * 10)
    (d / "notes.txt.bak").write_text("not a video")
    return d


def _scan(lake, *args, capsys=None) -> int:
    return fvc(["--home", str(lake.root), "scan", "--workers", "1", *map(str, args)])


def _most_deviant_tile(path: str) -> tuple[int, int, int]:
    """(frame, x, y) of the tile of highest robust z over the sampled frames, measured here."""
    import numpy as np

    from fvcflow.kernels import local_frame
    from fvcflow.video import iter_yuv, probe, sample_indices

    best = (-np.inf, 0, 0, 0)
    for i, (y, cb, cr) in iter_yuv(path, sample_indices(probe(path).n_frames)):
        z = np.where(np.isfinite(zm := local_frame(y, cb, cr).zmap), zm, -np.inf)
        ty, tx = np.unravel_index(int(np.argmax(z)), z.shape)
        if z[ty, tx] > best[0]:
            best = (z[ty, tx], i, int(tx) * 32, int(ty) * 32)
    return best[1:]


def _predict(lake, paths, capsys) -> dict:
    fvc(["--home", str(lake.root), "predict", *map(str, paths), "--json"])
    return {r["path"]: r for r in json.loads(capsys.readouterr().out)}


def test_inputs_from_folders_files_and_lists(folder, tmp_path):
    listed = tmp_path / "list.csv"
    listed.write_text(f"path,label\n{folder / 'a.mp4'},x\nsub/b.webm,y\n")
    (tmp_path / "sub").symlink_to(folder / "sub")
    got = collect([folder, listed, folder / "a.mp4"])
    names = sorted(p.relative_to(folder).as_posix() for p in got.files)
    assert names == ["a.mp4", "bad.mp4", "c.mkv", "sub/a-copy.mp4", "sub/b.webm"]
    assert got.repeated == 3                          # a.mp4 twice more, b.webm through the list's link
    assert [p.name for p in got.skipped] == ["notes.txt.bak"]


@pytest.mark.slow
def test_scan_rows_scores_page_and_sql(trained, folder, capsys):
    lake, _, summary = trained
    assert _scan(lake, folder, "--name", "first") == 1          # one file failed: exit 1, all rows written
    out = capsys.readouterr().out
    assert "scan first: 5 files, 4 scored (4 computed, 1 from the cache), 1 failed" in out, out   # a copy
    scores = read_parquet(lake.root / "scans" / "first" / "scores.parquet")
    assert scores.height == 5 and scores["path"].n_unique() == 5
    files = sorted(str(p) for p in collect([folder]).files)
    assert sorted(scores["path"]) == files
    want = _predict(lake, files, capsys)
    # the detector's own threshold, chosen at training on its calibrated out-of-fold predictions
    oof = read_parquet(lake.calibrated_predictions).filter(pl.col("split") == "oof")
    threshold = operating_threshold(oof["label"].to_numpy(), oof["prob_calibrated"].to_numpy())
    assert threshold != 0.5
    for r in scores.iter_rows(named=True):
        ref = want[r["path"]]
        if ref["error"] is None:
            assert r["prob_fake"] == pytest.approx(ref["prob_fake"], abs=1e-6)
            assert r["threshold"] == ref["threshold"] == threshold and ref["threshold_rule"] == THRESHOLD_RULE
            assert r["verdict"] == ref["verdict"] == ("fake" if r["prob_fake"] >= threshold else "real")
            assert r["model"] == summary.best and r["version"] == ref["version"] and r["calibrated"]
            assert r["content_hash"] == file_hash(r["path"]) and r["error"] is None
            feats = json.loads(r["top_features"])
            assert len(feats) == 8 and r["evidence_method"]
            assert [abs(f["contribution"]) for f in feats] == sorted((abs(f["contribution"]) for f in feats),
                                                                     reverse=True)
        else:
            assert r["path"].endswith("bad.mp4") and r["prob_fake"] is None and r["verdict"] is None
            assert r["path"] in r["error"] and r["error_type"] == "VideoError"
    dup = scores.filter(pl.col("path").str.contains("a(-copy)?\\.mp4$"))
    assert dup.height == 2 and dup["prob_fake"].n_unique() == 1 and dup["content_hash"].n_unique() == 1

    page = (lake.root / "scans" / "first" / "scan.html").read_text()
    order = scores.filter(pl.col("prob_fake").is_not_null()).sort("prob_fake", descending=True)["path"]
    positions = [page.index(p) for p in order]
    assert positions == sorted(positions)                       # sorted by P(fake), highest first
    assert page.count('<tr class="video">') == 4 and page.count('alt="first frame" src="data:image/jpeg') == 4
    # the deviant-tile overlay of every video with verdict fake (the default), in the table and the page
    fakes = scores.filter(pl.col("verdict") == "fake")
    assert fakes.height >= 1 and page.count('alt="deviant tiles" src="data:image/jpeg') == fakes.height
    assert scores.filter(pl.col("verdict") != "fake")["overlay"].is_null().all()
    for r in fakes.iter_rows(named=True):
        assert open(r["overlay"], "rb").read(2) == b"\xff\xd8"              # a JPEG in the scan's folder
        tiles = json.loads(r["top_tiles"])
        assert tiles[0]["z"] == pytest.approx(r["max_z"], abs=1e-3)
        assert (r["overlay_frame"], tiles[0]["x"], tiles[0]["y"]) == _most_deviant_tile(r["path"])
    assert page.count('<tr class="failure">') == 1 and "bad.mp4" in page[page.index('id="failures"'):]
    assert "1 files in the folders were not scanned" in page

    got = query(lake, "SELECT path, prob_fake, top_tiles FROM scans WHERE scan = 'first' AND error IS NULL")
    assert got.height == 4 and got["top_tiles"].is_not_null().sum() == fakes.height
    assert fvc(["--home", str(lake.root), "sql", "SELECT count(*) AS n FROM scans WHERE scan = 'first'"]) == 0
    assert "5" in capsys.readouterr().out


@pytest.mark.slow
def test_the_cache_scores_only_what_is_new(trained, folder, tmp_path, capsys):
    lake, _, _ = trained
    inbox = tmp_path / "inbox"
    shutil.copytree(folder, inbox)
    assert _scan(lake, inbox, "--name", "again") == 1
    first = capsys.readouterr().out
    assert "computed" in first
    entries = {p: p.stat().st_mtime_ns for p in (lake.root / "scans" / "_cache").rglob("*.parquet")}
    assert _scan(lake, inbox, "--name", "again") == 1           # same contents: nothing computed
    assert "5 files, 4 scored (0 computed, 5 from the cache), 1 failed" in capsys.readouterr().out
    write_video(inbox / "new.mp4", n=18, width=64, height=48, seed=41)
    assert _scan(lake, inbox, "--name", "again") == 1
    assert "6 files, 5 scored (1 computed, 5 from the cache), 1 failed" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in (lake.root / "scans" / "_cache").rglob("*.parquet")}
    assert {p: after[p] for p in entries} == entries            # no earlier entry was rewritten
    assert len(set(after) - set(entries)) == 1
    scores = read_parquet(lake.root / "scans" / "again" / "scores.parquet")
    assert scores.height == 6 and scores.filter(pl.col("path").str.ends_with("new.mp4"))["prob_fake"][0] > 0


def test_a_scan_worker_imports_no_torch_for_a_tabular_detector():
    """What a Dask worker of the scan imports to load and score a tabular detector leaves torch
    out (it cost each spawned worker half a minute): the deep models register on the registry's
    first look-up, and skops (which walks every scikit-learn package, its torch shim included)
    is imported without scikit-learn's torch shim (tests/test_models.py: the deep models still
    register, on the first look-up)."""
    code = ("import sys; from fvcflow.scan.core import score_batch; from fvcflow.detector.predict import "
            "load_detector; from fvcflow.models.skops_safe import _skops_io; sio = _skops_io(); "
            "print('torch' in sys.modules, 'sklearn.externals.array_api_compat.torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["False", "False"], res.stdout


def test_a_missing_path_and_a_bad_name_are_one_line_errors(trained, tmp_path, capsys):
    lake, _, _ = trained
    assert _scan(lake, tmp_path / "nope") == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope'}: no such file or folder"
    assert _scan(lake, tmp_path, "--name", "../x") == 2
    assert "scan name '../x'" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_mid_scan_then_resume(trained, tmp_path):
    """The scan killed with SIGKILL (its workers with it) keeps every video finished; the rerun
    scores only the rest, and the table is whole."""
    lake, _, _ = trained
    inbox = tmp_path / "many"
    inbox.mkdir()
    for k in range(14):
        write_video(inbox / f"v{k:02d}.mp4", n=90, width=160, height=96, seed=100 + k)
    cmd = [sys.executable, "-m", "fvcflow", "--home", str(lake.root), "scan", str(inbox), "--name", "killed",
           "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    hashes = {file_hash(p) for p in inbox.iterdir()}

    def cached() -> int:            # contents in the cache's parts (one part per finished batch)
        return sum(len(read_cache(lake, d.name, hashes)) for d in (lake.root / "scans" / "_cache").glob("*"))

    deadline = time.monotonic() + 240
    while cached() < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    done_before = cached()
    assert 2 <= done_before < 14, done_before
    assert not (lake.root / "scans" / "killed" / "scores.parquet").exists()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"14 files, 14 scored ({14 - done_before} computed, {done_before} from the cache), 0 failed" \
        in res.stdout, res.stdout
    scores = read_parquet(lake.root / "scans" / "killed" / "scores.parquet")
    assert scores.height == 14 and scores["prob_fake"].is_not_null().all()
    assert cache_dir(lake, "x").parent.name == "_cache"


@pytest.mark.slow
def test_the_scan_deployment_runs_from_the_api(prefect_server, trained, folder, tmp_path):
    """`prefect deployment run fvc/scan` (parameters paths, model) against `fvc serve`: the flow run
    scans on Dask and its rows are the CLI's."""
    import threading

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from tests.test_serve import ROOT, env_with

    lake, _, _ = trained
    env = env_with(lake.root, PREFECT_API_URL=PREFECT_API_URL.value(), FVC_WORKERS="1")
    proc = subprocess.Popen([sys.executable, "-m", "fvcflow", "--home", str(lake.root), "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not any("being served" in x
                                                                               for x in lines):
            time.sleep(0.2)
        assert any("being served" in x for x in lines), "".join(lines)
        run = run_deployment("fvc/scan", parameters={"paths": [str(folder)], "model": "fvc-detector@champion",
                                                     "name": "from-ui"}, timeout=300)
        assert run.state.is_completed(), (run.state.message, "".join(lines))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    scores = read_parquet(lake.root / "scans" / "from-ui" / "scores.parquet")
    assert scores.height == 5 and scores["prob_fake"].is_not_null().sum() == 4
    first = read_parquet(lake.root / "scans" / "first" / "scores.parquet")
    if first is not None:                                           # the CLI's scan of the same folder
        assert dict(zip(scores["path"], scores["prob_fake"])) == dict(zip(first["path"], first["prob_fake"]))
