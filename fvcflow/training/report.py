"""``stage5/report.html``: the leaderboard, ROC curves, and the features that separate the classes.

Every number comes from the run (the results and the lake's tables); images are PNG files in
``stage5/report/`` next to the HTML. It is part of stage 5 (``finish`` writes it), so it lives in
``fvcflow.training``: nothing outside the package imports training's internals back.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from fvcflow.local_report import local_section
from fvcflow.store import Lake, read_parquet
from fvcflow.training import evidence, plots
from fvcflow.training.data import feature_set_columns, load_features, missing_for
from fvcflow.training.results import TrainSummary


def _training_originals(lake: Lake) -> tuple[pl.DataFrame, list[str]]:
    """Features of the labelled training originals (never the test set), and the feature columns."""
    splits = read_parquet(lake.splits)
    if splits is None or not lake.stage2.exists():
        return pl.DataFrame(), []
    fs = next(f for f in ("s24l", "s2lf", "s2l", "s24", "s2") if missing_for(lake, f) is None)
    rows = splits.filter(~pl.col("is_test") & (pl.col("variant") == "original")).select("video_id", "label")
    return rows.join(load_features(lake, fs), on="video_id", how="inner"), feature_set_columns(fs)


def feature_separation(lake: Lake) -> pl.DataFrame:
    """Single-feature ROC AUC of every feature on the training originals, most separating first.

    ``separation`` is ``|auc - 0.5|``: a feature is useful whichever direction it points.

    >>> feature_separation(Lake.at("fvc-data")).head(3)     # doctest: +SKIP
    """
    df, cols = _training_originals(lake)
    rows = []
    for c in cols:
        part = df.select(c, "label").drop_nulls().filter(pl.col(c).is_not_nan())
        y = part["label"].to_numpy()
        if np.unique(y).size == 2 and part[c].n_unique() > 1:
            auc = float(roc_auc_score(y, part[c].to_numpy()))
            rows.append({"feature": c, "auc": auc, "separation": abs(auc - 0.5), "n": part.height})
    schema = {"feature": pl.Utf8, "auc": pl.Float64, "separation": pl.Float64, "n": pl.Int64}
    return pl.DataFrame(rows, schema=schema).sort("separation", descending=True)


def _save(fig, path: Path) -> str:
    fig.savefig(path)
    return path.name


def _table(df: pl.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3f}"
        return html.escape(str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in df.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(lake: Lake, summary: TrainSummary, *, top: int = 6) -> Path:
    """Write ``stage5/report.html`` and its images; returns the HTML path."""
    img_dir = lake.stage5 / "report"
    img_dir.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, str]] = []
    for split, title in (("oof", "out-of-fold"), ("test", "hold-out test")):
        curves = {}
        for r in summary.results:
            part = r.predictions.filter(pl.col("split") == split)
            if part.height:
                curves[r.name] = (part["label"].to_numpy(), part["prob_fake"].to_numpy())
        if curves:
            images.append((f"ROC, {title}",
                           _save(plots.roc_figure(curves, f"ROC, {title}"), img_dir / f"roc_{split}.png")))
    sep = summary.top_features
    if sep.height:
        bars = sep.head(20).select("feature", pl.col("separation").alias("importance"),
                                   pl.lit("|AUC - 0.5|").alias("method"))
        images.append(("Single-feature separation",
                       _save(plots.importance_figure(bars, title="single-feature separation"),
                                                          img_dir / "feature_separation.png")))
        df, _ = _training_originals(lake)
        dist = {f: (df.filter(pl.col("label") == 0)[f].to_numpy(),
                    df.filter(pl.col("label") == 1)[f].to_numpy())
                for f in sep["feature"].head(top).to_list()}
        images.append(("Class-conditional distributions of the most separating features",
                       _save(plots.distribution_figure(dist), img_dir / "distributions.png")))
    board = summary.leaderboard.drop("run_id", strict=False)
    reg = (f"<p>Registered as <code>{html.escape(summary.registered_name)}</code> version "
           f"{html.escape(str(summary.registered_version))}.</p>" if summary.registered_version else "")
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>fvcflow training report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px "
             "6px;text-align:right}img{max-width:100%}</style></head><body>",
             "<h1>fvcflow training report</h1>",
             f"<p>Best by out-of-fold ROC AUC: <b>{html.escape(str(summary.best))}</b>.</p>", reg,
             "<h2>Leaderboard</h2>", _table(board)]
    parts += evidence.report_sections(lake, summary, img_dir)   # intervals, calibration, shortcut, card
    if sep.height:
        parts += ["<h2>Features that separate the classes best (training originals)</h2>",
                  _table(sep.head(20))]
    if summary.skipped:
        parts += ["<h2>Skipped models</h2><ul>"] + [f"<li><code>{html.escape(k)}</code>: "
                                                    f"{html.escape(v)}</li>"
                                                   for k, v in summary.skipped.items()] + ["</ul>"]
    for title, name in images:
        parts += [f"<h2>{html.escape(title)}</h2>", f"<img src='report/{name}' alt='{html.escape(title)}'>"]
    best = next((r for r in summary.results if r.name == summary.best), None)
    if best is not None:                          # issue 13: deviant tiles of the top-scored videos
        parts.append(local_section(lake, best.predictions, best.name, img_dir))
    parts.append("</body></html>")
    out = lake.stage5 / "report.html"
    out.write_text("\n".join(parts))
    return out
