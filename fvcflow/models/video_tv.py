"""Deep video families of part 1: our own small nets, torchvision's video nets, timm ViT per frame.

Each is a short constructor under :func:`register_video_model` returning a
:class:`VideoClassifier` (``features`` -> ``(B, D)``, ``head`` -> one logit). torchvision and timm
are imported inside the constructors and always build with random weights (``weights=None``,
``pretrained=False``); ``weights=PATH`` then loads a local checkpoint into the backbone. Nothing
is ever downloaded. Constructors that take ``clip`` get the configured :class:`ClipSpec` (the
nets whose layers depend on the input size: MViT, the ViTs).

>>> from fvcflow.models import list_models
>>> "r2plus1d_18" in list_models(kind="torch_video")
True
"""

from __future__ import annotations

from unittest import mock

import torch
from torch import nn
from torch.nn import functional as F

from fvcflow.models.torch_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipSpec,
    VideoClassifier,
    load_local_weights,
    register_video_model,
)
from fvcflow.models.weights import WeightSource


def _tv(enum: str) -> WeightSource:
    """Named weights of a torchvision model: the members of its ``*_Weights`` enum."""
    return WeightSource("torchvision", enum)


#: timm's ViT-S/16 pretrained tags (``timm:augreg_in21k_ft_in1k``) for the ViT-per-frame models
VIT_S_WEIGHTS = WeightSource("timm", "vit_small_patch16_224")

CLIP_3D = ClipSpec(frames=16, clips=4, size=112)
CLIP_224_K400 = ClipSpec(frames=16, clips=4, size=224)
CLIP_224_IMAGENET = ClipSpec(frames=16, clips=4, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
CLIP_FRAMES = ClipSpec(frames=8, clips=4, size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _load(backbone: nn.Module, weights: str | None) -> nn.Module:
    if weights:
        load_local_weights(backbone, weights)
    return backbone


def _frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B * T, C, H, W)`` for per-frame 2D backbones."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


class _Backbone3D(VideoClassifier):
    """A torchvision video net whose classifier was replaced by the identity."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(1)


# -- our own ------------------------------------------------------------------------------------
class Naive3DCNN(VideoClassifier):
    """Three conv3d-BN-ReLU blocks and global average pooling (seed code 5c)."""

    def __init__(self, widths=(16, 32, 64), dropout: float = 0.5):
        layers, c_in = [], 3
        for i, c in enumerate(widths):
            layers += [nn.Conv3d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool3d((1, 2, 2) if i == 0 else 2, ceil_mode=True))
            c_in = c
        layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(1)]
        super().__init__(nn.Sequential(*layers), widths[-1], dropout)


@register_video_model(clip=CLIP_3D, pretrained_lr=False)
def naive_3dcnn(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5,
                widths: tuple[int, ...] = (16, 32, 64)) -> VideoClassifier:
    """A small 3D CNN of our own (three conv3d blocks), 16 x 112 x 112 clips."""
    return _load(Naive3DCNN(tuple(widths), dropout), weights)


class VariableAspectCNN(VideoClassifier):
    """A 2D CNN per frame at the frame's own aspect (no padding), adaptive pooling, mean over time.

    GroupNorm instead of BatchNorm: clips of different shapes go through one at a time.
    """

    def __init__(self, widths=(32, 64, 128), dropout: float = 0.5):
        layers, c_in = [], 3
        for c in widths:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.GroupNorm(8, c),
                       nn.ReLU(inplace=True)]
            c_in = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        super().__init__(nn.Sequential(*layers), widths[-1], dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[2]
        return self.backbone(_frames(x)).reshape(b, t, -1).mean(1)


@register_video_model(pretrained_lr=False, tiny={"clip": {"size": None}},
                      clip=ClipSpec(frames=8, clips=4, size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD))
def variable_aspect_cnn(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5,
                        widths: tuple[int, ...] = (32, 64, 128)) -> VideoClassifier:
    """2D CNN per frame at its own aspect ratio (letterbox removed), adaptive pooling (5e)."""
    return _load(VariableAspectCNN(tuple(widths), dropout), weights)


# -- torchvision 2D per frame -------------------------------------------------------------------
class FramePooled(VideoClassifier):
    """A 2D backbone per frame, then the mean over time (temporal average pooling)."""

    def __init__(self, backbone: nn.Module, dim: int, dropout: float = 0.5, min_side: int = 0):
        super().__init__(backbone, dim, dropout)
        self.min_side = min_side

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[2]
        frames = _frames(x)
        if self.min_side and min(frames.shape[-2:]) < self.min_side:   # Inception needs >= 75 px
            frames = F.interpolate(frames, size=(self.min_side, self.min_side), mode="bilinear",
                                   align_corners=False)
        return self.backbone(frames).reshape(b, t, -1).mean(1)


@register_video_model(clip=CLIP_FRAMES, tiny={"clip": {"frames": 2}}, weights=_tv("Inception_V3_Weights"))
def inception_v3_frames(*, seed: int = 0, weights: str | None = None,
                        dropout: float = 0.5) -> VideoClassifier:
    """torchvision Inception v3 on every frame, temporal average pooling (5d)."""
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=True)
    net.fc = nn.Identity()
    return FramePooled(_load(net, weights), 2048, dropout, min_side=75)


# -- torchvision video --------------------------------------------------------------------------
def _resnet3d(builder: str, weights: str | None, dropout: float) -> VideoClassifier:
    import torchvision.models.video as tvv

    net = getattr(tvv, builder)(weights=None)
    net.fc = nn.Identity()
    return _Backbone3D(_load(net, weights), 512, dropout)


@register_video_model(clip=CLIP_3D, weights=_tv("R2Plus1D_18_Weights"))
def r2plus1d_18(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5) -> VideoClassifier:
    """R(2+1)D-18 (torchvision), 16 x 112 x 112 clips (5p)."""
    return _resnet3d("r2plus1d_18", weights, dropout)


@register_video_model(clip=CLIP_3D, weights=_tv("R3D_18_Weights"))
def r3d_18(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5) -> VideoClassifier:
    """3D ResNet-18 (torchvision), 16 x 112 x 112 clips."""
    return _resnet3d("r3d_18", weights, dropout)


@register_video_model(clip=CLIP_3D, weights=_tv("MC3_18_Weights"))
def mc3_18(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5) -> VideoClassifier:
    """Mixed-convolution ResNet-18 (torchvision), 16 x 112 x 112 clips."""
    return _resnet3d("mc3_18", weights, dropout)


class _S3D(VideoClassifier):
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool3d(self.backbone(x), 1).flatten(1)


@register_video_model(clip=CLIP_224_K400, tiny={"clip": {"frames": 8}}, weights=_tv("S3D_Weights"))
def s3d(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5) -> VideoClassifier:
    """S3D (torchvision), adaptive pooling instead of its fixed 2 x 7 x 7 average."""
    from torchvision.models.video import s3d as build

    net = _load(build(weights=None), weights)
    return _S3D(net.features, 1024, dropout)


@register_video_model(clip=CLIP_224_K400, weights=_tv("MViT_V2_S_Weights"))
def mvit_v2_s(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5,
              clip: ClipSpec = CLIP_224_K400) -> VideoClassifier:
    """MViT v2 small (torchvision), built for the configured clip size and length."""
    import torchvision.models.video.mvit as tvm

    # mvit_v2_s fixes spatial/temporal size (its relative position tables depend on them): take
    # its exact block settings from the call it makes, then build at the clip's size
    captured = {}
    with mock.patch.object(tvm, "_mvit", side_effect=lambda **kw: captured.update(kw)):
        tvm.mvit_v2_s(weights=None)
    captured.update(spatial_size=(clip.size or 224,) * 2, temporal_size=clip.frames)
    net = tvm._mvit(**captured)
    net.head = nn.Identity()
    return _Backbone3D(_load(net, weights), 768, dropout)


@register_video_model(clip=CLIP_224_IMAGENET, weights=_tv("Swin3D_T_Weights"))
def swin3d_t(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5) -> VideoClassifier:
    """Video Swin Transformer tiny (torchvision)."""
    from torchvision.models.video import swin3d_t as build

    net = build(weights=None)
    net.head = nn.Identity()
    return _Backbone3D(_load(net, weights), 768, dropout)


# -- timm ViT per frame + temporal model --------------------------------------------------------
def _vit(clip: ClipSpec, weights: str | None, embed_dim: int, depth: int, heads: int,
         patch: int) -> nn.Module:
    import timm

    side = clip.size or 224
    from timm.models.vision_transformer import checkpoint_filter_fn

    net = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=side,
                            patch_size=patch, embed_dim=embed_dim, depth=depth, num_heads=heads)
    if weights:   # timm's own filter: position table resampled to the clip size, head dropped
        load_local_weights(net, weights, transform=lambda state: checkpoint_filter_fn(state, net))
    return net


class ViTTemporal(VideoClassifier):
    """A ViT embeds each frame; a GRU or a transformer encoder runs over the frame embeddings."""

    def __init__(self, vit: nn.Module, embed_dim: int, temporal: str, frames: int, dropout: float = 0.5,
                 hidden: int = 256, layers: int = 2):
        dim = hidden if temporal == "gru" else embed_dim
        super().__init__(vit, dim, dropout)
        self.temporal = temporal
        if temporal == "gru":
            self.rnn = nn.GRU(embed_dim, hidden, batch_first=True)
        else:
            self.pos = nn.Parameter(torch.zeros(1, frames, embed_dim))
            layer = nn.TransformerEncoderLayer(embed_dim, nhead=max(1, embed_dim // 64), batch_first=True,
                                               dim_feedforward=2 * embed_dim, dropout=0.1)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[2]
        seq = self.backbone(_frames(x)).reshape(b, t, -1)
        if self.temporal == "gru":     # fp32 outside autocast: cuDNN casts RNNs to fp16 under autocast
            with torch.autocast(seq.device.type, enabled=False):
                return self.rnn(seq.float())[1][-1]
        return self.encoder(seq + self.pos[:, :t]).mean(1)


@register_video_model(clip=CLIP_FRAMES,
                      tiny={"params": {"embed_dim": 64, "depth": 2, "heads": 2, "patch": 8}},
                      weights=VIT_S_WEIGHTS)
def vit_gru_small(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5,
                  clip: ClipSpec = CLIP_FRAMES, embed_dim: int = 384, depth: int = 12, heads: int = 6,
                  patch: int = 16, hidden: int = 256) -> VideoClassifier:
    """timm ViT-S/16 per frame, a GRU over time (5k); ``embed_dim``/``depth``/... shrink it."""
    return ViTTemporal(_vit(clip, weights, embed_dim, depth, heads, patch), embed_dim, "gru", clip.frames,
                       dropout, hidden=hidden)


@register_video_model(clip=CLIP_FRAMES,
                      tiny={"params": {"embed_dim": 64, "depth": 2, "heads": 2, "patch": 8}},
                      weights=VIT_S_WEIGHTS)
def vit_transformer_small(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5,
                          clip: ClipSpec = CLIP_FRAMES, embed_dim: int = 384, depth: int = 12,
                          heads: int = 6, patch: int = 16, layers: int = 2) -> VideoClassifier:
    """timm ViT-S/16 per frame, a transformer encoder over time (5l)."""
    return ViTTemporal(_vit(clip, weights, embed_dim, depth, heads, patch), embed_dim, "transformer",
                       clip.frames, dropout, layers=layers)
