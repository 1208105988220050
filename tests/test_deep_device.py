"""One device per deep task, and the deep loop's numerics and failures, on the CPU.

The lease is a plain function given a device count (slots on the CPU); a real Prefect run of three
deep models under a ``gpu`` limit of two shows the scheduling; a checkpoint of NaN weights, a real
failed allocation and the ViT-GRU under autocast show the failures and the numerics.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

from fvcflow.deep.device import _physical, candidates, lease_device
from fvcflow.errors import ConfigError, DeviceError, DivergedError
from fvcflow.models import get_model_spec
from fvcflow.models.torch_common import ClipSpec, build_video_model
from tests.deep_lake import tiny_deep_config, video_cv, write_deep_lake

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("device") / "fvc-data")


# -- the lease ----------------------------------------------------------------------------------
def test_the_lease_gives_distinct_devices_and_takes_them_back_on_success_and_failure(tmp_path):
    three = dict(devices=[0, 1, 2], root=tmp_path)
    with lease_device("cpu", **three) as a, lease_device("cpu", **three) as b:
        with lease_device("cpu", [0, 1, 2], root=tmp_path) as c:
            assert (a.index, b.index, c.index) == (0, 1, 2)
            assert c.tags() == {"fvc.device_index": "2"} and c.device.type == "cpu"
            with pytest.raises(ConfigError, match=r"no free device among train.deep.devices=\[0, 1, 2\]"):
                with lease_device("cpu", [0, 1, 2], root=tmp_path, timeout=0.3, poll=0.05):
                    pass
        with lease_device("cpu", [0, 1, 2], root=tmp_path) as again:
            assert again.index == 2                        # given back at the end of the block
    with pytest.raises(RuntimeError, match="boom"):
        with lease_device("cpu", [0, 1], root=tmp_path):
            raise RuntimeError("boom")
    with lease_device("cpu", [0, 1], root=tmp_path) as after:
        assert after.index == 0                            # given back on failure too
    with lease_device("cpu", root=tmp_path) as none:       # a CPU-only machine: nothing to lease
        assert none.index is None and none.tags() == {}


def test_a_waiting_lease_takes_the_device_a_killed_process_held(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from fvcflow.deep.device import lease_device
        with lease_device("cpu", [0], root=Path({str(tmp_path)!r})) as lease:
            print(lease.index, flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        got = []
        waiter = threading.Thread(target=lambda: got.append(
            _lease_index(tmp_path, [0], timeout=60)))
        waiter.start()
        time.sleep(0.5)
        assert not got                                     # waits while another process holds it
        os.kill(holder.pid, signal.SIGKILL)                # kill -9: the kernel drops the lock
        waiter.join(30)
        assert got == [0]
    finally:
        holder.kill()
        holder.wait()


def _lease_index(root, devices, **kw):
    with lease_device("cpu", devices, root=root, poll=0.05, **kw) as lease:
        return lease.index


def test_candidates_honour_the_setting_and_cuda_visible_devices():
    assert candidates(None, 4, cuda=True) == [0, 1, 2, 3] and candidates([3, 1], 4, cuda=True) == [3, 1]
    with pytest.raises(ConfigError, match=r"train.deep.devices.*names a device torch does not see "
                                          r"\(2 visible"):
        candidates([0, 5], 2, cuda=True)
    with pytest.raises(ConfigError, match="distinct indices"):
        candidates([1, 1], 4, cuda=True)
    assert _physical(1, False) == "slot-1"
    if torch.cuda.is_available():                          # the card's UUID, whatever its visible index
        assert _physical(0, True) == f"cuda-{torch.cuda.get_device_properties(0).uuid}"


# -- many models at once through Prefect --------------------------------------------------------
@pytest.mark.slow
def test_three_deep_models_under_a_gpu_limit_of_two_train_two_at_once_on_distinct_devices(
        prefect_server, lake):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    from fvcflow.config import Settings
    from fvcflow.flows.pipeline import fvc
    from fvcflow.flows.train import gpu_limit
    from fvcflow.progress import listening

    models = "naive_3dcnn,variable_aspect_cnn,i3d_r50"
    train = tiny_deep_config(models, epochs=1, devices=[0, 1, 2]).model_copy(update={"models": "naive_3dcnn"})
    train.deep.clip["variable_aspect_cnn"] = {"frames": 4, "clips": 2, "size": None}
    train = train.model_copy(update={"params": {"i3d_r50": {"width": 8}}, "report": False,
                                     "register_best": False, "shortcut_check": False})
    settings = Settings(home=lake.root, stages=["train"], train=train)
    events, lock = [], threading.Lock()

    def sink(event, fields):
        if event in ("device_lease", "device_release"):
            with lock:
                events.append((event, fields["model"], fields["index"]))

    GPU_LIMIT = gpu_limit()                                 # this node's
    with get_client(sync_client=True) as client:
        try:
            before = client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit
            client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=2))
        except Exception:  # noqa: BLE001 - not created yet in this session
            before = None
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=2))
    try:
        with listening(sink):
            state = fvc(config=settings, models=models, return_state=True)   # fvc/train-deep's parameter
    finally:
        with get_client(sync_client=True) as client:
            if before is None:
                client.delete_global_concurrency_limit_by_name(GPU_LIMIT)
            else:
                client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=before))
    assert state.is_completed(), state.message
    held, most = {}, 0
    for event, model, index in events:                     # replay the leases in the order they happened
        if event == "device_lease":
            assert index not in held.values(), f"{model} got device {index}, held by another model"
            held[model] = index
            most = max(most, len(held))
        else:
            assert held.pop(model) == index
    assert most == 2, events                               # two at once, never three
    assert sorted(m for e, m, _ in events if e == "device_lease") == sorted(models.split(","))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(lake.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(train.experiment).experiment_id],
                              "tags.`fvc.role` = 'model'")
    leased = {e[1]: e[2] for e in events if e[0] == "device_lease"}
    assert {r.data.tags["fvc.model"]: int(r.data.tags["fvc.device_index"]) for r in runs} == leased


# -- numerics and failures ----------------------------------------------------------------------
def test_a_loss_that_stays_nan_stops_the_model_with_a_clear_message(lake, tmp_path, caplog):
    bad = build_video_model("naive_3dcnn", seed=0).state_dict()
    bad = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in bad.items()}
    ckpt = tmp_path / "nan.pt"
    torch.save({"state_dict": bad}, ckpt)
    cfg = tiny_deep_config("naive_3dcnn", epochs=2, weights={"naive_3dcnn": str(ckpt)}, max_nonfinite=2)
    with pytest.raises(DivergedError, match=r"^naive_3dcnn fold0: the loss was not finite \(NaN or inf\) "
                                            r"in 2 steps, the last at epoch 0 step 1: .*lower train.deep.lr"):
        video_cv(lake, get_model_spec("naive_3dcnn"), cfg)
    skipped = [r for r in caplog.records if "non-finite loss, optimiser step skipped" in r.getMessage()]
    assert [r.getMessage().split(": ")[0] for r in skipped] == ["naive_3dcnn fold0 epoch 0 step 0",
                                                                "naive_3dcnn fold0 epoch 0 step 1"]
    lenient = tiny_deep_config("naive_3dcnn", epochs=2, weights={"naive_3dcnn": str(ckpt)}, max_nonfinite=100)
    with pytest.raises(DivergedError, match=r"^naive_3dcnn fold0: the validation logits are not finite after "
                                            r"epoch 0"):   # never a load_state_dict(None) or a metrics error
        video_cv(lake, get_model_spec("naive_3dcnn"), lenient)


def test_out_of_memory_fails_at_once_naming_the_model_device_and_batch_size():
    from fvcflow.deep.loop import device_errors
    from fvcflow.flows.video import transient

    with pytest.raises(DeviceError) as err:
        with device_errors("r2plus1d_18", torch.device("cpu"), 32):
            torch.empty(2**50, dtype=torch.uint8)          # a real failed allocation
    text = str(err.value)
    assert text.startswith("r2plus1d_18: out of memory on cpu at batch size 32") and "\n" not in text
    assert "train.deep.batch_size" in text
    with pytest.raises(ValueError):                        # anything else passes through unchanged
        with device_errors("m", torch.device("cpu"), 8):
            raise ValueError("not a device error")

    class State:                                           # what Prefect's retry condition sees
        def result(self):
            raise err.value

    assert transient(None, None, State()) is False         # never retried


def test_the_recurrent_layer_runs_in_fp32_under_autocast():
    model = build_video_model("vit_gru_small", clip=ClipSpec(frames=4, clips=1, size=32), seed=0,
                              embed_dim=64, depth=2, heads=2, patch=8).eval()
    seen = []
    model.rnn.register_forward_hook(lambda m, inp, out: seen.append((inp[0].dtype, out[0].dtype)))
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert seen == [(torch.float32, torch.float32)] and torch.isfinite(logits).all()


# -- defaults chosen for the device -------------------------------------------------------------
def test_defaults_are_chosen_from_the_device_description_when_unset():
    from fvcflow.deep.device import BYTES_PER_INPUT, SAFETY, DeviceInfo, choose_defaults

    clip = 3 * 16 * 112 * 112                                  # r2plus1d_18's input values per clip
    h100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 81_559, 80_000)
    got = choose_defaults(h100, clip_elements=clip, conv3d=True)
    assert (got.precision, got.channels_last) == ("bf16", True)
    fits = 80_000 * 2**20 * SAFETY / (clip * BYTES_PER_INPUT["bf16"])     # 163 clips: the power of 2 below
    assert got.batch_size == 128 and got.batch_size <= fits < 2 * got.batch_size
    assert got.chosen == ("batch_size", "precision", "channels_last")
    v100 = DeviceInfo("cuda", "Tesla V100-SXM2-16GB", (7, 0), 16_160, 15_000)   # no bf16 before Ampere
    old = choose_defaults(v100, clip_elements=clip, conv3d=False)
    assert (old.precision, old.channels_last, old.batch_size) == ("fp32", False, 8)   # fp32: 15 clips fit
    busy = DeviceInfo("cuda", "A100", (8, 0), 40_000, 100)      # almost no free memory: still one clip
    assert choose_defaults(busy, clip_elements=clip, conv3d=True).batch_size == 1
    huge = DeviceInfo("cuda", "B200", (10, 0), 180_000, 180_000)
    assert choose_defaults(huge, clip_elements=3 * 8 * 32 * 32, conv3d=True).batch_size == 256   # capped
    cpu = choose_defaults(DeviceInfo("cpu"), clip_elements=clip, conv3d=True)
    assert (cpu.batch_size, cpu.precision, cpu.channels_last) == (8, "fp32", False)
    given = choose_defaults(h100, clip_elements=clip, conv3d=True, batch_size=12, precision="fp32",
                            channels_last=False)
    assert (given.batch_size, given.precision, given.channels_last, given.chosen) == (12, "fp32", False, ())
    assert given.params()["defaults_chosen"] == "none"


def test_the_chosen_defaults_train_the_model_and_are_logged(lake):
    """Unset: chosen for the CPU (batch 8, no channels-last); given (bf16 autocast): kept."""
    cfg = tiny_deep_config("naive_3dcnn", epochs=1, batch_size=None, precision="bf16")
    out = video_cv(lake, get_model_spec("naive_3dcnn"), cfg)
    assert out.params["batch_size"] == 8 and out.params["channels_last"] is False       # the CPU's
    assert out.params["precision"] == "bf16"                                            # as given
    assert out.params["defaults_chosen"] == out.tags["fvc.defaults_chosen"] == "batch_size,channels_last"
    assert np.isfinite(out.predictions["prob_fake"].to_numpy()).all()
