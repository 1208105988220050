"""Part 2's video families (TimeSformer, ViViT, I3D, X3D, SlowFast, MViT): tiny CPU checks.

Every model registered by ``fvcflow.models.video_transformers`` and ``video_pytorchvideo`` is
built offline at a tiny size (the constructors' keywords), runs forward and backward on a
``2 x 3 x T x 32..64`` clip and overfits a separable batch of 8 clips; local checkpoints in the
pytorchvideo and Hugging Face layouts load into them.
"""

from __future__ import annotations

import doctest
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fvcflow.errors import FvcError
from fvcflow.models import get_model_spec, list_models
from fvcflow.models import video_pytorchvideo as ptv
from fvcflow.models import video_transformers as vt
from fvcflow.models.torch_common import ClipSpec, VideoClassifier

#: constructor keywords that make each family tiny; a new family must add a line here
TINY = {
    "timesformer_base": dict(hidden_size=16, layers=1, heads=2, patch_size=16, image_size=32, frames=4),
    "vivit_b_fe": dict(hidden_size=16, spatial_layers=1, temporal_layers=1, heads=2, patch_size=16,
                       image_size=32, frames=4),
    "i3d_r50": dict(width=8),
    "x3d_xs": dict(width_factor=0.5, depth_factor=0.5, head_dim=32),
    "x3d_s": dict(width_factor=0.5, depth_factor=0.5, head_dim=32),
    "slowfast_r50": dict(width=8),
    "slowfast_r50_attn": dict(width=8, dim=16, heads=2),
    "mvit_b_16x4": dict(frames=4, size=32, depth=2, stages=(1,), embed_dim=16, kv_stride=2),
}
MODULES = (vt.__name__, ptv.__name__)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (the machine is shared); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_every_family_has_a_tiny_size():
    ours = {n for n in list_models(kind="torch_video") if get_model_spec(n).constructor.__module__ in MODULES}
    assert ours == set(TINY)
    for name in ours:
        spec = get_model_spec(name)
        assert spec.mlflow_flavor == "pytorch" and isinstance(spec.extra["clip"], ClipSpec)


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    pos, neg = scores[y == 1], scores[y == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


@pytest.mark.parametrize("name", sorted(TINY))
def test_family_builds_offline_runs_and_overfits(name, no_network):
    model = get_model_spec(name).constructor(seed=0, **TINY[name])
    assert isinstance(model, VideoClassifier)

    x = torch.randn(2, 3, 4, 32, 48)  # not square, not the tiny config's frames for every model
    logits = model(x)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    assert model.features(x).shape == (2, model.dim)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads[:3])  # the gradient reaches the first layers

    gen = torch.Generator().manual_seed(1)
    y = torch.tensor([0, 1] * 4)
    clips = torch.randn(8, 3, 4, 32, 32, generator=gen) * 0.5 + y.view(-1, 1, 1, 1, 1).float()
    model.zero_grad()
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optim.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(clips), y.float())
        loss.backward()
        optim.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        scores = model(clips).numpy()
    assert losses[-1] < 0.5 * losses[0]
    assert _auc(scores, y.numpy()) == 1.0


def test_same_seed_same_weights_other_seed_others():
    a, b = ptv.i3d_r50(seed=3, width=8), ptv.i3d_r50(seed=3, width=8)
    c = ptv.i3d_r50(seed=4, width=8)
    wa, wb, wc = (next(m.net.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_slowfast_pathways_take_every_alpha_th_frame():
    clip = torch.arange(7, dtype=torch.float32).view(1, 1, 7, 1, 1).expand(2, 3, 7, 4, 4)
    slow, fast = ptv.slowfast_pathways(clip, alpha=3)
    assert torch.equal(fast, clip)
    assert slow[0, 0, :, 0, 0].tolist() == [0.0, 3.0, 6.0]
    one = ptv.slowfast_pathways(clip[:, :, :1], alpha=4)[0]
    assert one.shape[2] == 1
    with pytest.raises(ValueError, match="alpha"):
        ptv.slowfast_pathways(clip, alpha=0)


def test_pytorchvideo_checkpoint_loads(tmp_path):
    source = ptv.slowfast_r50(seed=1, width=8).eval()
    state = {k: v for k, v in source.net.state_dict().items()}
    state["blocks.6.proj.weight"] = torch.zeros(400, 80)  # the model zoo's Kinetics classifier
    torch.save({"model_state": state, "epoch": 196}, tmp_path / "SLOWFAST_8x8_R50.pyth")
    target = ptv.slowfast_r50(seed=2, width=8, weights=tmp_path / "SLOWFAST_8x8_R50.pyth").eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(source.features(x), target.features(x))


def test_hugging_face_checkpoint_loads_from_its_directory(tmp_path):
    source = vt.timesformer_base(seed=1, **TINY["timesformer_base"]).eval()
    # the layout of TimesformerForVideoClassification's model.safetensors
    state = {f"timesformer.{k}": v.contiguous() for k, v in source.encoder.state_dict().items()}
    state["classifier.weight"] = torch.zeros(400, 16)
    (tmp_path / "hf").mkdir()
    save_file(state, tmp_path / "hf" / "model.safetensors")
    target = vt.timesformer_base(seed=2, weights=tmp_path / "hf", **TINY["timesformer_base"]).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(source.features(x), target.features(x))


def test_weights_path_that_is_not_there_is_a_clear_error(tmp_path):
    with pytest.raises(FvcError, match="weights file not found"):
        ptv.x3d_xs(weights=tmp_path / "X3D_XS.pyth", **TINY["x3d_xs"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FvcError, match="empty: weights file not found"):
        vt.vivit_b_fe(weights=tmp_path / "empty", **TINY["vivit_b_fe"])


@pytest.mark.parametrize("module", [vt, ptv])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and not result.failed
