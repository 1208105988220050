"""``benchmarks/gpu_check.py --device cpu --quick``: every phase runs on the CPU in under 3 minutes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

#: the phases of one process (ddp and launcher start 2 gloo ranks each: their code paths are
#: tested by tests/test_deep_ddp.py, and their CPU lines are in the README)
PHASES = ["env", "fit", "resume", "predict", "defaults", "throughput"]


def test_the_gpu_check_runs_every_phase_on_the_cpu_quickly():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--quick",
                           "--phases", ",".join(PHASES)], capture_output=True, text=True, timeout=180)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    results = {r["phase"]: r for r in (json.loads(line) for line in lines if line.startswith("{"))}
    assert list(results) == PHASES
    assert [line for line in lines if line.startswith(("PASS", "FAIL"))] == \
        [f"PASS: {p}" for p in PHASES] + ["PASS: gpu_check on cpu"]
    assert set(results["fit"]) >= {"r2plus1d_18", "vit_gru_small", "slowfast_r50", "variable_aspect_cnn"}
    assert results["resume"]["max_weight_diff"] == 0.0                 # bit for bit on the CPU
    assert results["throughput"]["loader_clips_per_s"] > 0 and results["throughput"]["peak_mib"] > 0
    assert results["defaults"]["batch_size"] == 8 and results["defaults"]["precision"] == "fp32"   # the CPU's
    assert "dev_shm_mib" in results["env"] and seconds < 180


def test_the_gpu_check_says_what_is_wrong_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == ("error: --device cuda but torch sees no CUDA device "
                                   "(try --device cpu --quick)")
