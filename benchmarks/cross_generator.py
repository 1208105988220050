"""The cross-manipulation protocol of issue 22 on the demo corpus, in one run.

Two demo corpora that share no real video (generator a with ``--seed``, generator b with
``--seed + 1``) go through the same stages with the same settings (ingest, stage 1 with
``augment.self_blend`` pseudo-fakes and no augmented copies, stage 2 with the local features);
then :func:`fvcflow.training.fitting.crosscorpus.cross_corpus` trains on one and evaluates on
the other, A -> B and B -> A, each model (``xgb_s2l``: no tile evidence, ``xgb_s2lt``: with it)
with and without the pseudo-fakes: ROC AUC with its 95 % grouped bootstrap interval, the fit
time and the tile models' fit time. It also times stage 1 with ``self_blend`` = 2 against 0 on
corpus A (the copies' cost per real video: ``benchmarks/self_blend.py``). Prints the load
average it ran at. Run from the repository root::

    .venv/bin/python -m benchmarks.cross_generator [--root DIR] [--sources 20] [--full] [--self-blend 2]
        [--copies 2]

Nothing here is tuned to the demo: default settings, the registered grids.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import polars as pl

from fvcflow.config import Settings, TrainConfig
from fvcflow.demo.corpus import make_demo_corpus
from fvcflow.ingest import ingest
from fvcflow.models import get_model_spec
from fvcflow.stages import runner
from fvcflow.store import Lake
from fvcflow.training import run  # noqa: F401  (registers every kind's trainer)
from fvcflow.training.fitting.crosscorpus import cross_corpus
from fvcflow.training.fitting.splits import make_splits
from fvcflow.training.fitting.trainers import TRAINERS


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores"


def prepare(root: Path, generator: str, seed: int, n_sources: int, small: bool,
            self_blend: int) -> tuple[Lake, dict]:
    """A demo corpus through ingest, stage 1 and stage 2; the seconds each stage took."""
    corpus = make_demo_corpus(root / f"corpus-{generator}", seed=seed, n_sources=n_sources, small=small,
                              generator=generator)
    s = Settings(home=root / f"home-{generator}", workers=1,
                 augment={"copies": 0, "self_blend": self_blend}).resolved()
    ingest("folder", corpus.root, s.lake(), labels=corpus.root / "labels.csv", workers=1)
    took = {}
    for stage in ("augment", "features"):
        t0 = time.perf_counter()
        runner.run_local(stage, s)
        took[stage] = time.perf_counter() - t0
    return s.lake(), took


def stage1_cost(root: Path, copies: int, k: int) -> tuple[float, float]:
    """Seconds of stage 1 on corpus A with ``copies`` augmented copies and ``self_blend`` = 0, = ``k``."""
    out = []
    for blend in (0, k):
        shutil.rmtree(root / f"cost-{copies}-{blend}", ignore_errors=True)     # measured from nothing
        s = Settings(home=root / f"cost-{copies}-{blend}", workers=1,
                     augment={"copies": copies, "self_blend": blend}).resolved()
        ingest("folder", root / "corpus-a", s.lake(), labels=root / "corpus-a" / "labels.csv", workers=1)
        t0 = time.perf_counter()
        runner.run_local("augment", s)
        out.append(time.perf_counter() - t0)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="bench-cross-generator")
    ap.add_argument("--sources", type=int, default=20)
    ap.add_argument("--full", action="store_true", help="full-size clips (default: the small ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--self-blend", type=int, default=2)
    ap.add_argument("--copies", type=int, default=2, help="augmented copies in the stage 1 cost (default 2)")
    ap.add_argument("--no-cv", action="store_true", help="leave out the 5-fold CV of corpus a")
    a = ap.parse_args()
    root = Path(a.root).resolve()
    print(f"start: {load()}")
    lakes = {}
    for gen, seed in (("a", a.seed), ("b", a.seed + 1)):
        lakes[gen], took = prepare(root, gen, seed, a.sources, not a.full, a.self_blend)
        n = pl.read_parquet(lakes[gen].index).height
        print(f"corpus {gen}: {n} videos, stage 1 {took['augment']:.1f} s, stage 2 {took['features']:.1f} s "
              f"({load()})")
    cfg = TrainConfig(test_size=0)
    for gen in lakes:
        make_splits(lakes[gen], cfg)
    for src, dst in (("a", "b"), ("b", "a")):
        table = cross_corpus(lakes[src], lakes[dst], cfg)
        for r in table.iter_rows(named=True):
            auc = ("n/a" if r["roc_auc"] != r["roc_auc"] else
                   f"{r['roc_auc']:.3f} [{r['roc_auc_lo']:.3f}, {r['roc_auc_hi']:.3f}]")
            print(f"train {src} -> evaluate {dst}: {r['model']:9s} pseudo-fakes "
                  f"{'with   ' if r['pseudo_fakes'] else 'without'} AUC {auc} (n_train {r['n_train']}, "
                  f"n_eval {r['n_eval']}; fit {r['fit_s']:.1f} s, tile models {r['tile_fit_s']:.1f} s)"
                  + (f" note: {r['note']}" if r["note"] else ""))
        print(f"({load()})")
    for name in () if a.no_cv else ("xgb_s2l", "xgb_s2lt"):   # corpus a's 5-fold CV: the tile models' share
        spec = get_model_spec(name)
        r = TRAINERS[spec.kind](lakes["a"], spec, cfg, [], lambda result: result)
        lo, hi = (r.intervals.get(f"oof_roc_auc_{end}", float("nan")) for end in ("lo", "hi"))
        tiles = (f", of which {r.tags['fvc.tile_model_fits']} tile model fits "
                 f"{r.tags['fvc.tile_model_seconds']} s" if r.tags else "")
        print(f"CV on corpus a: {name:9s} OOF AUC {r.oof_metrics['roc_auc']:.3f} [{lo:.3f}, {hi:.3f}], "
              f"fit {r.fit_seconds:.1f} s{tiles} ({load()})")
    zero, k = stage1_cost(root, a.copies, a.self_blend)
    print(f"stage 1 on corpus a with {a.copies} augmented copies: self_blend 0 {zero:.1f} s, self_blend "
          f"{a.self_blend} {k:.1f} s, ratio {k / zero:.2f}x ({load()})")


if __name__ == "__main__":
    main()
