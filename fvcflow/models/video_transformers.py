"""Video transformers from Hugging Face ``transformers`` configs: TimeSformer and ViViT.

Both are built offline from a config object (``TimesformerConfig``, ``VivitConfig``), never from
a hub name; the defaults are the published base sizes (what a GPU run trains) and constructor
keywords shrink them (the registered ``tiny`` keywords build a CPU test model in milliseconds);
the position tables are sized to the clip the trainer passes (``clip``).
The libraries want clips as ``(B, T, C, H, W)``; the clip pipeline hands over ``(B, C, T, H, W)``
and :meth:`features` converts. ``transformers`` is imported when a model is built, not when the
registry is.

- ``timesformer_base`` (seed 5m): TimeSformer with divided space-time attention (each block
  attends over time at a fixed patch position, then over space within a frame), the CLS token
  after the final layer norm is the embedding. The library's attention reshapes are fixed to
  the config's ``num_frames`` and ``image_size`` (the trainer's clip by default), so a clip of
  another shape is resized to them (trilinear).
- ``vivit_b_fe`` (seed 5n): ViViT's factorised encoder (model 2 of Arnab et al., 2021), which
  ``transformers`` does not ship (its ``VivitModel`` is model 1, joint attention): a spatial
  ``VivitModel`` runs on each tubelet-thick time slice (``VivitConfig(num_frames=tubelet_t)``,
  so it sees one temporal index) and its CLS tokens go through a temporal stack of
  ``VivitLayer`` s with their own CLS token and temporal positions. Clips of another size are
  resized to the config's ``image_size`` (the library keeps a square input's position table as
  it is); a clip shorter than one tubelet repeats its last frame.

Weights: ``weights=None`` is random initialisation (``config.initializer_range``, seeded by
``seed``); ``weights=PATH`` loads a local checkpoint (a Hugging Face ``model.safetensors`` or
``pytorch_model.bin`` file, or the directory holding one) through
:func:`fvcflow.models.torch_common.load_local_weights`, with the ``timesformer.`` / ``vivit.``
prefix of the ``*ForVideoClassification`` checkpoints stripped. A ``vivit-b-16x2`` (model 1)
checkpoint fills the spatial encoder; its joint space-time position table does not fit and is
reported missing.

>>> model = timesformer_base(hidden_size=16, layers=1, heads=2, clip=ClipSpec(frames=4, size=32))
>>> model(torch.zeros(2, 3, 4, 32, 32)).shape
torch.Size([2])
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fvcflow.errors import FvcError
from fvcflow.models.torch_common import ClipSpec, VideoClassifier, load_local_weights, register_video_model
from fvcflow.models.weights import WeightSource

#: the normalisation of the Hugging Face video processors (pixels to [-1, 1])
HF_VIDEO_MEAN = (0.5, 0.5, 0.5)
HF_VIDEO_STD = (0.5, 0.5, 0.5)


def _clip(frames: int, clips: int, stride: int, size: int) -> ClipSpec:
    return ClipSpec(frames=frames, clips=clips, stride=stride, size=size, mean=HF_VIDEO_MEAN,
                    std=HF_VIDEO_STD)


def transformers_checked():
    """``transformers``, imported after checking that ``import kernels`` finds Hugging Face's package.

    ``transformers`` imports Hugging Face's ``kernels`` distribution. Run from a checkout with the
    repository root ahead of site-packages on ``sys.path`` (``python -m ...`` from the root without
    ``-P``), our own top-level ``kernels/`` folder (installed as ``fvcflow.kernels``) would be found
    instead, and the import fails deep inside ``transformers``; this says what happened instead.
    """
    import importlib.util

    from fvcflow import kernels as ours

    spec = importlib.util.find_spec("kernels")
    if spec is not None and spec.origin and Path(spec.origin).resolve() == Path(ours.__file__).resolve():
        raise FvcError(f"`import kernels` finds this checkout's {Path(ours.__file__).parent} (installed as "
                       "fvcflow.kernels) ahead of Hugging Face's `kernels` package that transformers needs: "
                       "the repository root is first on sys.path; run the installed `fvc` command, "
                       "`python -P -m ...`, or set PYTHONSAFEPATH=1")
    import transformers

    return transformers


def seeded_build(seed: int, build):
    """Call ``build()`` with torch's CPU generator seeded, leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def clip_shape(clip: ClipSpec | None, frames: int | None, size: int | None, default_frames: int,
                default_size: int) -> tuple[int, int]:
    """Frames and side of a fixed-size model: the keywords, else the clip's, else the defaults."""
    frames = frames or (clip.frames if clip is not None else default_frames)
    size = size or (clip.size if clip is not None and clip.size else default_size)
    return int(frames), int(size)


def fit_clip(x: torch.Tensor, frames: int | None, size: int) -> torch.Tensor:
    """Resize a ``(B, C, T, H, W)`` batch to ``frames`` (``None``: keep T) x ``size`` x ``size``.

    For models whose position tables and reshapes are fixed at construction; a batch that
    already fits is returned as it is.
    """
    t, h, w = x.shape[2:]
    target = (t if frames is None else frames, size, size)
    if (t, h, w) == target:
        return x
    return nn.functional.interpolate(x, size=target, mode="trilinear", align_corners=False)


def hf_weights_file(path: str | Path) -> Path:
    """The checkpoint file of a Hugging Face model directory (or ``path`` itself if it is a file)."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return path / name
    return path


class TimeSformer(VideoClassifier):
    """TimeSformer (divided space-time attention) on a ``(B, C, T, H, W)`` clip batch."""

    def __init__(self, config, dropout: float = 0.5):
        TimesformerModel = transformers_checked().TimesformerModel

        super().__init__(None, config.hidden_size, dropout)
        self.encoder = TimesformerModel(config)
        self.frames, self.image_size = int(config.num_frames), int(config.image_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = fit_clip(x, self.frames, self.image_size)
        out = self.encoder(pixel_values=x.permute(0, 2, 1, 3, 4))
        return out.last_hidden_state[:, 0]


class ViViTFactorisedEncoder(VideoClassifier):
    """ViViT factorised encoder: spatial ViT per tubelet time slice, then a temporal transformer."""

    def __init__(self, spatial_config, temporal_layers: int, max_slices: int, dropout: float = 0.5):
        transformers_checked()
        from transformers import VivitConfig, VivitModel
        from transformers.models.vivit.modeling_vivit import VivitLayer

        super().__init__(None, spatial_config.hidden_size, dropout)
        self.tubelet_t = int(spatial_config.tubelet_size[0])
        self.spatial = VivitModel(spatial_config, add_pooling_layer=False)
        temporal_config = VivitConfig(**{**spatial_config.to_dict(), "num_hidden_layers": temporal_layers})
        temporal_config._attn_implementation = self.spatial.config._attn_implementation
        self.image_size = int(spatial_config.image_size)
        dim = spatial_config.hidden_size
        self.temporal_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.temporal_pos = nn.Parameter(torch.zeros(1, max_slices + 1, dim))
        nn.init.trunc_normal_(self.temporal_pos, std=spatial_config.initializer_range)
        self.temporal = nn.ModuleList(VivitLayer(temporal_config) for _ in range(temporal_layers))
        self.temporal_norm = nn.LayerNorm(dim, eps=spatial_config.layer_norm_eps)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # transformers' ViViT keeps a square input's position table as it is: resize the frames
        x = fit_clip(x, None, self.image_size)
        b, c, t, h, w = x.shape
        slices = max(t // self.tubelet_t, 1)
        if t < self.tubelet_t:  # a clip shorter than one tubelet: repeat its last frame
            x = torch.cat([x, x[:, :, -1:].expand(b, c, self.tubelet_t - t, h, w)], dim=2)
        x = x[:, :, : slices * self.tubelet_t]
        x = x.reshape(b, c, slices, self.tubelet_t, h, w).permute(0, 2, 3, 1, 4, 5)
        x = x.reshape(b * slices, self.tubelet_t, c, h, w)
        spatial = self.spatial(pixel_values=x).last_hidden_state[:, 0]
        tokens = torch.cat([self.temporal_cls.expand(b, -1, -1), spatial.reshape(b, slices, -1)], dim=1)
        pos = self.temporal_pos
        if tokens.shape[1] != pos.shape[1]:  # more or fewer slices than the table: resize it
            pos = nn.functional.interpolate(pos.transpose(1, 2), size=tokens.shape[1],
                                            mode="linear").transpose(1, 2)
        hidden = tokens + pos
        for layer in self.temporal:
            hidden = layer(hidden)
        return self.temporal_norm(hidden[:, 0])


@register_video_model(clip=_clip(8, 4, 4, 224),
                      tiny={"params": {"hidden_size": 16, "layers": 1, "heads": 2, "patch_size": 16}},
                      weights=WeightSource("hf", names=("facebook/timesformer-base-finetuned-k400",)))
def timesformer_base(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5,
                     clip: ClipSpec | None = None, hidden_size: int = 768, layers: int = 12, heads: int = 12,
                     mlp: int | None = None, patch_size: int = 16, image_size: int | None = None,
                     frames: int | None = None) -> TimeSformer:
    """TimeSformer-Base, divided space-time attention (seed 5m); 8 x 224 x 224 clips.

    ``frames`` and ``image_size`` default to the clip's (the position tables are sized to it).
    """
    TimesformerConfig = transformers_checked().TimesformerConfig

    frames, image_size = clip_shape(clip, frames, image_size, 8, 224)

    config = TimesformerConfig(image_size=image_size, patch_size=patch_size, num_frames=frames,
                               hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                               intermediate_size=mlp or 4 * hidden_size, attention_type="divided_space_time")
    model = seeded_build(seed, lambda: TimeSformer(config, dropout))
    if weights is not None:
        load_local_weights(model.encoder, hf_weights_file(weights), prefix="timesformer.")
    return model


@register_video_model(clip=_clip(32, 2, 2, 224),
                      tiny={"params": {"hidden_size": 16, "spatial_layers": 1, "temporal_layers": 1,
                                       "heads": 2, "patch_size": 16}},
                      weights=WeightSource("hf", names=("google/vivit-b-16x2-kinetics400",)))
def vivit_b_fe(*, seed: int = 0, weights: str | Path | None = None, dropout: float = 0.5,
               clip: ClipSpec | None = None, hidden_size: int = 768, spatial_layers: int = 12,
               temporal_layers: int = 4, heads: int = 12, mlp: int | None = None, patch_size: int = 16,
               tubelet_t: int = 2, image_size: int | None = None,
               frames: int | None = None) -> ViViTFactorisedEncoder:
    """ViViT-B/16x2 factorised encoder (seed 5n): 12 spatial + 4 temporal layers; 32 x 224 x 224 clips.

    ``frames`` and ``image_size`` default to the clip's (the position tables are sized to it).
    """
    VivitConfig = transformers_checked().VivitConfig

    frames, image_size = clip_shape(clip, frames, image_size, 32, 224)

    config = VivitConfig(image_size=image_size, num_frames=tubelet_t,
                         tubelet_size=[tubelet_t, patch_size, patch_size], hidden_size=hidden_size,
                         num_hidden_layers=spatial_layers, num_attention_heads=heads,
                         intermediate_size=mlp or 4 * hidden_size)
    model = seeded_build(seed, lambda: ViViTFactorisedEncoder(config, temporal_layers,
                                                              max(frames // tubelet_t, 1), dropout))
    if weights is not None:
        load_local_weights(model.spatial, hf_weights_file(weights), prefix="vivit.")
    return model
