"""The CLIP family: the image encoders behind the best cross-dataset deepfake detectors since 2025.

Every member runs an open_clip image tower (``ViT-B-16``, ``ViT-L-14``, ``PE-Core-L-14-336``: the
``backbone`` keyword, built from open_clip's own config, offline, with random weights) on each
frame of a clip; named weights are ``open_clip:<pretrained tag>`` of that architecture (the full
CLIP checkpoint: its ``visual.`` tensors load, the position table resampled to the clip size).
They take whatever clip the trainer hands them: face clips when the face stage made them
(CLIP detectors are trained on aligned faces), frame clips otherwise.

- ``clip_ln`` (GenD's recipe): the tower frozen except its LayerNorm parameters, a linear head on
  each frame's L2-normalised embedding, the frame logits averaged over the clip.
- ``clip_svd`` (Effort's recipe): each attention and MLP weight ``W`` split by SVD into a frozen
  principal part (its top singular directions) and a trainable residual ``U diag(s) V^T`` of rank
  ``residual_rank``, initialised from the remaining directions, so ``W`` is reproduced at
  initialisation; the orthogonality loss (:meth:`VideoClassifier.regularizer`) keeps the
  residual's bases orthonormal and out of the principal subspace.
- ``clip_temporal`` (StA's idea): the frozen tower's frame embeddings as tokens, a small trainable
  temporal transformer over them (a class token, learned positions), its class token to the head.
- ``emb_xgb_clip`` (in :mod:`fvcflow.models.embedding`): XGBoost on ``clip_ln``'s frozen embeddings.

The registered ``tiny`` size shrinks the tower (width 32, 2 layers, patch 8, a 128-d output) for CPU tests.

>>> from fvcflow.models import list_models
>>> list_models("clip_*")
['clip_ln', 'clip_svd', 'clip_temporal']
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from fvcflow.errors import FvcError
from fvcflow.models.torch_common import ClipSpec, VideoClassifier, load_local_weights, register_video_model
from fvcflow.models.video_tv import _frames
from fvcflow.models.weights import WeightSource

#: OpenAI CLIP's normalisation (open_clip's default for its CLIP weights)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: 8 frames of 224 px per clip (faces when the face stage made them)
CLIP_CLIP = ClipSpec(frames=8, clips=4, size=224, mean=OPENAI_MEAN, std=OPENAI_STD)
CLIP_WEIGHTS = WeightSource("open_clip", "ViT-B-16", prefix="visual.")
TINY_TOWER = {"clip": {"size": 32},
              "params": {"width": 32, "layers": 2, "heads": 2, "patch": 8, "embed_dim": 128}}
BACKBONES = ("ViT-B-16", "ViT-L-14", "PE-Core-L-14-336")


def _resample_positions(state: dict, tower: nn.Module) -> dict:
    """Resample a checkpoint's position table (class token + square grid) to the tower's grid."""
    own = tower.state_dict()
    for key in ("positional_embedding", "trunk.pos_embed"):
        if key not in own or key not in state or state[key].shape == own[key].shape:
            continue
        src, dst = state[key], own[key]
        squeeze = src.dim() == 3
        src2, dst_n = (src[0], dst.shape[-2]) if squeeze else (src, dst.shape[0])
        n_src, width = src2.shape
        extra = 1 if math.isqrt(n_src - 1) ** 2 == n_src - 1 else 0      # a class token first
        g_src, g_dst = math.isqrt(n_src - extra), math.isqrt(dst_n - extra)
        if g_src * g_src != n_src - extra or g_dst * g_dst != dst_n - extra:
            continue                                   # not a square grid: left for the error to list
        grid = src2[extra:].reshape(1, g_src, g_src, width).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(g_dst, g_dst), mode="bicubic", align_corners=False)
        out = torch.cat([src2[:extra], grid.permute(0, 2, 3, 1).reshape(g_dst * g_dst, width).to(src2.dtype)])
        state[key] = out.unsqueeze(0) if squeeze else out
    return state


def clip_tower(backbone: str, size: int, *, width: int | None = None, layers: int | None = None,
               heads: int | None = None, patch: int | None = None, embed_dim: int | None = None,
               quick_gelu: bool | None = None) -> tuple[nn.Module, int]:
    """open_clip's image tower of architecture ``backbone`` at ``size`` px (random weights, offline);
    ``width``/``layers``/``heads``/``patch``/``embed_dim`` shrink it; ``quick_gelu`` (OpenAI's weights,
    set from their pretrained config) replaces GELU by QuickGELU. Returns (tower, output dim)."""
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(backbone)
    if cfg is None:
        raise FvcError(f"CLIP backbone {backbone!r}: not an open_clip architecture "
                       f"(e.g. {', '.join(BACKBONES)})")
    vision = dict(cfg["vision_cfg"])
    vision["image_size"] = int(size)
    for key, value in (("width", width), ("layers", layers), ("heads", heads), ("patch_size", patch)):
        if value is not None:
            if "timm_model_name" in vision:
                raise FvcError(f"CLIP backbone {backbone}: its timm tower takes no {key!r} keyword")
            vision[key] = int(value)
    if "heads" in vision:                      # open_clip counts heads by their width
        vision["head_width"] = int(vision["width"]) // int(vision.pop("heads"))
    dim = int(embed_dim or cfg["embed_dim"])
    gelu = cfg.get("quick_gelu", False) if quick_gelu is None else quick_gelu
    tower = _build_vision_tower(dim, vision, quick_gelu=bool(gelu))
    return tower, dim


def _load_tower(tower: nn.Module, weights: str | None) -> nn.Module:
    if weights:
        load_local_weights(tower, weights, prefix="visual.",
                           transform=lambda state: _resample_positions(
                               {k.removeprefix("module.").removeprefix("visual."): v for k, v in state.items()
                                if k.removeprefix("module.").startswith("visual.")}, tower))
    return tower


class CLIPFrames(VideoClassifier):
    """A CLIP image tower per frame; a linear head on each frame's L2-normalised embedding
    (scaled by sqrt(dim)); a clip's logit is the mean of its frames' (GenD's recipe).

    ``features``: the mean normalised frame embedding (the head is linear: in eval mode
    ``head(features(x))`` is the mean frame logit).
    """

    def __init__(self, tower: nn.Module, dim: int, dropout: float = 0.5):
        super().__init__(tower, dim, dropout)
        self.scale = math.sqrt(dim)

    def frame_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[2]
        e = self.backbone(_frames(x)).reshape(b, t, -1).float()
        return F.normalize(e, dim=-1) * self.scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_embeddings(x).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.frame_embeddings(x)).squeeze(-1).mean(1)


def layer_norms(module: nn.Module) -> list[nn.LayerNorm]:
    return [m for m in module.modules() if isinstance(m, nn.LayerNorm)]


@register_video_model(clip=CLIP_CLIP, pretrained_lr=False, tiny=TINY_TOWER, weights=CLIP_WEIGHTS)
def clip_ln(*, seed: int = 0, weights: str | None = None, dropout: float = 0.1, clip: ClipSpec = CLIP_CLIP,
            backbone: str = "ViT-B-16", width: int | None = None, layers: int | None = None,
            heads: int | None = None, patch: int | None = None, embed_dim: int | None = None,
            quick_gelu: bool | None = None) -> CLIPFrames:
    """CLIP image encoder frozen except its LayerNorms, linear head per frame, mean frame logit (GenD)."""
    tower, dim = clip_tower(backbone, clip.size or 224, width=width, layers=layers, heads=heads, patch=patch,
                            embed_dim=embed_dim, quick_gelu=quick_gelu)
    tower = _load_tower(tower, weights).requires_grad_(False)
    for norm in layer_norms(tower):
        norm.requires_grad_(True)
    return CLIPFrames(tower, dim, dropout)


# -- Effort: SVD residual -----------------------------------------------------------------------
class SVDResidual(nn.Module):
    """``W = U_r diag(s_r) V_r^T`` (frozen buffers, the top singular directions) ``+ U diag(s) V^T``
    (trainable, the last ``rank`` directions): exactly ``W`` at initialisation, up to rounding.

    A parametrisation (:func:`torch.nn.utils.parametrize.register_parametrization`): it ignores the
    original tensor, which is kept empty.
    """

    def __init__(self, weight: torch.Tensor, rank: int):
        super().__init__()
        w = weight.detach().double()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        k = s.numel()
        rank = max(1, min(int(rank), k - 1))
        keep = k - rank
        dtype = weight.dtype
        self.register_buffer("u_principal", u[:, :keep].to(dtype).contiguous())
        self.register_buffer("s_principal", s[:keep].to(dtype).contiguous())
        self.register_buffer("v_principal", vh[:keep].T.to(dtype).contiguous())
        self.u_residual = nn.Parameter(u[:, keep:].to(dtype).contiguous())
        self.s_residual = nn.Parameter(s[keep:].to(dtype).contiguous())
        self.v_residual = nn.Parameter(vh[keep:].T.to(dtype).contiguous())

    def principal(self) -> torch.Tensor:
        return (self.u_principal * self.s_principal) @ self.v_principal.T

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return self.principal() + (self.u_residual * self.s_residual) @ self.v_residual.T

    def orthogonality(self) -> torch.Tensor:
        """Effort's loss: residual bases orthonormal, and orthogonal to the principal ones."""
        eye = torch.eye(self.u_residual.shape[1], device=self.u_residual.device, dtype=self.u_residual.dtype)
        loss = ((self.u_residual.T @ self.u_residual - eye) ** 2).sum()
        loss = loss + ((self.v_residual.T @ self.v_residual - eye) ** 2).sum()
        loss = loss + ((self.u_principal.T @ self.u_residual) ** 2).sum()
        return loss + ((self.v_principal.T @ self.v_residual) ** 2).sum()


def svd_targets(tower: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every attention and MLP weight matrix of a tower: ``(module, parameter name)``."""
    out = []
    for name, module in tower.named_modules():
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            out.append((module, "in_proj_weight"))
        elif isinstance(module, nn.Linear) and any(b in name for b in ("resblocks", "blocks")):
            parts = set(name.split("."))
            if parts & {"attn", "mlp", "out_proj", "c_fc", "c_proj", "qkv", "proj", "fc1", "fc2"}:
                out.append((module, "weight"))
    return out


class CLIPSVD(CLIPFrames):
    """:class:`CLIPFrames` whose tower's attention and MLP weights are SVD-split (Effort)."""

    def __init__(self, tower: nn.Module, dim: int, dropout: float, rank: int, ortho_weight: float):
        tower.requires_grad_(False)
        for module, pname in svd_targets(tower):
            param = SVDResidual(getattr(module, pname), rank)
            parametrize.register_parametrization(module, pname, param, unsafe=True)
            module.parametrizations[pname].original = nn.Parameter(torch.empty(0), requires_grad=False)
        super().__init__(tower, dim, dropout)
        self.ortho_weight = float(ortho_weight)

    def residuals(self) -> list[SVDResidual]:
        return [m for m in self.backbone.modules() if isinstance(m, SVDResidual)]

    def regularizer(self) -> torch.Tensor:
        return self.ortho_weight * sum(r.orthogonality() for r in self.residuals())


@register_video_model(clip=CLIP_CLIP, pretrained_lr=False, tiny=TINY_TOWER, weights=CLIP_WEIGHTS)
def clip_svd(*, seed: int = 0, weights: str | None = None, dropout: float = 0.1, clip: ClipSpec = CLIP_CLIP,
             backbone: str = "ViT-B-16", residual_rank: int = 1, ortho_weight: float = 1.0,
             width: int | None = None, layers: int | None = None, heads: int | None = None,
             patch: int | None = None, embed_dim: int | None = None,
             quick_gelu: bool | None = None) -> CLIPSVD:
    """CLIP image encoder with SVD-split weights: frozen principal part, trainable residual (Effort)."""
    tower, dim = clip_tower(backbone, clip.size or 224, width=width, layers=layers, heads=heads, patch=patch,
                            embed_dim=embed_dim, quick_gelu=quick_gelu)
    return CLIPSVD(_load_tower(tower, weights), dim, dropout, residual_rank, ortho_weight)


# -- StA: temporal transformer over frozen frame tokens -----------------------------------------
class CLIPTemporal(VideoClassifier):
    """Frozen CLIP frame embeddings as tokens, a small trainable temporal transformer over them."""

    def __init__(self, tower: nn.Module, dim: int, frames: int, dropout: float = 0.1, layers: int = 2,
                 heads: int | None = None):
        super().__init__(tower.requires_grad_(False).eval(), dim, dropout)
        heads = heads or max(1, dim // 64)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, frames + 1, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, nhead=heads, dim_feedforward=2 * dim, dropout=0.1,
                                           batch_first=True, norm_first=True)
        self.temporal = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def train(self, mode: bool = True) -> "CLIPTemporal":
        super().train(mode)
        self.backbone.eval()                   # frozen: no dropout, no statistics
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[2]
        with torch.no_grad():
            e = self.backbone(_frames(x)).reshape(b, t, -1).float()
        e = F.normalize(e, dim=-1) * math.sqrt(self.dim)
        tokens = torch.cat([self.cls.expand(b, -1, -1), e], dim=1)
        pos = self.pos
        if tokens.shape[1] != pos.shape[1]:    # another clip length: interpolate the frame positions
            frames = F.interpolate(pos[:, 1:].transpose(1, 2), size=t, mode="linear").transpose(1, 2)
            pos = torch.cat([pos[:, :1], frames], dim=1)
        return self.norm(self.temporal(tokens + pos)[:, 0])


@register_video_model(clip=CLIP_CLIP, pretrained_lr=False, tiny=TINY_TOWER, weights=CLIP_WEIGHTS)
def clip_temporal(*, seed: int = 0, weights: str | None = None, dropout: float = 0.1,
                  clip: ClipSpec = CLIP_CLIP, backbone: str = "ViT-B-16", temporal_layers: int = 2,
                  temporal_heads: int | None = None, width: int | None = None, layers: int | None = None,
                  heads: int | None = None, patch: int | None = None,
                  embed_dim: int | None = None, quick_gelu: bool | None = None) -> CLIPTemporal:
    """Frozen CLIP frame tokens and a small trainable temporal transformer over them (StA's idea)."""
    tower, dim = clip_tower(backbone, clip.size or 224, width=width, layers=layers, heads=heads, patch=patch,
                            embed_dim=embed_dim, quick_gelu=quick_gelu)
    return CLIPTemporal(_load_tower(tower, weights), dim, clip.frames, dropout, temporal_layers,
                        temporal_heads)


def trainable(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts by name (what a CLIP member tunes)."""
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}

