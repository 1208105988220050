"""Part 2's video families (TimeSformer, ViViT, I3D, X3D, SlowFast, MViT, two-stream I3D).

Building, forward/backward and overfitting at the registered tiny size is the registry-driven
test's (tests/test_deep_models.py); here: each family registers a tiny size, the fixed-size
transformers follow the clip, the SlowFast pathways, seeding, and local checkpoints in the
pytorchvideo and Hugging Face layouts.
"""

from __future__ import annotations

import doctest

import pytest
import torch
from safetensors.torch import save_file

from fvcflow.errors import FvcError
from fvcflow.models import get_model_spec, list_models
from fvcflow.models import video_pytorchvideo as ptv
from fvcflow.models import video_transformers as vt
from fvcflow.models.torch_common import ClipSpec, tiny_model

MODULES = (vt.__name__, ptv.__name__)
OURS = sorted(n for n in list_models(kind="torch_video")
              if get_model_spec(n).constructor.__module__ in MODULES)


def tiny(name: str) -> dict:
    return dict(get_model_spec(name).extra["tiny"]["params"])


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_every_family_registers_a_tiny_size():
    # the registry-driven test (tests/test_deep_models.py) builds, trains and overfits each at it
    assert set(OURS) >= {"timesformer_base", "vivit_b_fe", "i3d_r50", "x3d_xs", "x3d_s", "slowfast_r50",
                         "slowfast_r50_attn", "mvit_b_16x4", "two_stream_i3d"}
    for name in OURS:
        spec = get_model_spec(name)
        assert spec.mlflow_flavor == "pytorch" and isinstance(spec.extra["clip"], ClipSpec)
        assert spec.extra["tiny"]["params"], f"{name} has no tiny constructor keywords"


@pytest.mark.parametrize("name", ["timesformer_base", "vivit_b_fe", "mvit_b_16x4"])
def test_fixed_size_models_size_their_tables_to_the_clip_and_resize_other_clips(name):
    model, clip = tiny_model(name)
    assert clip.frames == 4 and clip.size == 32
    x = torch.randn(2, 3, 4, 32, 32)
    assert model(x).shape == (2,)
    assert model(torch.randn(2, 3, 6, 40, 48)).shape == (2,)     # resized to the tables' shape
    assert vt.fit_clip(x, 4, 32) is x


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
    clip = ClipSpec(frames=4, size=32)
    source = vt.timesformer_base(seed=1, clip=clip, **tiny("timesformer_base")).eval()
    # the layout of TimesformerForVideoClassification's model.safetensors
    state = {f"timesformer.{k}": v.contiguous() for k, v in source.encoder.state_dict().items()}
    state["classifier.weight"] = torch.zeros(400, 16)
    (tmp_path / "hf").mkdir()
    save_file(state, tmp_path / "hf" / "model.safetensors")
    target = vt.timesformer_base(seed=2, weights=tmp_path / "hf", clip=clip,
                                 **tiny("timesformer_base")).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(source.features(x), target.features(x))


def test_weights_path_that_is_not_there_is_a_clear_error(tmp_path):
    with pytest.raises(FvcError, match="weights file not found"):
        ptv.x3d_xs(weights=tmp_path / "X3D_XS.pyth", **tiny("x3d_xs"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FvcError, match="empty: weights file not found"):
        vt.vivit_b_fe(weights=tmp_path / "empty", **tiny("vivit_b_fe"))


@pytest.mark.parametrize("module", [vt, ptv])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and not result.failed


def test_local_weights_report_what_loaded_with_a_prefix_and_a_foreign_head(tmp_path, caplog):
    """A checkpoint saved from a wrapper (every key under ``net.``, a DataParallel ``module.``),
    with a 400-class head and one tensor the model lacks: every shared tensor loads, the head is
    left at its initial values, and the report names each group as the file spells it."""
    import logging

    from torch import nn

    from fvcflow.models.torch_common import load_local_weights

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.Flatten(), nn.Linear(4, 1))

    source, target = net(), net()
    torch.manual_seed(0)
    for p in source.parameters():
        nn.init.normal_(p)
    state = {f"module.net.{k}": v for k, v in source.state_dict().items()}
    state["module.net.3.weight"] = torch.zeros(400, 4)          # the Kinetics head: another shape
    state["module.net.extra.weight"] = torch.zeros(2)             # not in the model
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    head_before = target[3].weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="fvcflow.models"):
        report = load_local_weights(target, tmp_path / "wrapped.pt", prefix="net.")
    shared = [k for k in source.state_dict() if k != "3.weight"]
    for k in shared:
        assert torch.equal(target.state_dict()[k], source.state_dict()[k]), k
    assert torch.equal(target[3].weight, head_before)
    assert report == {"missing": ["3.weight"], "unexpected": ["module.net.extra.weight"],
                      "mismatched": ["3.weight"]}
    own = len(target.state_dict())
    assert f"loaded {len(shared)} of the model's {own} tensors (1 left at their initial values, 1 of " \
           "them of another shape in the file; 1 tensors of the file unused)" in caplog.text
