"""Logged models as safe parts (no pickle): :mod:`fvcflow.saved.format` writes and reads them,
:mod:`fvcflow.saved.pyfunc_model` was the code of their MLflow pyfunc (models-from-code) before
:mod:`fvcflow.detector.pyfunc_model`, which also takes videos."""

from fvcflow.saved.format import (
    FORMAT,
    MARKER,
    VIDEO_INPUTS,
    OlderFormat,
    load_folder,
    load_logged,
    log_model,
    save_folder,
)

__all__ = ["FORMAT", "MARKER", "VIDEO_INPUTS", "OlderFormat", "load_folder", "load_logged", "log_model",
           "save_folder"]
