"""Stage 3 through a pretrained VAE (``scale.method = "autoencoder"``): a tiny diffusers AutoencoderKL
with random weights, saved as a local folder and as an offline Hugging Face snapshot."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import huggingface_hub.constants as hf_constants
import numpy as np
import polars as pl
import pytest
import torch
from diffusers import AutoencoderKL

from fvcflow.cli import main as fvc
from fvcflow.config import Settings
from fvcflow.detector.predict import scoring_options
from fvcflow.models.weights import AUTOENCODER, WeightsNotCached, listing, resolve_autoencoder
from fvcflow.stages import runner
from fvcflow.stages.autoencoder import Autoencoder, load_vae
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.stages.scale import letterbox_frame, letterbox_geometry
from fvcflow.stages.specs import scale_as
from fvcflow.video import probe, read_rgb
from tests.reliability_media import make_corpus

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
            latent_channels=4, norm_num_groups=4, sample_size=32)


def save_vae(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    AutoencoderKL(**TINY).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    return save_vae(tmp_path_factory.mktemp("vae") / "tiny-vae", seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ae") / "corpus"
    make_corpus(root, bases=2, copies=1, frames=6, size=(96, 64))
    return root


def settings_for(corpus: Path, home: Path, **scale) -> Settings:
    return Settings(home=home, workers=1, scale={"size": 48, **scale},
                    corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"}).resolved()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty, offline Hugging Face hub cache."""
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return hub


def seed_snapshot(hub: Path, repo: str, folder: Path) -> Path:
    """``folder``'s files as huggingface_hub caches a repository: blobs by SHA-256, links in a snapshot."""
    root = hub / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snap = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for f in folder.iterdir():
        data = f.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        (root / "blobs" / sha).write_bytes(data)
        os.symlink(f"../../blobs/{sha}", snap / f.name)
    return snap


def test_stage3_autoencoder_writes_the_letterbox_geometry_caches_and_feeds_stage4(corpus, vae_dir, tmp_path):
    s = settings_for(corpus, tmp_path / "home", method="autoencoder", weights=str(vae_dir), tile=32)
    ingest_corpus(s)
    report = runner.run_local("scale", s)
    table = pl.read_parquet(s.lake().stage3)
    assert (report.done, report.failed, table.height) == (2, 0, 2)
    new_w, new_h, x0, y0 = letterbox_geometry(96, 64, 48)           # 48 x 32 at (0, 8)
    for row in table.to_dicts():
        info = probe(row["path"])
        assert (info.width, info.height, info.n_frames) == (48, 48, 6) == (48, 48, row["n_frames"])
        assert row["is_downscaled"] and not row["is_upscaled"]
        frames, _ = read_rgb(row["path"], list(range(6)))
        src, _ = read_rgb(row["src_path"], list(range(6)))
        bars = np.concatenate([frames[:, :y0], frames[:, y0 + new_h:]], axis=1)
        assert bars.max() <= 16                                       # black bars (H.264 rounding)
        picture = frames[:, y0:y0 + new_h].astype(float)
        assert picture.std() > 10                                     # the VAE's picture fills the rest
        letterboxed = np.stack([letterbox_frame(f, 48) for f in src])
        assert np.abs(frames.astype(float) - letterboxed).mean() > 2  # not the bilinear letterbox
    assert runner.plan("scale", s).todo == []                         # cached on rerun
    # other weights (same file names, same config): every key changes
    other = save_vae(tmp_path / "other-vae", seed=1)
    s2 = settings_for(corpus, s.home, method="autoencoder", weights=str(other), tile=32)
    again = runner.plan("scale", s2)
    assert len(again.todo) == 2
    assert not {j.key for j in again.jobs} & {j.key for j in runner.plan("scale", s).jobs}
    assert len(runner.plan("scale", settings_for(corpus, s.home)).todo) == 2      # nor the letterbox's
    # stage 4 runs on the autoencoder's videos
    features = runner.run_local("scaled_features", s)
    stage4 = pl.read_parquet(s.lake().stage4)
    assert (features.done, features.failed, stage4.height) == (2, 0, 2)
    s4 = [c for c in stage4.columns if c.startswith("s4_")]
    assert s4 and stage4.select(pl.col(s4).is_not_null().all()).row(0) == tuple([True] * len(s4))
    # a new video is scaled as stage 3 scaled the training videos: predict, scan, the model server
    # and the app pass the same settings (scoring_options) to the same function
    first = table.row(0, named=True)
    scale_as(first["src_path"], tmp_path / "new.mp4", scoring_options(s)["scale"])
    new, _ = read_rgb(tmp_path / "new.mp4", list(range(6)))
    staged, _ = read_rgb(first["path"], list(range(6)))
    assert np.abs(new.astype(int) - staged).max() <= 2
    letterbox = scoring_options(settings_for(corpus, s.home))["scale"]
    scale_as(first["src_path"], tmp_path / "plain.mp4", letterbox)
    plain, _ = read_rgb(tmp_path / "plain.mp4", list(range(6)))
    assert np.abs(plain.astype(float) - staged).mean() > 2          # the letterbox's is another picture


def test_tiled_gives_the_untiled_output_within_tolerance(vae_dir):
    vae = load_vae(str(vae_dir), "tiny", "cpu")
    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3)).astype(np.uint8)
    frame = cv2.GaussianBlur(noise, (0, 0), 1.5)
    whole = Autoencoder(vae, 64, tile=None).frame(frame).astype(float)
    tiled = Autoencoder(vae, 64, tile=64).frame(frame).astype(float)  # 2 x 3 overlapping tiles
    diff = np.abs(whole - tiled)
    assert diff.max() > 0                                             # the tiled path ran
    assert diff.mean() < 3 and np.percentile(diff, 99) < 16           # GroupNorm statistics per tile
    assert np.abs(whole - letterbox_frame(frame, 64)).mean() > 10     # the scale of what a wrong tile gives


def test_a_named_vae_resolves_from_an_offline_snapshot_with_the_local_folders_identity(hf_cache, vae_dir):
    seed_snapshot(hf_cache, "tiny/vae", vae_dir)
    named, local = resolve_autoencoder("hf:tiny/vae"), resolve_autoencoder(str(vae_dir))
    assert named.library == "hf" and named.folder.parent.name == "snapshots"
    assert named.identity == local.identity                           # the same bytes: the same cache key
    assert isinstance(load_vae(str(named.folder), named.identity, "cpu"), AutoencoderKL)
    rows = {r["weights"]: r for r in listing([AUTOENCODER], autoencoder="hf:tiny/vae")}  # fvc weights list
    assert rows["hf:tiny/vae"]["cached"] and rows["hf:tiny/vae"]["sha256"] == named.sha256
    assert rows["hf:tiny/vae"]["bytes"] == (vae_dir / "diffusion_pytorch_model.safetensors").stat().st_size
    assert not rows["hf:stabilityai/sd-vae-ft-mse"]["cached"]


def test_without_weights_stage3_stops_at_plan_time_naming_the_pull_command(corpus, hf_cache, tmp_path,
                                                                            capsys):
    s = settings_for(corpus, tmp_path / "home", method="autoencoder")
    ingest_corpus(s)
    pull = "`fvc weights pull autoencoder=hf:stabilityai/sd-vae-ft-mse`"
    with pytest.raises(WeightsNotCached, match=pull):
        runner.plan("scale", s)
    assert not s.lake().stage3_videos.exists()
    config = tmp_path / "fvc.toml"
    config.write_text('[scale]\nmethod = "autoencoder"\n')
    home = tmp_path / "home2"
    rc = fvc(["--home", str(home), "--config", str(config), "run", "--stages", "scale"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and lines == [
        "error: setting 'scale.weights': hf:stabilityai/sd-vae-ft-mse is not in the hf cache "
        "(stabilityai/sd-vae-ft-mse/diffusion_pytorch_model.safetensors in the Hugging Face cache); run "
        f"{pull} first (stage 3 never downloads)"]
    assert not (home / "prefect").exists()                            # no flow started


def test_a_folder_that_is_not_a_vae_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match=r"holds no config.json"):
        resolve_autoencoder(str(tmp_path / "empty"))
    with pytest.raises(Exception, match=r"is not a folder"):
        resolve_autoencoder(str(tmp_path / "nope"))
