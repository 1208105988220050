"""The ingest stage as the pipeline runs it: build the demo corpus when asked, then index a corpus."""

from __future__ import annotations

import os

from fvcflow.config import Settings
from fvcflow.demo.corpus import make_demo_corpus
from fvcflow.ingest.index import IngestSummary, ingest
from fvcflow.store import Lake


def ingest_corpus(settings: Settings) -> IngestSummary:
    """Index ``settings.corpus`` into the work dir; the FVC archive password comes from the
    environment (``FVC_ZIP_PASSWORD``), never from a parameter."""
    lake = Lake.at(settings.home)
    corpus = settings.corpus
    if corpus.kind == "demo":
        root = corpus.root or lake.root / "demo-corpus"
        make_demo_corpus(root, small=corpus.demo_small)
        return ingest("folder", root, lake, labels=root / "labels.csv", source="demo",
                      workers=settings.n_workers())
    password = os.environ.get("FVC_ZIP_PASSWORD")
    return ingest(corpus.kind, corpus.root, lake, labels=corpus.labels,
                  password=password.encode() if password else None, workers=settings.n_workers())
