"""Every registered deep video model, driven by the registry: builds offline at its tiny size, runs
forward and backward on a small clip batch, and overfits a separable batch of 8 clips.

A model registered later (part 2's families) is covered without a change here: its tiny size comes
from its registration (``register_video_model(..., tiny=...)``).
"""

from __future__ import annotations

import socket

import pytest
import torch
from sklearn.metrics import roc_auc_score

from fvcflow.models import get_model_spec, list_models
from fvcflow.models.torch_common import VideoClassifier, tiny_model

DEEP = list_models(kind="torch_video")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails the test (nothing may be downloaded)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _clips(clip, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clips, half bright (label 1) and half dark, plus noise: trivially separable."""
    g = torch.Generator().manual_seed(seed)
    side = clip.size or 32
    h, w = (side, side) if clip.size else (32, 48)
    y = torch.tensor([i % 2 for i in range(n)], dtype=torch.float32)
    x = torch.randn(n, clip.n_channels, clip.frames, h, w, generator=g) * 0.3
    x = x + (y * 2 - 1).view(-1, 1, 1, 1, 1)
    return x, y


@pytest.mark.parametrize("name", DEEP)
def test_builds_offline_runs_forward_backward_and_overfits(name, no_network):
    spec = get_model_spec(name)
    assert spec.mlflow_flavor == "pytorch" and spec.input == "frames"
    model, clip = tiny_model(name, dropout=0.0)   # the registered tiny size (extra['tiny'])
    assert isinstance(model, VideoClassifier)
    x, y = _clips(clip, 8, seed=1)
    assert model.features(x[:2]).shape == (2, model.dim)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    losses, aucs = [], []
    for step in range(30):
        model.train()
        logits = model(x)
        assert logits.shape == (8,) and torch.isfinite(logits).all()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads)
            assert any(g.abs().sum() > 0 for g in grads)
        opt.step()
        losses.append(loss.item())
        aucs.append(roc_auc_score(y.numpy(), logits.detach().numpy()))
        if aucs[-1] == 1.0 and losses[-1] < 0.5 * losses[0]:
            break
    assert losses[-1] < 0.5 * losses[0], losses      # the loss falls ...
    assert aucs[-1] == 1.0, aucs                     # ... and the training clips are ranked perfectly
