"""Which models a training run fits: the base models, then the stacks over them."""

from __future__ import annotations

from dataclasses import dataclass, field

from fvcflow.models import get_model_spec
from fvcflow.store import Lake
from fvcflow.training.config import TrainConfig
from fvcflow.training.run import select_models


@dataclass
class ModelPlan:
    base: list[str]                      # fitted first, in any order (one task each)
    stacks: list[str]                    # fitted over the base models' out-of-fold predictions
    skipped: dict[str, str] = field(default_factory=dict)   # model -> why


def plan_models(lake: Lake, cfg: TrainConfig) -> ModelPlan:
    """Split the models ``cfg.models`` selects into base models and stacks; say what is skipped.

    >>> plan_models(Lake.at("fvc-data"), TrainConfig(models="logreg_*")).stacks   # doctest: +SKIP
    []
    """
    names, skipped = select_models(lake, cfg)
    base = [n for n in names if get_model_spec(n).kind != "stack"]
    stacks = [n for n in names if get_model_spec(n).kind == "stack"]
    if stacks and len(base) < 2:
        skipped.update({n: f"needs at least two base models, {len(base)} selected" for n in stacks})
        stacks = []
    return ModelPlan(base, stacks, dict(skipped))
