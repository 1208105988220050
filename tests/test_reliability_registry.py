"""Two users, one work dir: ``fvc predict`` loads the detector while ``fvc train`` registers new
versions of ``fvc-detector`` (another process, for real, on the same SQLite store). Every load
gets a whole model, the one its version names: an old or a new one, never a mix or an error."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from fvcflow.detector.predict import load_detector
from fvcflow.training import make_splits, train_model
from tests.feature_tables import write_lake
from tests.training_runs import small_config

REGISTRAR = """
import sys, mlflow
from mlflow.tracking import MlflowClient
uri, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
models = [tuple(m.split("=", 1)) for m in sys.argv[4:]]
mlflow.set_tracking_uri(uri); mlflow.set_registry_uri(uri)
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    model, source = models[i % len(models)]
    mlflow.register_model(source, name, tags={"fvc.model": model})
print("done", flush=True)
"""


@pytest.mark.slow
def test_predict_while_train_registers_gets_the_old_or_the_new_model_whole(tmp_path):
    lake = write_lake(tmp_path / "fvc-data", n_groups=16, n_aug=1, signal=2.0, seed=7)
    cfg = small_config(models="logreg_s2,logreg_s24", report=False)
    make_splits(lake, cfg)
    results = [train_model(lake, m, cfg) for m in ("logreg_s2", "logreg_s24")]
    # version 1 from the first model itself (finish may register a calibrated wrapper instead)
    import mlflow
    mlflow.set_registry_uri(lake.mlflow_uri)
    first = mlflow.register_model(results[0].model_uri, "fvc-detector", tags={"fvc.model": results[0].name})
    assert str(first.version) == "1"
    s4 = pl.read_parquet(lake.stage4).drop("group_id", "label", strict=False)
    row = pl.read_parquet(lake.stage2).join(s4, on="video_id").head(1).to_dicts()[0]
    expected = {r.name: load_detector(lake, r.model_uri).predict_rows([row])[0] for r in results}
    assert len(set(expected.values())) == 2, "the two models must be told apart by their prediction"

    n = 12
    proc = subprocess.Popen([sys.executable, "-c", REGISTRAR, lake.mlflow_uri, "fvc-detector", str(n),
                             *(f"{r.name}={r.model_uri}" for r in results)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[tuple[int, str]] = []
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        while True:
            running = proc.poll() is None
            det = load_detector(lake)                       # what `fvc predict` does, while versions appear
            p = det.predict_rows([row])[0]
            assert det.model_name in expected, det.model_name
            assert p == expected[det.model_name], (det.version, det.model_name, p)   # whole, the one named
            seen.append((int(det.version), det.model_name))
            if not running:                                 # this load started after the last registration
                break
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    versions = [v for v, _ in seen]
    assert versions == sorted(versions)                     # never an older version after a newer one
    assert versions[-1] == n + 1                            # the last load saw the last registration
    assert len(set(versions)) > 1, "the loads should overlap the registrations"
