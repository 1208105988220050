"""OpenCV's bundled Haar frontal-face cascade, loaded once: the face finder of the face features
(:mod:`fvcflow.stages.faces`) and of the demo corpus's face swaps (:mod:`fvcflow.demo.swap`).

opencv-python-headless 4.x ships the cascade file inside the package (``cv2.data``); nothing is
downloaded.

>>> haar_cascade().empty()
False
"""

from __future__ import annotations

from functools import lru_cache

import cv2

from fvcflow.errors import FvcError

#: the cascade file, from ``cv2.data.haarcascades``
CASCADE = "haarcascade_frontalface_default.xml"


@lru_cache(maxsize=1)
def haar_cascade() -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():  # pragma: no cover - a broken OpenCV install
        raise FvcError(f"OpenCV could not load its bundled {CASCADE} (opencv-python-headless 4.x ships it)")
    return cascade
