"""The tile model and the models on the learned tile evidence (issue 22, part 2).

:func:`tile_booster` is the tile-level model: gradient-boosted trees (XGBoost, hist) on each
tile's statistics and their deviation from the rest of its frame
(:data:`fvcflow.stages.tiles.TILE_FEATURES`), fitted class-balanced (``pos_weight``: clean over
blended tiles) by the per-fold hook :class:`fvcflow.training.fitting.tiles.TileEvidence`.

``xgb_s2lt`` and ``logreg_s2lt`` are ``xgb_s2l`` and ``logreg_s2l`` on the feature set ``s2lt``
(``s2l`` + the ``te_`` summaries of the tile scores). They are of kind ``tile``: their trainer
builds the ``te_`` columns inside every fold, and reads the tile tables of the videos, so they
train only when named (``fvc train --models '*_s2lt'``).

>>> from fvcflow.models import list_models
>>> list_models("*_s2lt")
['logreg_s2lt', 'xgb_s2lt']
"""

from __future__ import annotations

from fvcflow.models.registry import register_model
from fvcflow.models.select import SCREEN_PATH
from fvcflow.models.tabular import LINEAR_GRID, logreg_s2l, xgb_s2l


def tile_booster(*, seed: int = 0, n_jobs: int = 1, pos_weight: float = 1.0, n_estimators: int = 150,
                 max_depth: int = 4, learning_rate: float = 0.1):
    """The tile model: XGBoost (hist) on the tile columns, ``pos_weight`` on the blended class.

    >>> tile_booster(pos_weight=9.0).get_params()["scale_pos_weight"]
    9.0
    """
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                         subsample=0.8, colsample_bytree=0.8, min_child_weight=5.0, tree_method="hist",
                         scale_pos_weight=pos_weight, n_jobs=n_jobs, random_state=seed,
                         eval_metric="logloss", verbosity=0)


@register_model(kind="tile", feature_set="s2lt", needs_scaling=True, grid=LINEAR_GRID)
def logreg_s2lt(**kw):
    """logreg_s2l on s2l + the learned tile evidence (te_ columns, built inside each fold)."""
    return logreg_s2l(**kw)


@register_model(kind="tile", feature_set="s2lt", grid={"k": SCREEN_PATH, "max_depth": (3, 1)},
                extra={"ci_params": {"n_estimators": 30}})
def xgb_s2lt(**kw):
    """xgb_s2l on s2l + the learned tile evidence (te_ columns, built inside each fold)."""
    return xgb_s2l(**kw)
