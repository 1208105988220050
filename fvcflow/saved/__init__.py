"""Logged models as safe parts (no pickle): :mod:`fvcflow.saved.format` writes and reads them,
:mod:`fvcflow.saved.pyfunc_model` is the code of their MLflow pyfunc (models-from-code)."""

from fvcflow.saved.format import FORMAT, MARKER, OlderFormat, load_folder, load_logged, log_model, save_folder

__all__ = ["FORMAT", "MARKER", "OlderFormat", "load_folder", "load_logged", "log_model", "save_folder"]
