"""Deep video models: clip sampling and caching, the torch Dataset, one training loop, export.

Modules: :mod:`~fvcflow.deep.clips` (which frames, decoded once and cached),
:mod:`~fvcflow.deep.data` (``Dataset``/``DataLoader``, augmentation, normalisation),
:mod:`~fvcflow.deep.loop` (cross-validation of one torch model), :mod:`~fvcflow.deep.export`
(the MLflow ``pytorch`` logger and loader), :mod:`~fvcflow.deep.device`. torch is imported by
these modules only, so the tabular path never pays for it.
"""
