"""Pretrained weights by name: each library's own cache, seeded here under the exact file name the
library resolves, with sockets blocked; preprocessing from the weights; `fvc weights`."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub.constants as hf_constants
import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from fvcflow.cli import main as fvc
from fvcflow.errors import FvcError
from fvcflow.models import get_model_spec
from fvcflow.models.torch_common import build_video_model, clip_spec
from fvcflow.models.weights import WeightsNotCached, listing, resolve
from fvcflow.training import train_model
from tests.deep_lake import tiny_deep_config, video_cv, write_deep_lake

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TV_FILE = "r2plus1d_18-91a641e6.pth"      # the file R2Plus1D_18_Weights.KINETICS400_V1 resolves
TINY = {"frames": 4, "clips": 2, "size": 32}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("weights") / "fvc-data", n_groups=6)


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty library caches: TORCH_HOME, the Hugging Face hub cache (offline) and open_clip's."""
    torch_home, hf_home = tmp_path / "torch", tmp_path / "hf"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))          # open_clip's ~/.cache/clip
    return {"torch": torch_home, "hf": hf_home / "hub"}


def _refuse(*args, **kwargs):
    raise AssertionError("a weight tried to open a network connection")


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)


def seed_hf(hub: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face cache snapshot as huggingface_hub writes it: blobs named by SHA-256,
    snapshots/<commit>/<file> links to them, refs/main naming the commit."""
    root = hub / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snap = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (root / "blobs" / sha).write_bytes(data)
        os.symlink(f"../../blobs/{sha}", snap / name)
    return snap


def safetensors_bytes(state: dict[str, torch.Tensor], tmp: Path) -> bytes:
    path = tmp / "x.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path.read_bytes()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seed_r2plus1d(caches) -> tuple[Path, dict[str, torch.Tensor]]:
    from torchvision.models.video import r2plus1d_18

    torch.manual_seed(3)
    state = r2plus1d_18(weights=None).state_dict()        # the published file's keys and shapes
    path = caches["torch"] / "hub" / "checkpoints" / TV_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path, state


# -- torchvision --------------------------------------------------------------------------------
def test_the_torchvision_file_name_is_the_one_the_library_resolves(caches, no_network):
    from torchvision.models.video import R2Plus1D_18_Weights

    path, state = seed_r2plus1d(caches)
    # the library's own resolution finds our file with sockets blocked
    got = R2Plus1D_18_Weights.KINETICS400_V1.get_state_dict(progress=False)
    assert torch.equal(got["layer1.0.conv1.0.0.weight"], state["layer1.0.conv1.0.0.weight"])
    model = build_video_model("r2plus1d_18", weights="torchvision:KINETICS400_V1")
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)          # every backbone tensor
    assert resolve("r2plus1d_18", "torchvision:KINETICS400_V1").sha256 == sha256(path)


@pytest.mark.slow
def test_torchvision_weight_by_name_trains_is_tracked_and_predicts_in_a_fresh_process(
        lake, caches, no_network, tmp_path):
    from torchvision.models.video import S3D_Weights, s3d

    torch.manual_seed(3)
    state = s3d(weights=None).state_dict()
    path = caches["torch"] / "hub" / "checkpoints" / "s3d-d76dad2f.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert torch.equal(S3D_Weights.KINETICS400_V1.get_state_dict()["features.0.0.0.weight"],
                       state["features.0.0.0.weight"])
    cfg = tiny_deep_config("s3d", epochs=1, weights={"s3d": "torchvision:KINETICS400_V1"})
    cfg.deep.clip["s3d"] = {**TINY, "frames": 8}
    result = train_model(lake, "s3d", cfg)
    tags = MlflowClient(lake.mlflow_uri).get_run(result.run_id).data.tags
    assert tags["fvc.weights"] == "torchvision:KINETICS400_V1"
    assert tags["fvc.weights_library"] == "torchvision"
    assert tags["fvc.weights_sha256"] == sha256(path) and tags["fvc.weights_path"] == str(path)
    assert json.loads(tags["fvc.clip"])["mean"] == list(S3D_Weights.KINETICS400_V1.transforms().mean)
    # a fresh process, with an empty torch cache and no network, loads and scores it
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    script = textwrap.dedent(f"""
        import socket, mlflow, numpy as np
        def refuse(*a, **k): raise AssertionError("network")
        socket.socket.connect = refuse
        mlflow.set_tracking_uri({lake.mlflow_uri!r})
        model = mlflow.pyfunc.load_model({result.model_uri!r})
        clips = np.load({str(tmp_path / "x.npy")!r})   # clip batches: the python model's own input
        np.save({str(tmp_path / "p.npy")!r}, model.unwrap_python_model().predict(None, clips))
    """)
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    expected = torch.sigmoid(result.model.clip_logits(x)).numpy()
    assert np.allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-6)


def test_a_named_weight_not_cached_stops_training_in_one_line_before_any_work(
        lake, caches, no_network, tmp_path, capsys):
    config = tmp_path / "fvc.toml"
    config.write_text('[train.deep.weights]\nr2plus1d_18 = "torchvision:KINETICS400_V1"\n')
    before = {p: p.stat().st_mtime_ns for p in lake.root.rglob("*") if p.is_file()}
    runs_before = _run_count(lake)
    rc = fvc(["--home", str(lake.root), "--config", str(config), "train", "--models", "r2plus1d_18"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert "`fvc weights pull r2plus1d_18=torchvision:KINETICS400_V1`" in lines[0]
    assert TV_FILE in lines[0]
    after = {p: p.stat().st_mtime_ns for p in lake.root.rglob("*") if p.is_file() and "logs" not in p.parts}
    assert {p: t for p, t in after.items()} == {p: t for p, t in before.items() if p in after}
    assert set(after) <= set(before)                    # no clip, split, checkpoint or run written
    assert _run_count(lake) == runs_before


def _run_count(lake) -> int:
    if not (lake.root / "mlflow.db").exists():
        return 0
    client = MlflowClient(lake.mlflow_uri)
    return sum(len(client.search_runs([e.experiment_id], max_results=1000))
               for e in client.search_experiments())


@pytest.mark.parametrize("target, host", [
    ("r2plus1d_18=torchvision:KINETICS400_V1", "download.pytorch.org"),
    ("timesformer_base=hf:facebook/timesformer-base-finetuned-k400", "huggingface.co"),
    ("i3d_r50=pytorchvideo:i3d_r50", "dl.fbaipublicfiles.com"),
    ("autoencoder=hf:stabilityai/sd-vae-ft-mse", "huggingface.co"),      # stage 3's VAE (scale.weights)
])
def test_pull_without_network_names_the_host_in_one_line(caches, monkeypatch, tmp_path, capsys, target, host):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)                   # no proxy: the host itself is tried

    def unreachable(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", unreachable)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")))
    rc = fvc(["--home", str(tmp_path / "home"), "weights", "pull", target])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and line.startswith("error:")]
    assert rc == 2 and lines == [f"error: fvc weights pull {target}: cannot reach {host} (Network is "
                                 "unreachable); connect to the network and rerun"], err
    assert "Traceback" not in err
    assert not list(caches["torch"].rglob("*.pth")) and not list(caches["torch"].rglob("*.pyth"))
    assert not [p for p in caches["hf"].rglob("*") if p.is_file()]     # nothing half-downloaded


def test_weights_list_shows_cache_path_size_and_sha256(caches, no_network, tmp_path, capsys):
    path, _ = seed_r2plus1d(caches)
    home = str(tmp_path / "home")
    assert fvc(["--home", home, "weights", "list", "--json", "r2plus1d_18", "swin3d_t"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {"model": "r2plus1d_18", "weights": "torchvision:KINETICS400_V1", "cached": True, "path": str(path),
         "sha256": sha256(path), "bytes": path.stat().st_size},
        {"model": "swin3d_t", "weights": "torchvision:KINETICS400_V1", "cached": False,
         "path": str(caches["torch"] / "hub" / "checkpoints" / "swin3d_t-7615ae03.pth"), "sha256": None,
         "bytes": None}]
    assert fvc(["--home", str(tmp_path / "home"), "weights", "list", "r2plus1d_18"]) == 0
    out = capsys.readouterr().out
    assert "cached" in out and sha256(path)[:16] in out and "1 named weights, 1 cached" in out
    rows = listing(["clip_ln", "r2plus1d_18"])
    assert {"model": "clip_ln", "weights": "open_clip:openai"} in [
        {"model": r["model"], "weights": r["weights"]} for r in rows]
    assert all(not r["cached"] for r in rows if r["model"] != "r2plus1d_18")


# -- timm ---------------------------------------------------------------------------------------
def seed_timm_vit(caches, tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """timm's ViT-S/16 augreg file (one block: the keys and shapes of the published one, at 224 px)."""
    import timm

    torch.manual_seed(4)
    net = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    snap = seed_hf(caches["hf"], "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
                   {"model.safetensors": safetensors_bytes(state, tmp_path)})
    return snap / "model.safetensors", state


def test_timm_weight_resolves_through_its_pretrained_config_and_sets_the_preprocessing(
        caches, no_network, tmp_path):
    path, state = seed_timm_vit(caches, tmp_path)
    value = "timm:augreg_in21k_ft_in1k"
    r = resolve("vit_small_frames", value)
    assert r.path == path and r.sha256 == sha256(path)
    clip = clip_spec("vit_small_frames", {"frames": 4, "clips": 2, "size": 32}, weights=value)
    assert clip.mean == (0.5, 0.5, 0.5) and clip.std == (0.5, 0.5, 0.5)     # augreg: not ImageNet's
    assert clip_spec("vit_small_frames", weights=value).size == 224
    model = build_video_model("vit_small_frames", clip=clip, weights=value, depth=1)
    own = model.backbone.state_dict()
    assert torch.equal(own["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert own["pos_embed"].shape == (1, 5, 384)                          # resampled by timm's filter
    assert torch.equal(own["pos_embed"][:, 0], state["pos_embed"][:, 0])


def test_a_checkpoint_that_does_not_fit_lists_the_mismatched_tensors(caches, no_network, tmp_path):
    seed_timm_vit(caches, tmp_path)
    clip = clip_spec("vit_small_frames", TINY)
    with pytest.raises(FvcError) as info:       # the tiny ViT (width 64) cannot take ViT-S tensors
        build_video_model("vit_small_frames", clip=clip, weights="timm:augreg_in21k_ft_in1k",
                          embed_dim=64, depth=1, heads=2, patch=8)
    msg = str(info.value)
    assert "weights timm:augreg_in21k_ft_in1k of vit_small_frames" in msg
    assert "blocks.0.attn.qkv.weight (1152, 384) in the file, (192, 64) in the model" in msg
    assert "more (another architecture or size" in msg and "\n" not in msg


# -- Hugging Face -------------------------------------------------------------------------------
def test_hf_snapshot_gives_weights_frames_size_mean_and_std(caches, no_network, tmp_path):
    repo = "facebook/timesformer-base-finetuned-k400"
    tiny = get_model_spec("timesformer_base").extra["tiny"]["params"]
    torch.manual_seed(5)
    source = build_video_model("timesformer_base", clip=clip_spec("timesformer_base", TINY), seed=7, **tiny)
    state = {f"timesformer.{k}": v for k, v in source.encoder.state_dict().items()}
    state["classifier.weight"] = torch.randn(400, tiny["hidden_size"])
    snap = seed_hf(caches["hf"], repo, {
        "config.json": json.dumps({"num_frames": 8, "image_size": 224}).encode(),
        "preprocessor_config.json": json.dumps({"image_mean": [0.45] * 3, "image_std": [0.225] * 3,
                                                "crop_size": {"height": 224, "width": 224}}).encode(),
        "model.safetensors": safetensors_bytes(state, tmp_path)})
    value = f"hf:{repo}"
    full = clip_spec("timesformer_base", weights=value)
    assert (full.frames, full.size, full.mean, full.std) == (8, 224, (0.45,) * 3, (0.225,) * 3)
    clip = clip_spec("timesformer_base", TINY, weights=value)   # the user's frames and size win
    assert (clip.frames, clip.size, clip.mean) == (4, 32, (0.45,) * 3)
    model = build_video_model("timesformer_base", clip=clip, weights=value, **tiny)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, state[f"timesformer.{k}"]), k
    assert resolve("timesformer_base", value).path == snap / "model.safetensors"


# -- PyTorchVideo -------------------------------------------------------------------------------
def test_pytorchvideo_zoo_checkpoint_from_the_torch_hub_cache(caches, no_network, lake):
    tiny = get_model_spec("i3d_r50").extra["tiny"]["params"]
    source = build_video_model("i3d_r50", clip=clip_spec("i3d_r50", TINY), seed=11, **tiny)
    state = source.net.state_dict()
    path = caches["torch"] / "hub" / "checkpoints" / "I3D_8x8_R50.pyth"   # pytorchvideo's hub file name
    path.parent.mkdir(parents=True)
    torch.save({"model_state": state, "epoch": 196}, path)
    value = "pytorchvideo:i3d_r50"
    assert (clip_spec("i3d_r50", weights=value).frames, clip_spec("i3d_r50", weights=value).stride) == (8, 8)
    model = build_video_model("i3d_r50", clip=clip_spec("i3d_r50", TINY), weights=value, seed=0, **tiny)
    assert all(torch.equal(v, state[k]) for k, v in model.net.state_dict().items())
    cfg = tiny_deep_config("i3d_r50", epochs=1, weights={"i3d_r50": value})
    cfg.params["i3d_r50"] = dict(tiny)
    cv = video_cv(lake, get_model_spec("i3d_r50"), cfg)
    assert cv.tags["fvc.weights"] == value and cv.tags["fvc.weights_sha256"] == sha256(path)
    assert cv.params["weights"] == value


# -- open_clip ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_open_clip_weight_loads_the_visual_tower_with_its_activation_and_statistics(
        lake, caches, no_network, tmp_path):
    from fvcflow.models.video_clip import OPENAI_MEAN, clip_tower

    torch.manual_seed(6)
    tower, _ = clip_tower("ViT-B-16", 224, layers=1, quick_gelu=True)     # OpenAI's: QuickGELU
    state = {f"visual.{k}": v.clone() for k, v in tower.state_dict().items()}
    state["token_embedding.weight"] = torch.randn(10, 8)                   # the text tower: not ours
    seed_hf(caches["hf"], "timm/vit_base_patch16_clip_224.openai",
            {"open_clip_model.safetensors": safetensors_bytes(state, tmp_path)})
    value = "open_clip:openai"
    cfg = tiny_deep_config("clip_ln", epochs=1, weights={"clip_ln": value})
    cfg.params["clip_ln"] = {"layers": 1}
    cv = video_cv(lake, get_model_spec("clip_ln"), cfg)
    assert cv.model.params == {"quick_gelu": True, "layers": 1}         # kept for predict's rebuild
    assert cv.model.clip.mean == OPENAI_MEAN and cv.tags["fvc.weights_library"] == "open_clip"
    built = build_video_model("clip_ln", clip=cv.model.clip, weights=value, layers=1)
    conv = built.backbone.state_dict()["conv1.weight"]
    assert torch.equal(conv, state["visual.conv1.weight"])
    pos = built.backbone.state_dict()["positional_embedding"]
    assert pos.shape == (5, 768) and torch.equal(pos[0], state["visual.positional_embedding"][0])
    from fvcflow.deep.export import save_trained

    folder = save_trained(cv.model, tmp_path / "saved")
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import torch
        from fvcflow.deep.export import load_trained
        m = load_trained({str(folder)!r})
        torch.save(m.clip_logits(torch.load({str(tmp_path / "x.pt")!r})), {str(tmp_path / "y.pt")!r})
    """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert torch.allclose(torch.load(tmp_path / "y.pt"), cv.model.clip_logits(x), atol=1e-5)


def test_weights_of_another_library_or_an_unknown_name_are_one_line_errors(caches):
    with pytest.raises(FvcError, match="r2plus1d_18 takes torchvision: weights"):
        resolve("r2plus1d_18", "timm:augreg_in21k")
    with pytest.raises(FvcError, match="not a member of R2Plus1D_18_Weights .known: KINETICS400_V1"):
        resolve("r2plus1d_18", "torchvision:IMAGENET")
    with pytest.raises(FvcError, match="not a pretrained tag of ViT-B-16"):
        resolve("clip_ln", "open_clip:nope")
    with pytest.raises(WeightsNotCached, match="fvc weights pull clip_ln=open_clip:openai"):
        resolve("clip_ln", "open_clip:openai")
    with pytest.raises(FvcError, match="naive_3dcnn.* has no named weights"):
        resolve("naive_3dcnn", "torchvision:KINETICS400_V1")
    mlflow.set_tracking_uri(None)


def test_fvc_run_with_the_train_stage_checks_named_weights_before_any_stage(
        caches, no_network, tmp_path, capsys):
    config = tmp_path / "fvc.toml"
    config.write_text('[train]\nmodels = "*,clip_ln"\n[train.deep.weights]\nclip_ln = "open_clip:openai"\n')
    home = tmp_path / "home"
    rc = fvc(["--home", str(home), "--config", str(config), "run", "--stages", "train"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "`fvc weights pull clip_ln=open_clip:openai`" in lines[0]
    assert not (home / "prefect").exists() and not (home / "stage5").exists()   # no flow, no stage started
