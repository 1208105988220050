"""Tracking: MLflow runs, models, the registry (:mod:`.runs`) and the figures they carry (:mod:`.plots`).
Above fitting (it logs a ``ModelResult``), below evidence (which registers the calibrated detector)."""
