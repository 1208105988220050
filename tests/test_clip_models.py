"""The CLIP family on open_clip towers: what each member trains, Effort's SVD split, and the members
trained, logged, loaded and scoring (every member also overfits 8 clips in test_deep_models.py)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from fvcflow.deep.export import load_trained, save_trained
from fvcflow.models import get_model_spec
from fvcflow.models.torch_common import build_video_model, clip_spec, tiny_model
from fvcflow.models.video_clip import SVDResidual, clip_tower, layer_norms, svd_targets, trainable
from fvcflow.store import read_parquet
from fvcflow.training import train_model
from tests.deep_lake import tiny_deep_config, video_cv, write_deep_lake

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = get_model_spec("clip_ln").extra["tiny"]["params"]     # width 32, 2 layers, 2 heads, patch 8
MEMBERS = ("clip_ln", "clip_svd", "clip_temporal")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a CLIP model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("clip") / "fvc-data", n_groups=6)


@pytest.mark.parametrize("backbone, width, layers, dim",
                         [("ViT-B-16", 768, 12, 512), ("ViT-L-14", 1024, 24, 768)])
def test_registered_backbones_build_offline_at_their_published_size(no_network, backbone, width, layers, dim):
    tower, out = clip_tower(backbone, 64)          # the published architecture, at a small input
    assert out == dim and tower.conv1.out_channels == width and len(tower.transformer.resblocks) == layers
    assert tower(torch.zeros(1, 3, 64, 64)).shape == (1, dim)


def test_clip_ln_trains_exactly_the_layer_norms_and_the_head(no_network):
    model, clip = tiny_model("clip_ln")
    width, layers, dim = TINY["width"], TINY["layers"], TINY["embed_dim"]
    # ln_pre, ln_1 and ln_2 of each block, ln_post: weight and bias of `width` each; head: dim + 1
    assert sum(trainable(model).values()) == (2 * layers + 2) * 2 * width + dim + 1 == 513
    norms = {id(p) for m in layer_norms(model.backbone) for p in m.parameters()}
    head = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == norms | head
    # a clip's logit is the mean of its frames' logits
    x = torch.randn(3, 3, clip.frames, 32, 32, generator=torch.Generator().manual_seed(0))
    model.eval()
    frames = torch.stack([model.head(model.frame_embeddings(x[:, :, t:t + 1])[:, 0]).squeeze(-1)
                          for t in range(clip.frames)], 1)
    assert torch.allclose(model(x), frames.mean(1), atol=1e-5)
    assert torch.allclose(model(x), model.head(model.features(x)).squeeze(-1), atol=1e-5)


def test_clip_svd_reproduces_each_weight_at_initialisation_and_trains_only_the_residual(no_network):
    torch.manual_seed(0)
    plain, _ = clip_tower("ViT-B-16", 32, **{k: TINY[k] for k in ("width", "layers", "heads", "patch")},
                          embed_dim=TINY["embed_dim"])
    clip = clip_spec("clip_svd", {"size": 32, "frames": 4})
    model = build_video_model("clip_svd", clip=clip, seed=0, **TINY)
    original = dict(plain.named_parameters())
    targets = svd_targets(model.backbone)
    assert len(targets) == 4 * TINY["layers"]          # attention in/out projections, both MLP layers
    names = {id(m): n for n, m in model.backbone.named_modules()}
    for module, pname in targets:
        w = getattr(module, pname)                     # principal + residual
        assert torch.allclose(w, original[f"{names[id(module)]}.{pname}"], atol=1e-6, rtol=0)
    residuals = [m for m in model.backbone.modules() if isinstance(m, SVDResidual)]
    assert all(r.s_residual.numel() == 1 for r in residuals)          # Effort: a rank-1 residual
    train = trainable(model)
    assert train and all(n.startswith("head.") or n.rsplit(".", 1)[-1] in ("u_residual", "s_residual",
                                                                         "v_residual") for n in train)
    assert float(model.regularizer().detach()) < 1e-8           # orthonormal bases at initialisation
    # a step moves the residual only: every frozen tensor, the principal parts included, is unchanged
    frozen = {n: t.clone() for n, t in model.state_dict().items()
              if not any(n.endswith(s) for s in ("_residual",)) and not n.startswith("head.")}
    before = [r.u_residual.detach().clone() for r in residuals]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 3, 4, 32, 32)
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), torch.tensor([0., 1., 0., 1.]))
    (loss + model.regularizer()).backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[n], t) for n, t in frozen.items())
    assert any(not torch.equal(r.u_residual, b) for r, b in zip(residuals, before))


def test_clip_temporal_keeps_its_tower_frozen_and_in_eval_mode(no_network):
    model, clip = tiny_model("clip_temporal")
    model.train()
    assert not model.backbone.training and model.temporal.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    x = torch.randn(2, 3, clip.frames, 32, 32)
    model(x).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.pos.grad is not None and model.cls.grad is not None
    assert model(torch.randn(2, 3, 6, 32, 32)).shape == (2,)        # another clip length


@pytest.mark.parametrize("name", MEMBERS)
def test_each_member_trains_on_real_clips_saves_and_loads_to_the_same_scores(lake, name, tmp_path):
    cfg = tiny_deep_config(name, epochs=2, lr=3e-3)
    cfg.params[name] = dict(TINY)
    cv = video_cv(lake, get_model_spec(name), cfg)
    assert set(cv.predictions["video_id"]) == {f"demo-g{g}-{k}" for g in range(6) for k in ("real", "fake")}
    p = cv.predictions["prob_fake"].to_numpy()
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all() and np.unique(p).size > 1
    folder = save_trained(cv.model, tmp_path / name)
    again = load_trained(folder)
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(again.clip_logits(x), cv.model.clip_logits(x), atol=1e-5)
    assert again.params == TINY and again.clip == cv.model.clip


@pytest.mark.slow
def test_emb_xgb_clip_is_xgboost_on_frozen_clip_embeddings_tracked_in_mlflow(lake):
    cfg = tiny_deep_config("emb_xgb_clip")
    cfg.inner_folds = 2                                 # 6 groups: 2 folds of 2-3 groups each
    cfg.deep.clip["clip_ln"] = {"frames": 4, "clips": 2, "size": 32}
    cfg.params["clip_ln"] = dict(TINY)
    cfg.params["emb_xgb_clip"] = {"n_estimators": 20}
    result = train_model(lake, "emb_xgb_clip", cfg)
    tags = MlflowClient(lake.mlflow_uri).get_run(result.run_id).data.tags
    assert tags["fvc.backbone"] == "clip_ln" and tags["fvc.weights"] == "random"
    emb = read_parquet(tags["fvc.embeddings"])
    assert emb.height == 12 and len([c for c in emb.columns if c.startswith("emb_")]) == TINY["embed_dim"]
    pred = result.predictions
    assert set(pred["video_id"]) == {f"demo-g{g}-{k}" for g in range(6) for k in ("real", "fake")}
    assert np.isfinite(pred["prob_fake"].to_numpy()).all()
