"""``stage5/report.html``: what a user looks for after training, one ``<section>`` each.

Summary, leaderboard, ROC and precision-recall curves, confusion matrices at the equal-error-rate
threshold, the spread of ROC AUC over the folds, feature importances of the best tree model,
training time (slowest and fastest models), the ten most confidently wrong hold-out videos with
a frame each, the single features that separate the classes, and the corpus itself
(:mod:`fvcflow.explore`: could encoding alone separate it?).

Every number comes from the run (the results and the lake's tables); images are PNG files in
``stage5/report/`` next to the HTML. Sections from other modules join through
:func:`register_section`: a function ``(lake, summary, img_dir) -> Section | None``. It is part
of stage 5 (``finish`` writes it), so it lives in ``fvcflow.training``: nothing outside the
package imports training's internals back.
"""

from __future__ import annotations

import html
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from fvcflow import explore, fingerprint
from fvcflow.digest import lake_digests
from fvcflow.schema import ORIGINAL
from fvcflow.store import Lake, read_parquet
from fvcflow.training.evidence import assess as evidence
from fvcflow.training.evidence.local_report import local_section
from fvcflow.training.fitting.data import feature_set_columns, load_features, missing_for
from fvcflow.training.fitting.results import ModelResult, TrainSummary
from fvcflow.training.tracking import plots

log = logging.getLogger("fvcflow.report")


def _training_originals(lake: Lake) -> tuple[pl.DataFrame, list[str]]:
    """Features of the labelled training originals (never the test set), and the feature columns."""
    splits = read_parquet(lake.splits)
    if splits is None or not lake.stage2.exists():
        return pl.DataFrame(), []
    fs = next(f for f in ("s24l", "s2lf", "s2l", "s24", "s2") if missing_for(lake, f) is None)
    rows = splits.filter(~pl.col("is_test") & (pl.col("variant") == ORIGINAL)).select("video_id", "label")
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


@dataclass
class Section:
    """One part of the report: ``<section id=...>`` with a title and its HTML."""

    id: str
    title: str
    html: str


SectionFn = Callable[[Lake, TrainSummary, Path], "Section | None"]
#: sections other modules add (interval tables, model card, overlays): (function, id it follows)
EXTRA_SECTIONS: list[tuple[SectionFn, str | None]] = []


def register_section(fn: SectionFn, *, after: str | None = None) -> SectionFn:
    """Add a report section: ``fn(lake, summary, img_dir)`` returns a :class:`Section` (images
    saved into ``img_dir``, referenced as ``report/<file name>``) or None to leave it out. It is
    placed after the section with id ``after`` (default: before the corpus section). Usable as
    a decorator; registering the same function twice keeps one."""
    if all(f is not fn for f, _ in EXTRA_SECTIONS):
        EXTRA_SECTIONS.append((fn, after))
    return fn


def _save(fig, path: Path) -> str:
    fig.savefig(path)
    return path.name


def _cell(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return html.escape("" if v is None else str(v))


def _table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in df.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, title: str) -> str:
    return (f"<figure><img src='report/{html.escape(name)}' alt='{html.escape(title)}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _split(r: ModelResult, split: str) -> tuple[np.ndarray, np.ndarray]:
    part = r.predictions.filter(pl.col("split") == split)
    return part["label"].to_numpy().astype(int), part["prob_fake"].to_numpy().astype(float)


def eer_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The score threshold where the false positive and false negative rates are closest (0.5
    when only one class is present).

    >>> eer_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.7, 0.9]))
    0.7
    """
    from sklearn.metrics import roc_curve

    if np.unique(y).size < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    i = int(np.argmin(np.abs((1 - tpr) - fpr)))
    return float(min(thr[i], 1.0))


def _best(summary: TrainSummary) -> ModelResult | None:
    return next((r for r in summary.results if r.name == summary.best), None)


# built-in sections ---------------------------------------------------------------------------
def _summary_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section:
    best = _best(summary)
    parts = [f"<p>Best by out-of-fold ROC AUC: <b>{html.escape(str(summary.best))}</b>"]
    if best is not None:
        parts.append(f" (out-of-fold {_cell(best.oof_metrics.get('roc_auc', math.nan))}, hold-out test "
                     f"{_cell(best.test_metrics.get('roc_auc', math.nan))}).")
    parts.append(f" {len(summary.results)} models trained.</p>")
    if summary.registered_version:
        parts.append(f"<p>Registered as <code>{html.escape(str(summary.registered_name))}</code> version "
                     f"{html.escape(str(summary.registered_version))}.</p>")
    return Section("summary", "Summary", "".join(parts))


def _leaderboard_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section:
    return Section("leaderboard", "Leaderboard", _table(summary.leaderboard.drop("run_id", strict=False)))


def _evidence_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    parts = evidence.report_sections(lake, summary, img_dir)   # intervals, calibration, shortcut, card
    if not parts:
        return None
    frag = "".join(parts).replace("<h2>", "<h3>").replace("</h2>", "</h3>")
    return Section("evidence", "Uncertainty, calibration, shortcuts and the model card", frag)


def _curves_section(kind: str, title: str, figure) -> SectionFn:
    def section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
        imgs = []
        for split, name in (("oof", "out-of-fold"), ("test", "hold-out test")):
            curves = {r.name: _split(r, split) for r in summary.results}
            curves = {k: v for k, v in curves.items() if v[0].size}
            if curves:
                imgs.append(_img(_save(figure(curves, f"{title}, {name}"), img_dir / f"{kind}_{split}.png"),
                                 f"{title}, {name}"))
        return Section(kind, title, "".join(imgs)) if imgs else None
    return section


def _confusion_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    best = _best(summary)
    if best is None:
        return None
    y, p = _split(best, "oof")
    thr = eer_threshold(y, p)
    imgs = [f"<p>{html.escape(best.name)} at the threshold of its out-of-fold equal error rate, "
            f"P(fake) &ge; {thr:.3f} (chosen on the out-of-fold scores, applied to the test set as is).</p>"]
    for split, name in (("oof", "out-of-fold"), ("test", "hold-out test")):
        y, p = _split(best, split)
        if y.size:
            title = f"{best.name}, {name}: p >= {thr:.3f}"
            imgs.append(_img(_save(plots.confusion_figure(y, p, title, threshold=thr),
                                   img_dir / f"confusion_{split}.png"), title))
    return Section("confusion", "Confusion matrices at the equal-error-rate threshold", "".join(imgs))


def _folds_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    spread = {r.name: [m.get("roc_auc", math.nan) for m in r.fold_metrics] for r in summary.results
              if r.fold_metrics}
    if not spread:
        return None
    rows = [{"model": k, "folds": len(v), "min": float(np.nanmin(v)) if np.isfinite(v).any() else math.nan,
             "mean": float(np.nanmean(v)) if np.isfinite(v).any() else math.nan,
             "max": float(np.nanmax(v)) if np.isfinite(v).any() else math.nan,
             "std": float(np.nanstd(v)) if np.isfinite(v).any() else math.nan} for k, v in spread.items()]
    fig = plots.fold_spread_figure(spread)
    return Section("folds", "ROC AUC over the folds",
                   _img(_save(fig, img_dir / "fold_auc.png"), "ROC AUC of each outer fold")
                   + _table(pl.DataFrame(rows)))


def _importance_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    trees = [r for r in summary.results if r.has_importance and r.importance["method"][0] == "model"]
    if not trees:
        return None
    r = max(trees, key=lambda r: np.nan_to_num(r.oof_metrics.get("roc_auc", math.nan), nan=-1.0))
    fig = plots.importance_figure(r.importance, title=f"{r.name}: feature importance")
    return Section("importance", f"Feature importances of the best tree model ({r.name})",
                   _img(_save(fig, img_dir / "importance_best_tree.png"), f"{r.name}: feature importance")
                   + _table(r.importance.head(15)))


def _timing_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    if not summary.results:
        return None
    t = pl.DataFrame([{"model": r.name, "fit_s": r.fit_seconds, "tracking_s": r.log_seconds,
                       "total_s": r.fit_seconds + r.log_seconds,
                       "oof_roc_auc": r.oof_metrics.get("roc_auc", math.nan)} for r in summary.results])
    t = t.sort("total_s", descending=True)
    slow, fast = t.row(0, named=True), t.row(t.height - 1, named=True)
    text = (f"<p>Slowest: <b>{html.escape(slow['model'])}</b> ({slow['total_s']:.1f} s); fastest: "
            f"<b>{html.escape(fast['model'])}</b> ({fast['total_s']:.1f} s). Fit time covers every fold, "
            "the inner grid search and the final refit; tracking is the MLflow logging.</p>")
    return Section("timing", "Training time: slowest and fastest models", text + _table(t))


def _thumbnail(path: str, dst: Path, width: int = 160) -> bool:
    """The first frame of ``path`` as a small PNG at ``dst``; False when it cannot be read."""
    import cv2

    from fvcflow.errors import VideoError
    from fvcflow.video import iter_rgb

    try:
        frame = next(iter(iter_rgb(path, chunk=1)))[0]
    except (VideoError, StopIteration, OSError) as exc:
        log.info("no thumbnail of %s: %s", path, exc)
        return False
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return bool(cv2.imwrite(str(dst), cv2.cvtColor(small, cv2.COLOR_RGB2BGR)))


def face_crop(lake: Lake, video_id: str, path: str, dst: Path, size: int = 112) -> bool:
    """The main face of ``video_id`` (track 0 of the faces stage, at its middle sampled frame)
    aligned as the deep models see it (:func:`fvcflow.stages.facetrack.align_face`), a PNG at
    ``dst``; False without a faces table, a track or a readable frame."""
    import cv2

    from fvcflow.errors import VideoError
    from fvcflow.stages.facetrack import align_face, boxes_at
    from fvcflow.video import read_rgb

    faces = read_parquet(lake.faces)
    row = None if faces is None else faces.filter(pl.col("video_id") == video_id)
    if row is None or not row.height or not row["n_tracks"][0]:
        return False
    try:
        tracks = pl.read_parquet(row["tracks_path"][0])
        main = tracks.filter(pl.col("track") == 0).sort("frame")
        frame = int(main["frame"][main.height // 2])
        _, lm = boxes_at(tracks, 0, [frame])
        rgb = read_rgb(path, [frame])[0][0]
    except (VideoError, OSError) as exc:
        log.info("no face crop of %s: %s", path, exc)
        return False
    return bool(cv2.imwrite(str(dst), cv2.cvtColor(align_face(rgb, lm[0], size), cv2.COLOR_RGB2BGR)))


def confidently_wrong(lake: Lake, result: ModelResult, n: int = 10) -> tuple[pl.DataFrame, str, float]:
    """The ``n`` videos ``result`` got most confidently wrong at its EER threshold: the hold-out
    test when there is one, else the out-of-fold predictions; with the index's path."""
    y, p = _split(result, "oof")
    thr = eer_threshold(y, p)
    split = "test" if result.predictions.filter(pl.col("split") == "test").height else "oof"
    pred = result.predictions.filter(pl.col("split") == split)
    wrong = pred.filter(((pl.col("label") == 1) & (pl.col("prob_fake") < thr))
                        | ((pl.col("label") == 0) & (pl.col("prob_fake") >= thr)))
    wrong = wrong.with_columns(confidence=(pl.col("prob_fake") - pl.col("label").cast(pl.Float64)).abs())
    index = read_parquet(lake.index)
    if index is not None and "path" in index.columns:   # a lake made by a library user may lack it
        wrong = wrong.join(index.select("video_id", "path"), on="video_id", how="left")
    else:
        wrong = wrong.with_columns(path=pl.lit(None, pl.Utf8))
    return wrong.sort("confidence", descending=True).head(n), split, thr


def _wrong_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    best = _best(summary)
    if best is None:
        return None
    wrong, split, thr = confidently_wrong(lake, best)
    where = "hold-out test" if split == "test" else "out-of-fold (there is no hold-out test)"
    head = (f"<p>{html.escape(best.name)}, {where}, threshold P(fake) &ge; {thr:.3f}: {wrong.height} "
            "videos shown, most confident first.</p>")
    if not wrong.height:
        return Section("wrong", "Most confidently wrong videos", head + "<p>No video is wrong.</p>")
    rows = []
    for i, r in enumerate(wrong.iter_rows(named=True)):
        name = f"wrong_{i}.png"
        cell = (f"<img class='thumb' src='report/{name}' alt='frame of {html.escape(r['video_id'])}'>"
                if r["path"] and _thumbnail(r["path"], img_dir / name) else "(no frame)")
        crop = f"face_{i}.png"
        face = (f"<img class='thumb' src='report/{crop}' alt='face of {html.escape(r['video_id'])}'>"
                if r["path"] and face_crop(lake, r["video_id"], r["path"], img_dir / crop) else "(no face)")
        rows.append(f"<tr><td>{cell}</td><td>{face}</td><td class='path'>{html.escape(str(r['path']))}</td>"
                    f"<td>{'fake' if r['label'] == 1 else 'real'}</td><td>{r['prob_fake']:.3f}</td></tr>")
    table = ("<table><thead><tr><th>frame</th><th>face (aligned, track 0)</th><th>path</th><th>label</th>"
             "<th>P(fake)</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    return Section("wrong", "Most confidently wrong videos", head + table)


def _features_section(lake: Lake, summary: TrainSummary, img_dir: Path, top: int = 6) -> Section | None:
    sep = summary.top_features
    if not sep.height:
        return None
    bars = sep.head(20).select("feature", pl.col("separation").alias("importance"),
                               pl.lit("|AUC - 0.5|").alias("method"))
    parts = [_img(_save(plots.importance_figure(bars, title="single-feature separation"),
                        img_dir / "feature_separation.png"), "Single-feature separation")]
    df, _ = _training_originals(lake)
    dist = {f: (df.filter(pl.col("label") == 0)[f].to_numpy(), df.filter(pl.col("label") == 1)[f].to_numpy())
            for f in sep["feature"].head(top).to_list()}
    parts.append(_img(_save(plots.distribution_figure(dist), img_dir / "distributions.png"),
                      "Class-conditional distributions of the most separating features"))
    parts.append(_table(sep.head(20)))
    return Section("features", "Features that separate the classes best (training originals)", "".join(parts))


def _tiles_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    best = _best(summary)   # issue 13: deviant tiles of the top-scored videos
    frag = local_section(lake, best.predictions, best.name, img_dir) if best is not None else ""
    if not frag:
        return None
    frag = re.sub(r"^\s*<h2>[^<]*</h2>", "", frag)   # the section carries its own title
    return Section("tiles", "Where in the frame: deviant tiles of the top-scored videos", frag)


def _cross_corpus_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    table = summary.cross_corpus     # issue 22: train.evaluate_on's ablation
    if table is None or not table.height:
        return None
    frag = ("<p>Trained on this corpus (all its labelled training rows), evaluated on the labelled "
            "originals of another corpus whose features the same settings made: ROC AUC with its 95 % "
            "grouped bootstrap interval, with and without the self-blended pseudo-fakes, with and without "
            "the learned tile evidence (<code>te_</code> columns).</p>"
            + _table(table.drop("train_corpus", "eval_corpus"))
            + f"<p>Evaluated on <code>{html.escape(str(table['eval_corpus'][0]))}</code>.</p>")
    return Section("cross_corpus", "Cross-corpus evaluation: pseudo-fakes and tile evidence", frag)


def _corpus_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    if not lake.index.exists():
        return None
    ex = explore.analyse(lake, img_dir)
    frag = explore.fragment(ex, prefix="report/", level=3, wrap=False)
    return Section("corpus", "The corpus: could encoding alone separate it?", frag)


def _skipped_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    if not summary.skipped:
        return None
    items = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>"
                    for k, v in summary.skipped.items())
    return Section("skipped", "Skipped models", f"<ul>{items}</ul>")


def _environment_section(lake: Lake, summary: TrainSummary, img_dir: Path) -> Section | None:
    digests = summary.digests or lake_digests(lake)
    fp = fingerprint.fingerprint()
    frag = ("<p>The content digest of every table of this run (values only: no timings, no paths) and "
            "the environment that computed them. Two runs that publish the same digests computed the "
            "same numbers; where they differ, the first table that differs is where to look, "
            "<code>python -m fvcflow.digest DIR_A DIR_B</code> names its columns, and the environment "
            "says what differs between the machines (the Numba kernels give the same bits on every CPU; "
            "NumPy, OpenCV and the BLAS pick SIMD code by CPU).</p>"
            + _table(pl.DataFrame({"table": list(digests), "digest": list(digests.values())},
                                  schema={"table": pl.Utf8, "digest": pl.Utf8}))
            + _table(pl.DataFrame({"environment": list(fp), "value": list(fp.values())})))
    return Section("environment", "Reproducibility: table digests and environment", frag)


#: the report's layout, in order
SECTIONS: list[SectionFn] = [
    _summary_section, _leaderboard_section, _evidence_section,
    _curves_section("roc", "ROC curves", plots.roc_figure),
    _curves_section("pr", "Precision-recall curves", plots.pr_figure),
    _confusion_section, _folds_section, _importance_section, _timing_section, _wrong_section,
    _features_section, _tiles_section, _cross_corpus_section, _corpus_section, _skipped_section,
    _environment_section,
]

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}nav a{margin-right:0.8em;font-size:13px}"
         "table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
         "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td.path{text-align:left}"
         "img{max-width:100%}img.thumb{width:160px}figure{display:inline-block;margin:0.5em 1em 0.5em 0;"
         "vertical-align:top}figcaption{font-size:12px;color:#555}.verdict{font-weight:bold}")


def _layout(lake: Lake, summary: TrainSummary, img_dir: Path) -> list[Section]:
    out: list[Section] = []
    for fn in SECTIONS:
        sec = fn(lake, summary, img_dir)
        if sec is not None:
            out.append(sec)
    for fn, after in EXTRA_SECTIONS:
        try:
            sec = fn(lake, summary, img_dir)
        except Exception:  # noqa: BLE001 - one broken extra section must not lose the report
            log.exception("report section %s failed; left out", getattr(fn, "__name__", fn))
            continue
        if sec is None:
            continue
        ids = [s.id for s in out]
        at = ids.index(after) + 1 if after in ids else (ids.index("corpus") if "corpus" in ids else len(out))
        out.insert(at, sec)
    return out


def write_report(lake: Lake, summary: TrainSummary) -> Path:
    """Write ``stage5/report.html`` and its images (``stage5/report/``); returns the HTML path."""
    img_dir = lake.report_images
    img_dir.mkdir(parents=True, exist_ok=True)
    sections = _layout(lake, summary, img_dir)
    nav = "".join(f"<a href='#{s.id}'>{html.escape(s.title.split(':')[0])}</a>" for s in sections)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>fvcflow training report</title>",
             f"<style>{STYLE}</style></head><body>", "<h1>fvcflow training report</h1>", f"<nav>{nav}</nav>"]
    parts += [f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2>\n{s.html}</section>" for s in sections]
    parts.append("</body></html>")
    out = lake.report
    tmp = out.with_name(".report.html.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    return out


# for the Prefect UI (the flow layer turns these into artifacts) --------------------------------
def table_rows(df: pl.DataFrame, digits: int = 4) -> list[dict]:
    """Rows of ``df`` for a table artifact: floats rounded, NaN as None (JSON has no NaN)."""
    def clean(v):
        if isinstance(v, float):
            return None if math.isnan(v) else round(v, digits)
        return v
    return [{k: clean(v) for k, v in row.items()} for row in df.iter_rows(named=True)]


def figures_markdown(summary: TrainSummary) -> str:
    """The report's ROC and precision-recall figures as Markdown, embedded as ``data:`` URIs (the
    Prefect UI cannot read files of the work dir), with the report's path."""
    if summary.report_path is None:
        return "No report was written (train.report is off)."
    img_dir = Path(summary.report_path).parent / "report"
    parts = ["# fvcflow training figures", "", f"Best by out-of-fold ROC AUC: **{summary.best}**. "
             f"Full report: `{summary.report_path}`", ""]
    for name, title in (("roc_oof", "ROC, out-of-fold"), ("roc_test", "ROC, hold-out test"),
                        ("pr_oof", "Precision-recall, out-of-fold"),
                        ("pr_test", "Precision-recall, hold-out test"),
                        ("confusion_oof", "Confusion at the EER threshold, out-of-fold")):
        path = img_dir / f"{name}.png"
        if path.exists():
            parts += [f"## {title}", "", f"![{title}]({explore.data_uri(path)})", ""]
    return "\n".join(parts)
