"""XGBoost on frozen deep embeddings (kind ``embedding``, seeds 5f-5j), and the ViT-per-frame backbone.

Each model names its backbone (a registered deep video model) in ``extra["backbone"]``; the
trainer (:mod:`fvcflow.training.fitting.embedding`) embeds every video once with that frozen backbone
(:mod:`fvcflow.deep.embeddings`, its weights from ``train.deep.weights[backbone]``, its clips
from ``train.deep.clip[backbone]``, its keywords from ``train.params[backbone]``) and fits the
estimator by the tabular trainer's cross-validation on the embedding columns.

>>> from fvcflow.models import get_model_spec
>>> get_model_spec("emb_xgb_r2plus1d").extra["backbone"]
'r2plus1d_18'
"""

from __future__ import annotations

from fvcflow.models.registry import register_model
from fvcflow.models.select import SCREEN_PATH
from fvcflow.models.tabular import BOOST_ROUNDS, xgb_s24
from fvcflow.models.torch_common import ClipSpec, VideoClassifier, register_video_model
from fvcflow.models.video_tv import CLIP_FRAMES, VIT_S_WEIGHTS, FramePooled, _vit

#: backbone of each embedding model (seed codes 5f-5j)
BACKBONES = {
    "emb_xgb_inception": "inception_v3_frames",   # 5f
    "emb_xgb_i3d": "i3d_r50",                     # 5g
    "emb_xgb_r2plus1d": "r2plus1d_18",            # 5h
    "emb_xgb_vit": "vit_small_frames",            # 5i
    "emb_xgb_vit_gru": "vit_gru_small",           # 5j
    "emb_xgb_clip": "clip_ln",                    # frozen CLIP frame embeddings (mean over the clip)
}


@register_video_model(clip=CLIP_FRAMES, weights=VIT_S_WEIGHTS,
                      tiny={"params": {"embed_dim": 64, "depth": 2, "heads": 2, "patch": 8}})
def vit_small_frames(*, seed: int = 0, weights: str | None = None, dropout: float = 0.5,
                     clip: ClipSpec = CLIP_FRAMES, embed_dim: int = 384, depth: int = 12, heads: int = 6,
                     patch: int = 16) -> VideoClassifier:
    """timm ViT-S/16 on every frame, temporal average pooling (the ViT of the embedding models)."""
    return FramePooled(_vit(clip, weights, embed_dim, depth, heads, patch), embed_dim, dropout)


def _register(name: str, backbone: str) -> None:
    def constructor(*, seed: int = 0, n_jobs: int = 1, max_depth: int = 3, n_estimators: int = 300,
                    learning_rate: float = 0.1, early_stopping_rounds: int | None = BOOST_ROUNDS,
                    k: int | None = None):
        return xgb_s24(seed=seed, n_jobs=n_jobs, max_depth=max_depth, n_estimators=n_estimators,
                       learning_rate=learning_rate, early_stopping_rounds=early_stopping_rounds, k=k)

    constructor.__name__ = name
    constructor.__doc__ = f"XGBoost on the frozen {backbone} embedding of each video (mean over its clips)."
    # screened and regularised on grouped inner folds like xgb_s24 (issue 22): embeddings have
    # hundreds of columns
    register_model(kind="embedding", grid={"k": SCREEN_PATH, "max_depth": (3, 1)}, mlflow_flavor="pyfunc",
                   extra={"backbone": backbone, "ci_params": {"n_estimators": 30}})(constructor)


for _name, _backbone in BACKBONES.items():
    _register(_name, _backbone)
