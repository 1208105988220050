"""``fvc predict`` on real encoded videos with a model from the MLflow store."""

import json
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fvcflow.cli import main as fvc
from fvcflow.config import Settings
from fvcflow.stages.features import video_features
from fvcflow.stages.scale import scale_video
from fvcflow.training.tracking import runs as tracking
from tests.media import truncate, write_video
from tests.training_runs import MODELS, shared_trained_lake


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    lake, cfg, summary = shared_trained_lake(tmp_path_factory)
    s2 = next(r for r in summary.results if r.name == "logreg_s2")
    tracking.register(lake, cfg.model_copy(update={"registered_name": "fvc-s2-only"}), s2)
    return lake, cfg, summary


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    good = write_video(d / "good.mp4", n=24, width=96, height=64, seed=2)
    other = write_video(d / "other.webm", n=20, width=64, height=64, seed=5)
    bad = d / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    cut = truncate(write_video(d / "cut.mp4", n=24, seed=3), 0.05)
    return good, other, bad, cut


def _expected(result, path, calibration=None):
    row = dict(video_features(path))
    if any(c.startswith("s4_") for c in result.columns):
        s = Settings().scale
        flags = scale_video(path, path.with_suffix(".scaled.mp4"), size=s.size, crf=s.crf)
        row.update(video_features(path.with_suffix(".scaled.mp4"), prefix="s4_"))
        row.update(is_upscaled=float(flags["is_upscaled"]), is_downscaled=float(flags["is_downscaled"]))
    X = pd.DataFrame([{c: float(row.get(c, np.nan)) for c in result.columns}])
    model = result.model if calibration is None else calibration.wrap(result.model)
    return float(model.predict_proba(X)[0, 1])


def test_scores_good_files_and_reports_bad_ones(trained, videos, capsys, tmp_path):
    lake, _, summary = trained
    good, other, bad, cut = videos
    rc = fvc(["--home", str(lake.root), "predict", str(good), str(bad), str(other), str(cut), "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    recs = {r["path"]: r for r in json.loads(captured.out)}
    best = next(r for r in summary.results if r.name == summary.best)
    latest = str(max(int(v.version) for v in MlflowClient(lake.mlflow_uri, lake.mlflow_uri)
                     .search_model_versions("name = 'fvc-detector'")))
    for path in (good, other):
        rec = recs[str(path)]
        assert rec["error"] is None and rec["model"] == summary.best
        assert rec["registered_name"] == "fvc-detector"
        assert rec["version"] == latest                    # other tests may have added versions
        # fvc-detector is calibrated on the best model's grouped out-of-fold predictions, and says so
        cal = summary.evidence.calibration
        assert rec["prob_fake"] == pytest.approx(_expected(best, path, cal), abs=1e-9)
        assert rec["calibrated"] is True and rec["calibration"] == cal.method
        ev = rec["evidence"]                               # what moved this score: its largest terms
        sizes = [abs(f["contribution"]) for f in ev["top_features"]]
        assert ev["method"] and len(sizes) == 8 and sizes == sorted(sizes, reverse=True)
        assert {f["feature"] for f in ev["top_features"]} <= set(best.columns)
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and str(bad) in errors[0] and str(cut) in errors[1]
    assert recs[str(bad)]["prob_fake"] is None and str(bad) in recs[str(bad)]["error"]


def test_plain_output_and_a_named_model(trained, videos, capsys):
    lake, _, summary = trained
    good = videos[0]
    s2 = next(r for r in summary.results if r.name == "logreg_s2")
    assert fvc(["--home", str(lake.root), "predict", str(good), "--model", "fvc-s2-only"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(good)) and "model=logreg_s2" in line and "fvc-s2-only v1" in line
    assert f"P(fake)={_expected(s2, good):.4f} uncalibrated" in line
    assert fvc(["--home", str(lake.root), "predict", str(good)]) == 0
    line = capsys.readouterr().out.strip()
    best = next(r for r in summary.results if r.name == summary.best)
    cal = summary.evidence.calibration
    assert f"P(fake)={_expected(best, good, cal):.4f} calibrated ({cal.method})" in line


@pytest.mark.parametrize("name", MODELS.split(","))
def test_every_trained_model_by_uri(trained, videos, capsys, name):
    lake, _, summary = trained
    good = videos[0]
    result = next(r for r in summary.results if r.name == name)
    assert fvc(["--home", str(lake.root), "predict", str(good), "--model", result.model_uri, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["prob_fake"] == pytest.approx(_expected(result, good), abs=1e-9)
    assert rec["model"] == name and rec["version"] is None and rec["calibrated"] is False


def test_unknown_model_and_missing_store(trained, videos, capsys, tmp_path):
    lake, _, _ = trained
    assert fvc(["--home", str(lake.root), "predict", str(videos[0]), "--model", "no-such-model"]) == 2
    assert "no registered model 'no-such-model'" in capsys.readouterr().err
    for quoted in ("it's", "x' OR name LIKE '%", 'say "hi"'):   # never part of an MLflow filter string
        assert fvc(["--home", str(lake.root), "predict", str(videos[0]), "--model", quoted]) == 2
        err = capsys.readouterr().err
        assert f"no registered model {quoted!r}" in err and "fvc-detector" in err, err
    assert fvc(["--home", str(tmp_path), "predict", str(videos[0])]) == 2
    assert "no MLflow store" in capsys.readouterr().err


def _store_snapshot(lake) -> dict:
    """Every file of the MLflow store (database and artifacts) with its size, mtime and bytes."""
    files = [lake.mlflow_db] + sorted(p for p in lake.root.joinpath("mlartifacts").rglob("*") if p.is_file())
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def test_predict_writes_nothing_into_the_store(trained, videos, capsys):
    """Scoring leaves the MLflow store as it was (no registered_model_meta, no new file)."""
    lake, _, _ = trained
    before = _store_snapshot(lake)
    assert fvc(["--home", str(lake.root), "predict", str(videos[0]), "--json"]) == 0
    assert fvc(["--home", str(lake.root), "predict", str(videos[0]), "--model", "models:/fvc-s2-only/1"]) == 0
    capsys.readouterr()
    after = _store_snapshot(lake)
    assert sorted(after) == sorted(before), set(after) ^ set(before)
    assert after == before


def _can_mount_read_only() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / / 2>/dev/null"],
                           capture_output=True)
    return shutil.which("unshare") is not None and probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="no private read-only bind mount here (unshare -m)")
def test_predict_on_a_read_only_store(trained, videos):
    """The work dir mounted read-only (a private mount namespace): predict still scores."""
    lake, _, _ = trained
    code = (f"mount --bind -o ro {shlex.quote(str(lake.root))} {shlex.quote(str(lake.root))} && "
            f"touch {shlex.quote(str(lake.root / 'probe'))} 2>/dev/null && exit 9; "
            f"exec {shlex.quote(sys.executable)} -m fvcflow --home {shlex.quote(str(lake.root))} "
            f"predict {shlex.quote(str(videos[0]))} --json")
    res = subprocess.run(["unshare", "-m", "sh", "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert json.loads(res.stdout)[0]["prob_fake"] is not None


def test_unknown_version_names_the_versions_that_exist(trained, videos, capsys):
    lake, _, _ = trained
    assert fvc(["--home", str(lake.root), "predict", str(videos[0]), "--model", "models:/fvc-s2-only/9"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "fvc-s2-only has no version 9" in err and "versions: 1" in err
    assert fvc(["--home", str(lake.root), "predict", str(videos[0]), "--model", "models:/nope/1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no registered model 'nope'" in err and "fvc-detector" in err


PEAK_OF_CHILD = """
import resource, subprocess, sys
res = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(res.stdout)
sys.stderr.write(res.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
sys.exit(res.returncode)
"""


def predict_peak(lake, uri, *videos) -> tuple[int, str, int]:
    """``fvc predict`` in a fresh process: its exit status, its error lines, its peak RSS (bytes)."""
    cmd = [sys.executable, "-m", "fvcflow", "--home", str(lake.root), "predict", *map(str, videos),
           "--model", uri, "--json"]
    res = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *cmd], capture_output=True, text=True)
    return res.returncode, res.stderr, int(res.stdout.split()[-1])


@pytest.mark.slow
def test_frames_over_the_pixel_bound_are_refused_with_bounded_memory(trained, tmp_path):
    """An 8192x8192 frame (over the default pixel bound) and a 16384x16384 one (over what FFmpeg
    decodes): one error line each naming the file and the bound, no traceback, and ``fvc predict``'s
    peak memory stays that of a small video's (one 8Kx8K RGB frame alone would be 192 MiB)."""
    from tests.test_reliability_bounds import png_video

    lake, _, summary = trained
    uri = next(r for r in summary.results if r.name == "logreg_s24").model_uri   # letterboxes (stage 4)
    small = write_video(tmp_path / "small.mp4", n=24, width=96, height=64, seed=2)
    x8 = png_video(tmp_path / "8kx8k.mov", 8192, 8192)
    x16 = png_video(tmp_path / "16kx16k.mov", 16384, 16384)
    rc, err, base = predict_peak(lake, uri, small)
    assert rc == 0, err
    rc, err, peak = predict_peak(lake, uri, x8, x16)
    assert rc == 1 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, err
    assert str(x8) in errors[0] and "over the pixel bound: 8192x8192" in errors[0]
    assert "limits.max_pixels = 35389440" in errors[0]
    assert str(x16) in errors[1] and "over the pixel bound: 16384x16384" in errors[1]
    print(f"fvc predict peak RSS: small video {base / 2**20:.0f} MiB, 8Kx8K + 16Kx16K {peak / 2**20:.0f} MiB")
    assert peak - base < 128 * 2**20


def test_a_model_from_outside_the_registry_is_refused_unless_allowed(trained, videos, capsys, tmp_path):
    """A copy of a logged model in a folder outside the work dir (where anyone may have planted
    one) is refused with one line; ``--allow-external-model`` loads it and scores as the original."""
    import mlflow.artifacts

    lake, _, summary = trained
    good = videos[0]
    result = next(r for r in summary.results if r.name == "logreg_s2")
    mlflow.set_tracking_uri(lake.mlflow_uri)
    copy = mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri,
                                               dst_path=str(tmp_path / "elsewhere"))
    uri = f"file://{copy}"
    capsys.readouterr()                                               # the download's progress bar
    assert fvc(["--home", str(lake.root), "predict", str(good), "--model", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--model {uri}: not a model of this work dir's registry" in err, err
    assert "--allow-external-model" in err
    assert fvc(["--home", str(lake.root), "predict", str(good), "--model", uri, "--allow-external-model",
                "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["prob_fake"] == pytest.approx(_expected(result, good), abs=1e-9)


def test_the_champion_alias_names_the_best_model(trained, videos, capsys):
    """Registration gives the best model MLflow's alias ``champion``; predict accepts it."""
    lake, _, summary = trained
    client = MlflowClient(lake.mlflow_uri, lake.mlflow_uri)
    champion = client.get_model_version_by_alias("fvc-detector", "champion")
    assert champion.tags["fvc.model"] == summary.best
    good = str(videos[0])
    assert fvc(["--home", str(lake.root), "predict", good, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)[0]
    for ref in ("models:/fvc-detector@champion", "fvc-detector@champion"):
        assert fvc(["--home", str(lake.root), "predict", good, "--model", ref, "--json"]) == 0
        rec = json.loads(capsys.readouterr().out)[0]
        assert rec["version"] == str(champion.version) and rec["model"] == summary.best
        if str(champion.version) == plain["version"]:          # the latest version is the champion here
            assert rec["prob_fake"] == plain["prob_fake"]
    assert fvc(["--home", str(lake.root), "predict", good, "--model", "models:/fvc-detector@nope"]) == 2
    err = capsys.readouterr().err
    assert "has no alias 'nope'" in err and "champion" in err and len(err.strip().splitlines()) == 1
