"""``fvc app``: a small web page for an analyst (:mod:`fvcflow.app.web`)."""
