"""The one model registry: ``register_model``, ``create_model``, ``list_models``, ``get_model_spec``.

Importing this package registers the CPU baselines (``tabular``) and the stacking ensemble
(``stack``), and the deep video models (``kind="torch_video"``, input ``"frames"``), whose
modules import only ``torch``: torchvision, timm, ``transformers`` and ``pytorchvideo`` load when
a model is built.

>>> from fvcflow.models import list_models
>>> list_models("*_s2")
['logreg_s2']
"""

# importing the model modules registers the models
from fvcflow.models import (  # noqa: F401
    embedding,
    stack,
    tabular,
    tiles,
    video_clip,
    video_pytorchvideo,
    video_transformers,
    video_tv,
)
from fvcflow.models.registry import (
    FEATURE_SETS,
    KINDS,
    Kind,
    ModelSpec,
    create_model,
    get_model_spec,
    list_models,
    register_model,
    unregister_model,
)
from fvcflow.models.stack import StackedModel

__all__ = ["FEATURE_SETS", "KINDS", "Kind", "ModelSpec", "StackedModel", "create_model", "get_model_spec",
           "list_models", "register_model", "unregister_model"]
