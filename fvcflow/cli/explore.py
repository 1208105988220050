"""``fvc explore``: the corpus before any model, and whether its encoding alone gives the labels away."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``explore`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("explore", help="describe the indexed corpus; could encoding alone separate it?",
                       description="From the work dir's index and failures: class balance by source, "
                                   "resolution, duration/fps/bit-rate/codec distributions by label, group "
                                   "sizes and duplicates, failures by reason, and the ROC AUC of each codec/"
                                   "container cue alone. Writes <home>/explore/explore.html and its figures.")
    p.add_argument("--out", default=None, help="output folder (default <home>/explore)")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from fvcflow.explore import explore
    from fvcflow.store import Lake

    ex = explore(Lake.at(args.home), args.out)
    console = Console()
    console.print(ex.verdict.replace("**", ""), markup=False, highlight=False)
    t = Table(title="single-cue ROC AUC (labelled originals)", title_justify="left")
    for col in ("cue", "kind", "auc", "n"):
        t.add_column(col, justify="left" if col in ("cue", "kind") else "right")
    for r in ex.cues.iter_rows(named=True):
        t.add_row(r["cue"], r["kind"], "n/a" if r["auc"] is None else f"{r['auc']:.3f}", str(r["n"]))
    console.print(t)
    if ex.faces.height:
        f = Table(title="faces by label (the faces stage)", title_justify="left")
        for col in ex.faces.columns:
            f.add_column(col, justify="left" if col == "label" else "right")
        for r in ex.faces.iter_rows():
            f.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r])
        console.print(f)
        console.print(ex.faces_verdict, markup=False, highlight=False)
    b = ex.balance
    failed = int(ex.failures["videos"].sum()) if ex.failures.height else 0
    console.print(f"{int(b['videos'].sum())} videos: {int(b['real'].sum())} real, {int(b['fake'].sum())} "
                  f"fake, {int(b['unlabelled'].sum())} unlabelled; {ex.groups['groups']} groups; "
                  f"{failed} failures", markup=False, highlight=False)
    print(f"page: {ex.path}")
    return 0
