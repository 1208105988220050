"""Fitting: leakage-free splits, the training tables, grouped cross-validation, the resume cache's
users, stacking and one trainer per model kind. Imports nothing of tracking or evidence: a trainer
returns a :class:`~fvcflow.training.fitting.results.ModelResult` and the caller logs it."""
