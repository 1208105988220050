"""The code of every model fvcflow logs (MLflow models-from-code): the model is built at load
from the ``fvc_model`` artifact by :func:`fvcflow.saved.format.load_folder`, never unpickled, and
takes feature rows, clip batches, or videos (``path``, ``video_b64``: :mod:`fvcflow.detector.serving`).

``fvc predict`` does not run this file from a model folder: it calls the same loader itself
(:func:`fvcflow.saved.format.load_logged`).
"""

from mlflow.models import set_model

from fvcflow.detector.serving import ServedDetector

set_model(ServedDetector())
