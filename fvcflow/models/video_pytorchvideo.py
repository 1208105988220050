"""I3D, X3D, SlowFast (plain and with attention) and MViT from the ``pytorchvideo.models`` builders.

Every model here is built by a ``pytorchvideo.models`` builder (imported when a model is built;
``pytorchvideo.transforms`` is never imported: it breaks on current torchvision) with the
published configuration as defaults and keywords that shrink it for a CPU test (``width``,
``depth``, ``dim``, ...). The classification heads are replaced by adaptive pooling, so any clip
size works and ``features`` returns the backbone's pooled embedding. The module names inside
``net`` are the builder's, so a pytorchvideo model-zoo checkpoint (``*.pyth``, keys under
``model_state``) loads with :func:`fvcflow.models.torch_common.load_local_weights` (its 400-class
projection is reported unexpected); ``weights=None`` is random initialisation seeded by ``seed``.

- ``i3d_r50`` (seed 5o): pytorchvideo's I3D, the inflated ResNet-50 of its model zoo (5x7x7 stem,
  3x1x1 inflated bottlenecks), not the Inception-v1 I3D of Carreira and Zisserman.
- ``x3d_xs``, ``x3d_s`` (seed 5q): the same X3D network (``create_x3d``, width 2.0, depth 2.2,
  bottleneck 2.25); the two differ in input only, as in the X3D paper: 4 frames every 12th at
  160 px for XS, 13 frames every 6th at 160 px for S.
- ``slowfast_r50`` (seed 5r): SlowFast-R50 8x8 (alpha 4, beta 1/8); the pathways come from one
  sampled clip through :func:`slowfast_pathways` (the fast pathway is the clip, the slow one
  every alpha-th frame), called inside ``features``, so the clip pipeline hands every model the
  same ``(B, C, T, H, W)`` batch. The embedding concatenates both pathways' pooled features.
- ``slowfast_r50_attn`` (seed 5s, "SlowFast with attention"): the same two pathways, pooled by
  attention instead of averaging: the last stage's space-time positions of both pathways become
  tokens (projected to ``dim``, plus a learned pathway embedding) and a pre-norm transformer
  encoder layer with a CLS token attends over them. Neither pytorchvideo nor torchvision has an
  attention SlowFast; this keeps SlowFast's pathways (and its Kinetics checkpoint) and adds the
  attention where the original pipeline put it, on the fused features.
- ``two_stream_i3d`` (seed 5u): an I3D-R50 on RGB and another on the clip's optical flow
  (``ClipSpec(channels="rgb+flow")``: Farneback on the CPU or RAFT-small from a local checkpoint,
  computed and cached with the clips by :mod:`fvcflow.deep.clips`), fused late.
- ``mvit_b_16x4`` (seed 5t, "multi-scale SlowFast"): read as the Multiscale Vision Transformer of
  the SlowFast authors (Fan et al., 2021, PySlowFast's successor model), MViT-B 16x4 from
  pytorchvideo's ``create_multiscale_vision_transformers``: its keywords size it directly
  (depth, stage starts, width), where torchvision's ``MViT`` takes a list of per-block configs;
  torchvision's MViT-V2-S is part 1's ``mvit_v2_s``. Its position tables are sized to the
  trainer's clip (``clip``); a clip of another shape is resized to ``frames`` x ``size``.

>>> slow, fast = slowfast_pathways(torch.zeros(2, 3, 8, 32, 32), alpha=4)
>>> tuple(slow.shape), tuple(fast.shape)
((2, 3, 2, 32, 32), (2, 3, 8, 32, 32))
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from fvcflow.models.torch_common import ClipSpec, VideoClassifier, load_local_weights, register_video_model
from fvcflow.models.video_transformers import clip_shape, fit_clip, seeded_build
from fvcflow.models.weights import WeightSource

#: pytorchvideo's Kinetics normalisation
PTV_MEAN = (0.45, 0.45, 0.45)
PTV_STD = (0.225, 0.225, 0.225)


def _clip(frames: int, stride: int, size: int) -> ClipSpec:
    return ClipSpec(frames=frames, clips=4, stride=stride, size=size, mean=PTV_MEAN, std=PTV_STD)


def _zoo(name: str, frames: int, stride: int) -> WeightSource:
    """A PyTorchVideo model-zoo checkpoint (``pytorchvideo:<name>``) and the clips it was trained on
    (the zoo's table: frames x stride, Kinetics mean and std)."""
    return WeightSource("pytorchvideo", names=(name,), meta={name: {"frames": frames, "stride": stride,
                                                                    "mean": PTV_MEAN, "std": PTV_STD}})


def slowfast_pathways(clip: torch.Tensor, alpha: int = 4) -> list[torch.Tensor]:
    """The slow and fast pathways of one sampled clip ``(..., C, T, H, W)``: ``[slow, fast]``.

    The fast pathway is the clip itself; the slow one takes every ``alpha``-th frame from the
    first, ``ceil(T / alpha)`` frames: the frames the fast-to-slow lateral connections (temporal
    stride ``alpha``) line up with, so any ``T >= 1`` works, not only multiples of ``alpha``.
    """
    if alpha < 1:
        raise ValueError(f"slowfast_pathways: alpha must be >= 1, got {alpha}")
    index = torch.arange(0, clip.shape[-3], alpha, device=clip.device)
    return [clip.index_select(-3, index), clip]


class PooledNet(VideoClassifier):
    """A pytorchvideo ``Net`` without its head, average-pooled over space and time."""

    def __init__(self, net: nn.Module, dim: int, dropout: float = 0.5):
        super().__init__(None, dim, dropout)
        self.net = net
        self.pool = nn.AdaptiveAvgPool3d(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.net(x)).flatten(1)


class X3D(VideoClassifier):
    """X3D up to its projected pooling (conv5, adaptive pool, the 2048-wide lin5)."""

    def __init__(self, net: nn.Module, dim: int, dropout: float = 0.5):
        super().__init__(None, dim, dropout)
        head = net.blocks[-1]
        head.pool.pool = nn.AdaptiveAvgPool3d(1)
        head.dropout = head.proj = head.activation = head.output_pool = None
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.net.blocks[:-1]:
            x = block(x)
        return self.net.blocks[-1].pool(x).flatten(1)


class SlowFast(VideoClassifier):
    """SlowFast on pathways made from one clip; both pathways average-pooled and concatenated."""

    def __init__(self, net: nn.Module, dim: int, alpha: int, dropout: float = 0.5):
        super().__init__(None, dim, dropout)
        self.net = net
        self.alpha = int(alpha)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(slowfast_pathways(x, self.alpha)).flatten(1)


class PathwayAttentionPool(nn.Module):
    """Attention pooling over the space-time tokens of several pathways: a CLS token's output."""

    def __init__(self, dims_in: Sequence[int], dim: int, heads: int, layers: int = 1):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(c, dim) for c in dims_in)
        self.pathway = nn.Parameter(torch.zeros(len(dims_in), dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.pathway, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        tokens = [proj(m.flatten(2).transpose(1, 2)) + self.pathway[i]
                  for i, (proj, m) in enumerate(zip(self.proj, maps))]
        seq = torch.cat([self.cls.expand(maps[0].shape[0], -1, -1), *tokens], dim=1)
        return self.norm(self.encoder(seq)[:, 0])


class SlowFastAttention(VideoClassifier):
    """SlowFast's pathways and fusions, then :class:`PathwayAttentionPool` over both pathways."""

    def __init__(self, net: nn.Module, dims_in: Sequence[int], alpha: int, dim: int, heads: int,
                 dropout: float = 0.5):
        super().__init__(None, dim, dropout)
        self.net = net
        self.alpha = int(alpha)
        self.attention = PathwayAttentionPool(dims_in, dim, heads)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        maps = slowfast_pathways(x, self.alpha)
        for block in self.net.blocks[:-1]:  # the stages; the last block is the average pooling
            maps = block(maps)
        return self.attention(maps)


class MViT(VideoClassifier):
    """pytorchvideo's Multiscale Vision Transformer without its head; the CLS token is the embedding."""

    def __init__(self, net: nn.Module, dim: int, frames: int, size: int, dropout: float = 0.5):
        super().__init__(None, dim, dropout)
        self.net = net
        self.frames, self.size = int(frames), int(size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(fit_clip(x, self.frames, self.size))[:, 0]


def _load(model: VideoClassifier, weights: str | Path | None) -> VideoClassifier:
    if weights is not None:
        load_local_weights(model.net, weights)
    return model


def _i3d(width: int, depth: int, channels: int, dropout: float) -> PooledNet:
    from pytorchvideo.models import create_resnet

    net = create_resnet(input_channel=channels, model_depth=depth, stem_dim_out=width,
                        stem_conv_kernel_size=(5, 7, 7), stage1_pool=nn.MaxPool3d,
                        stage_conv_a_kernel_size=((3, 1, 1), [(3, 1, 1), (1, 1, 1)],
                                                  [(3, 1, 1), (1, 1, 1)], [(1, 1, 1), (3, 1, 1)]),
                        head=None)
    return PooledNet(net, width * 32, dropout)


@register_video_model(clip=_clip(8, 8, 224), tiny={"params": {"width": 8}}, weights=_zoo("i3d_r50", 8, 8))
def i3d_r50(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5, width: int = 64,
            depth: int = 50) -> PooledNet:
    """I3D-R50 (seed 5o): pytorchvideo's inflated ResNet-50, 8 x 224 x 224 clips every 8th frame."""
    return _load(seeded_build(seed, lambda: _i3d(width, depth, 3, dropout)), weights)


class TwoStream(VideoClassifier):
    """An RGB stream and an optical-flow stream, fused late.

    Each stream pools its own features; the head (dropout, one linear unit) scores their
    concatenation, which is a learned weighted sum of the two streams' own linear scores: late
    (score-level) fusion, trained end to end. Input: an ``"rgb+flow"`` clip, channels 1-3 RGB,
    4-5 the flow (dx, dy in units of ``fvcflow.deep.flow.FLOW_BOUND`` pixels).
    """

    def __init__(self, rgb: VideoClassifier, flow: VideoClassifier, dropout: float = 0.5):
        super().__init__(None, rgb.dim + flow.dim, dropout)
        rgb.head = flow.head = None      # the streams' own heads are unused: the fused head scores
        self.rgb, self.flow = rgb, flow

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.rgb.features(x[:, :3]), self.flow.features(x[:, 3:5])], dim=1)


@register_video_model(clip=ClipSpec(frames=16, clips=4, stride=2, size=112, mean=PTV_MEAN, std=PTV_STD,
                                    channels="rgb+flow"),
                      tiny={"params": {"width": 8}},
                      weights=_zoo("i3d_r50", 16, 2))
def two_stream_i3d(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5,
                   width: int = 64, depth: int = 50) -> TwoStream:
    """Two-stream I3D-R50 (seed 5u): RGB and optical flow streams, late fusion; 16 x 112 x 112 clips.

    ``weights`` (an ``i3d_r50`` checkpoint) fill both streams; the flow stream's first
    convolution, which sees 2 channels, starts from the RGB one averaged over its 3 input
    channels (cross-modality initialisation, as in the temporal segment networks).
    """
    model = seeded_build(seed, lambda: TwoStream(_i3d(width, depth, 3, dropout),
                                                 _i3d(width, depth, 2, dropout), dropout))
    if weights is not None:
        load_local_weights(model.rgb.net, weights)
        load_local_weights(model.flow.net, weights)
        stem_rgb, stem_flow = model.rgb.net.blocks[0].conv, model.flow.net.blocks[0].conv
        with torch.no_grad():
            stem_flow.weight.copy_(stem_rgb.weight.mean(dim=1, keepdim=True).expand_as(stem_flow.weight))
    return model


X3D_TINY = {"params": {"width_factor": 0.5, "depth_factor": 0.5, "head_dim": 32}}


def _x3d(seed: int, weights: str | Path | None, dropout: float, width_factor: float, depth_factor: float,
         bottleneck_factor: float, head_dim: int) -> X3D:
    from pytorchvideo.models.x3d import create_x3d

    def build() -> X3D:
        # clip length and crop size only set the head's pooling window, replaced by adaptive pooling
        net = create_x3d(input_clip_length=4, input_crop_size=160, width_factor=width_factor,
                         depth_factor=depth_factor, bottleneck_factor=bottleneck_factor,
                         head_dim_out=head_dim, dropout_rate=dropout)
        return X3D(net, head_dim, dropout)

    return _load(seeded_build(seed, build), weights)


@register_video_model(clip=_clip(4, 12, 160), tiny=X3D_TINY, weights=_zoo("x3d_xs", 4, 12))
def x3d_xs(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5,
           width_factor: float = 2.0, depth_factor: float = 2.2, bottleneck_factor: float = 2.25,
           head_dim: int = 2048) -> X3D:
    """X3D-XS (seed 5q): 4 x 160 x 160 clips every 12th frame."""
    return _x3d(seed, weights, dropout, width_factor, depth_factor, bottleneck_factor, head_dim)


@register_video_model(clip=_clip(13, 6, 160), tiny=X3D_TINY, weights=_zoo("x3d_s", 13, 6))
def x3d_s(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5,
          width_factor: float = 2.0, depth_factor: float = 2.2, bottleneck_factor: float = 2.25,
          head_dim: int = 2048) -> X3D:
    """X3D-S (seed 5q): the X3D-XS network on 13 x 160 x 160 clips every 6th frame."""
    return _x3d(seed, weights, dropout, width_factor, depth_factor, bottleneck_factor, head_dim)


def _slowfast_net(width: int, depth: int, alpha: int, beta_inv: int, pooled: bool) -> nn.Module:
    from pytorchvideo.models import create_slowfast

    fusion_kernel = 2 * alpha - 1  # 7 for alpha 4, as published
    return create_slowfast(model_depth=depth, stem_dim_outs=(width, width // beta_inv),
                           slowfast_channel_reduction_ratio=(beta_inv,),
                           slowfast_fusion_conv_kernel_size=(fusion_kernel, 1, 1),
                           slowfast_fusion_conv_stride=(alpha, 1, 1),
                           head=None, head_pool=nn.AdaptiveAvgPool3d if pooled else None)


SLOWFAST_CLIP = _clip(32, 2, 224)


@register_video_model(clip=SLOWFAST_CLIP, tiny={"params": {"width": 8}}, weights=_zoo("slowfast_r50", 32, 2))
def slowfast_r50(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5, width: int = 64,
                 depth: int = 50, alpha: int = 4, beta_inv: int = 8) -> SlowFast:
    """SlowFast-R50 8x8 (seed 5r): fast 32 frames every 2nd, slow every 4th of those, 224 x 224."""
    def build() -> SlowFast:
        net = _slowfast_net(width, depth, alpha, beta_inv, pooled=True)
        return SlowFast(net, width * 32 + width * 32 // beta_inv, alpha, dropout)

    return _load(seeded_build(seed, build), weights)


@register_video_model(clip=SLOWFAST_CLIP,
                      tiny={"params": {"width": 8, "dim": 16, "heads": 2}},
                      weights=_zoo("slowfast_r50", 32, 2))
def slowfast_r50_attn(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5,
                      width: int = 64, depth: int = 50, alpha: int = 4, beta_inv: int = 8, dim: int = 512,
                      heads: int = 8) -> SlowFastAttention:
    """SlowFast-R50 with attention pooling over both pathways' tokens (seed 5s)."""
    def build() -> SlowFastAttention:
        net = _slowfast_net(width, depth, alpha, beta_inv, pooled=False)
        return SlowFastAttention(net, (width * 32, width * 32 // beta_inv), alpha, dim, heads, dropout)

    return _load(seeded_build(seed, build), weights)


@register_video_model(clip=_clip(16, 4, 224),
                      tiny={"params": {"depth": 2, "stages": (1,), "embed_dim": 16, "kv_stride": 2}},
                      weights=_zoo("mvit_base_16x4", 16, 4))
def mvit_b_16x4(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5,
                clip: ClipSpec | None = None, frames: int | None = None, size: int | None = None,
                depth: int = 16, stages: Sequence[int] = (1, 3, 14), embed_dim: int = 96, heads: int = 1,
                kv_stride: int = 8) -> MViT:
    """MViT-B 16x4, the multi-scale variant (seed 5t): 16 x 224 x 224 clips every 4th frame.

    ``stages``: the blocks where the width and heads double and the query pooling halves H, W;
    ``frames`` and ``size`` default to the clip's (the position tables are sized to it).
    """
    from pytorchvideo.models import create_multiscale_vision_transformers

    frames, size = clip_shape(clip, frames, size, 16, 224)

    def build() -> MViT:
        net = create_multiscale_vision_transformers(
            spatial_size=size, temporal_size=frames, depth=depth, patch_embed_dim=embed_dim, num_heads=heads,
            embed_dim_mul=[[i, 2.0] for i in stages], atten_head_mul=[[i, 2.0] for i in stages],
            pool_q_stride_size=[[i, 1, 2, 2] for i in stages],
            pool_kv_stride_adaptive=[1, kv_stride, kv_stride], pool_kvq_kernel=[3, 3, 3], head=None)
        return MViT(net, embed_dim * 2 ** len(stages), frames, size, dropout)

    return _load(seeded_build(seed, build), weights)
