"""The exploration's figures are drawn once per content: a rerun (``fvc run`` draws the page after
every run) and the training report's corpus section reuse the PNGs drawn from the same tables, and
a change of the tables draws them again."""

from __future__ import annotations

import polars as pl

from fvcflow.explore import FIGURES_META, analyse, explore
from fvcflow.ingest.index import ingest
from fvcflow.store import Lake, write_parquet_atomic
from tests.corpus import make_tiny_corpus


def _stamps(images: dict) -> dict:
    return {title: (p.name, p.stat().st_mtime_ns, p.read_bytes()) for title, p in images.items()}


def test_figures_are_reused_for_the_same_tables_copied_to_the_report_and_redrawn_after_a_change(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus")
    lake = Lake.at(tmp_path / "fvc-data")
    ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=1)

    first = explore(lake)
    assert "Failures by reason" in first.images and (lake.explore / FIGURES_META).is_file()
    drawn = _stamps(first.images)
    again = explore(lake)                                   # same tables: nothing is drawn again
    assert _stamps(again.images) == drawn

    report_dir = tmp_path / "report"                        # the report's section: copies of the same files
    section = analyse(lake, report_dir)
    assert {t: p.parent for t, p in section.images.items()} == {t: report_dir for t in drawn}
    assert {t: p.read_bytes() for t, p in section.images.items()} == {t: v[2] for t, v in drawn.items()}

    failures = pl.read_parquet(lake.failures)               # the tables change: drawn again, here and there
    write_parquet_atomic(failures.head(0), lake.failures)
    changed = explore(lake)
    assert "Failures by reason" not in changed.images
    assert all(changed.images[t].stat().st_mtime_ns != drawn[t][1] for t in changed.images)
    assert set(analyse(lake, report_dir).images) == set(changed.images)
