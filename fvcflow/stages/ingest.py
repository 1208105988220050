"""The ingest stage as the pipeline runs it: build the demo corpus when asked, then index a corpus."""

from __future__ import annotations

from fvcflow.config import Settings
from fvcflow.demo.corpus import make_demo_corpus
from fvcflow.ingest.index import IngestSummary, ingest
from fvcflow.store import Lake


def ingest_corpus(settings: Settings, dask_address: str | None = None) -> IngestSummary:
    """Index ``settings.corpus`` into the work dir; the FVC archives' password is
    ``settings.zip_password`` (from ``FVC_ZIP_PASSWORD``; never serialized with the settings, so a
    flow run adds it with ``settings.with_process_secrets()``). Every video is probed within
    ``settings.limits``: one over a bound is a failure row naming it. The test hold-out is decided
    here by group, with ``train.test_size`` and ``train.seed`` (:mod:`fvcflow.ingest.holdout`). With
    ``dask_address`` (the run's cluster) the videos are probed and hashed on its workers."""
    lake = Lake.at(settings.home)
    corpus = settings.corpus
    common = dict(test_size=settings.train.test_size, seed=settings.train.seed, dask_address=dask_address,
                  limits=settings.limits.video_limits())
    if corpus.kind == "demo":
        root = corpus.root or lake.demo_corpus
        make_demo_corpus(root, small=corpus.demo_small)
        return ingest("folder", root, lake, labels=root / "labels.csv", source="demo",
                      workers=settings.n_workers(), **common)
    return ingest(corpus.kind, corpus.root, lake, labels=corpus.labels, password=settings.password(),
                  workers=settings.n_workers(), **common)
