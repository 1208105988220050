"""The one model registry: ``register_model``, ``create_model``, ``list_models``, ``get_model_spec``.

Importing this package registers the CPU baselines (``tabular``) and the stacking ensemble
(``stack``); the deep video models (``kind="torch_video"``, input ``"frames"``) and the
embedding models register on the registry's first look-up (``registry.defer``), so that loading
or scoring a tabular detector never imports torch. Their modules import only ``torch``:
torchvision, timm, ``transformers`` and ``pytorchvideo`` load when a model is built.

>>> from fvcflow.models import list_models
>>> list_models("*_s2")
['logreg_s2']
"""

# importing the model modules registers the models; the torch ones on the first look-up
from fvcflow.models import stack, tabular, tiles  # noqa: F401
from fvcflow.models.registry import (
    FEATURE_SETS,
    KINDS,
    Kind,
    ModelSpec,
    create_model,
    defer,
    get_model_spec,
    list_models,
    register_model,
    unregister_model,
)
from fvcflow.models.stack import StackedModel


@defer
def _torch_models() -> None:
    """The deep video models and the embedding models (their modules import torch)."""
    from fvcflow.models import embedding, video_clip, video_pytorchvideo, video_transformers, video_tv  # noqa: F401


__all__ = ["FEATURE_SETS", "KINDS", "Kind", "ModelSpec", "StackedModel", "create_model", "get_model_spec",
           "list_models", "register_model", "unregister_model"]
