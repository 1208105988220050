"""``TrainConfig``: every setting of stage 5 (splits, cross-validation, models, tracking).

A bad value raises :class:`fvcflow.errors.ConfigError` naming the setting (through
:meth:`TrainConfig.make`, or through ``fvcflow.config.Settings`` which embeds this model).

>>> cfg = TrainConfig.make(folds=3, models="logreg_*")
>>> cfg.folds, cfg.models
(3, 'logreg_*')
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fvcflow.errors import ConfigError

#: the MLflow registered model the best detector becomes a version of (``fvc predict``'s default)
REGISTERED_NAME = "fvc-detector"


class DeepConfig(BaseModel):
    """Settings of the deep video models (``train.deep.*``): one loop for every torch model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: CUDA when present")
    epochs: int = Field(20, ge=1, le=1000, description="most epochs per fold (early stopping ends sooner)")
    patience: int = Field(5, ge=1, le=100,
                          description="epochs without a better validation loss before stopping")
    batch_size: int = Field(8, ge=1, le=1024, description="clips per step")
    effective_batch: int | None = Field(None, ge=1, le=65536,
                                        description="clips per optimiser step (gradient accumulation); "
                                                    "default batch_size")
    lr: float = Field(1e-4, gt=0, lt=1, description="learning rate from scratch (random weights)")
    backbone_lr: float = Field(5e-6, gt=0, lt=1, description="backbone learning rate with pretrained weights")
    head_lr: float = Field(5e-4, gt=0, lt=1, description="head learning rate with pretrained weights")
    weight_decay: float = Field(1e-4, ge=0, lt=1, description="AdamW weight decay")
    val_fraction: float = Field(0.2, gt=0, lt=0.9,
                                description="grouped share of each training set held out for early stopping")
    workers: int = Field(2, ge=0, le=64, description="DataLoader worker processes (0: in the trainer)")
    weights: dict[str, str] = Field(default_factory=dict,
                                    description="per model: 'none' (random init) or a local checkpoint path")
    clip: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per model ClipSpec overrides (frames, clips, stride, size)")
    cache: bool = Field(True, description="cache decoded clips on disk (content-addressed)")
    inner_oof: Literal["auto", "on", "off"] = Field(
        "auto", description="nested inner CV of each deep model's training folds (inner_folds more fits per "
                            "fold), so the ensembles can use it; auto: when a stack model is selected")


class TrainConfig(BaseModel):
    """Settings of the training stage; the defaults suit the demo corpus on 2 cores."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    folds: int = Field(5, ge=2, le=50, description="outer stratified group k-fold")
    test_size: float = Field(0.2, ge=0.0, lt=0.9,
                             description="grouped hold-out test fraction when the corpus has no "
                                         "official test split (0: no hold-out)")
    use_official_split: bool = Field(True, description="rows with split == 'test' form the test set")
    inner_folds: int = Field(3, ge=2, le=10, description="grouped inner CV for the grid and the stack")
    seed: int = Field(0, description="seed of splits and models")
    models: str = Field("*", description="comma-separated fnmatch patterns over registered model names")
    n_jobs: int = Field(1, ge=1, le=256, description="threads a boosting model may use (1 is fastest "
                                                     "on demo-sized tables; raise it for large corpora)")
    corr_threshold: float = Field(0.95, gt=0.0, le=1.0,
                                  description="drop a feature whose |Pearson r| with a kept one exceeds this")
    grids: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict, description="per-model grid replacing the registered one")
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-model constructor keyword arguments")
    use_augmented: bool = Field(True, description="train on augmented copies (never evaluated on them)")
    experiment: str = Field("fvc", min_length=1, description="MLflow experiment")
    registered_name: str = Field(REGISTERED_NAME, min_length=1, description="MLflow registered model")
    register_best: bool = Field(True, description="register the best model by out-of-fold AUC")
    report: bool = Field(True, description="write stage5/report.html")
    shortcut_check: bool = Field(True, description="cross-validate the best tabular model again on the "
                                                   "codec/container cues alone (report, model card)")
    tracking_uri: str | None = Field(None,
                                     description="MLflow tracking URI; default the work dir's SQLite store")
    reuse_splits: bool = Field(False, description="train on the lake's existing stage5/splits.parquet "
                                                  "(fvc/train-deep) instead of remaking it")
    kinds: list[str] | None = Field(None, description="train only models of these kinds (fvc/train-deep: "
                                                      "['torch_video']); a kind named here is matched by '*'")
    deep: DeepConfig = Field(default_factory=DeepConfig)

    @field_validator("models")
    @classmethod
    def _patterns(cls, v: str) -> str:
        if not [p for p in v.split(",") if p.strip()]:
            raise ValueError("needs at least one pattern, e.g. '*' or 'logreg_*,xgb_*'")
        return v

    @field_validator("tracking_uri")
    @classmethod
    def _no_file_store(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("file:") or "://" not in v):
            raise ValueError("must be a database or server URI (sqlite:///..., http://...); "
                             "the MLflow file store is not used")
        return v

    def patterns(self) -> list[str]:
        """The model name patterns, stripped."""
        return [p.strip() for p in self.models.split(",") if p.strip()]

    @classmethod
    def make(cls, **kw: Any) -> "TrainConfig":
        """Validate keyword settings; a bad one raises ConfigError naming it.

        >>> TrainConfig.make(folds=1)
        Traceback (most recent call last):
        ...
        fvcflow.errors.ConfigError: setting 'train.folds': Input should be greater than or equal to 2 (got 1)
        """
        try:
            return cls(**kw)
        except ValidationError as exc:
            raise ConfigError("; ".join(
                f"setting 'train.{'.'.join(str(p) for p in e['loc'])}': {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors())) from None


#: TrainConfig fields with an ``fvc train`` flag, and how the flag is written
TRAIN_FLAGS = {"models": "--models PATTERNS", "folds": "--folds N", "inner_folds": "--inner-folds N",
               "test_size": "--test-size F", "seed": "--seed N"}


def setting_hint(field: str) -> str:
    """How a user sets ``train.<field>`` from any command: the ``fvc train`` flag where there is one,
    and the settings file (``--config``) always.

    >>> setting_hint("inner_folds")
    'fvc train --inner-folds N, or inner_folds under [train] in the --config file'
    """
    in_file = f"{field} under [train] in the --config file"
    return f"fvc train {TRAIN_FLAGS[field]}, or {in_file}" if field in TRAIN_FLAGS else in_file
