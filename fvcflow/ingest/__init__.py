"""Corpora into one video index: adapters, safe fast ZIP extraction, the index writer.

- :func:`ingest` (``fvcflow.ingest.index``): any corpus -> ``index/videos.parquet`` + failures.
- :func:`extract_zip` (``fvcflow.ingest.archive``): streaming, resumable, refuses unsafe archives.
- adapters: ``fvc`` (+ ``fvc_meta``), ``ffpp``, ``celebdf``, ``dfdc``, ``folder``. The demo corpus is
  made by :mod:`fvcflow.demo` and ingested with the ``folder`` adapter.
"""

from fvcflow.ingest.archive import ExtractResult, extract_zip, is_encrypted, verify_password
from fvcflow.ingest.index import INDEX_SCHEMA, KINDS, IngestSummary, ingest

__all__ = ["ingest", "IngestSummary", "INDEX_SCHEMA", "KINDS", "extract_zip", "ExtractResult",
           "verify_password", "is_encrypted"]
