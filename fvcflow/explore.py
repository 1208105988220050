"""The corpus before any model: what is in it, and could its encoding alone give the labels away?

``explore(lake)`` reads the index and the failures table and writes ``<home>/explore/explore.html``
with its figures (PNG, same folder): class balance by source, a resolution scatter, duration,
frame rate, bit rate and bits-per-pixel distributions by label, codec/container/pixel-format
counts by label, group sizes and exact duplicates, failures by stage and reason. Next to them, a
table of single-cue ROC AUCs for the codec and container cues, and the grouped out-of-fold AUC
of a small model on all of them together: if encoding alone separates real from fake, a
detector trained on this corpus may learn the encoders, not the manipulation.

Every number comes from the lake's tables (labelled originals only for the AUCs; unlabelled
videos count in the balance). :func:`section` returns the same content as an HTML fragment,
for the training report.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from fvcflow.errors import FvcError
from fvcflow.store import Lake, read_parquet

#: numeric codec/container cues: column -> description
NUMERIC_CUES = {
    "bit_rate": "bit rate (bit/s)",
    "bits_per_pixel": "bits per pixel per frame",
    "fps": "frame rate",
    "gop": "mean key-frame distance (frames)",
    "width": "width (px)",
    "height": "height (px)",
    "pixels": "frame area (px)",
    "duration": "duration (s)",
    "size_bytes": "file size (bytes)",
}
#: categorical cues (AUC of their grouped out-of-fold fake rate)
CATEGORICAL_CUES = {"codec": "video codec", "container": "container", "pix_fmt": "pixel format"}
LABELS = {0: "real", 1: "fake"}
COLORS = {0: "tab:blue", 1: "tab:red", None: "tab:grey"}
#: above this grouped AUC, encoding alone separates the corpus (the page says so)
WARN_AUC = 0.75
#: the figures' own record (beside them): what they were drawn from. Raise the version when a
#: figure's drawing changes, so that figures drawn before are drawn again.
FIGURES_META = "explore-figures.json"
FIGURES_VERSION = 1


@dataclass
class Exploration:
    """What :func:`explore` found: the page, its figures (title -> file) and the tables."""

    path: Path | None
    images: dict[str, Path] = field(default_factory=dict)
    cues: pl.DataFrame = field(default_factory=pl.DataFrame)        # cue, kind, auc, separation, n
    combined_auc: float = math.nan                                   # all cues, grouped OOF
    balance: pl.DataFrame = field(default_factory=pl.DataFrame)      # source, real, fake, unlabelled
    failures: pl.DataFrame = field(default_factory=pl.DataFrame)     # stage, reason, videos
    groups: dict[str, float] = field(default_factory=dict)           # groups, largest, mean, duplicates
    verdict: str = ""
    faces: pl.DataFrame = field(default_factory=pl.DataFrame)        # by label: face-found rate, size
    faces_verdict: str = ""                                          # the face-found shortcut check

    def cue_rows(self, digits: int = 4) -> list[dict]:
        """:attr:`cues` as rows for a table artifact: floats rounded, NaN as None (JSON has no NaN)."""
        def clean(v):
            return (None if math.isnan(v) else round(v, digits)) if isinstance(v, float) else v
        return [{k: clean(v) for k, v in row.items()} for row in self.cues.iter_rows(named=True)]

    def markdown(self, *, images: bool = True, embed: bool = False) -> str:
        """The tables (and figure links) as Markdown, for the Prefect artifact."""
        parts = ["# The corpus", "", self.verdict, "", "## Single-cue ROC AUC (codec and container)", "",
                 markdown_table(self.cues, ["cue", "kind", "auc", "separation", "n"]), "",
                 "## Class balance by source", "", markdown_table(self.balance, list(self.balance.columns)),
                 ""]
        if self.failures.height:
            parts += ["## Failures by reason", "",
                      markdown_table(self.failures, ["stage", "reason", "videos"]), ""]
        if self.faces.height:
            parts += ["## Faces by label", "", self.faces_verdict, "",
                      markdown_table(self.faces, list(self.faces.columns)), ""]
        if images:
            for title, path in self.images.items():
                parts += [f"### {title}", "", f"![{title}]({data_uri(path) if embed else path.as_uri()})", ""]
        return "\n".join(parts)


def markdown_table(df: pl.DataFrame, columns: list[str]) -> str:
    """A GitHub-style Markdown table of ``columns`` of ``df`` (floats to 3 places, NaN/None: n/a)."""
    def fmt(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.select(cols).iter_rows()]
    return "\n".join(lines)


def data_uri(path: Path) -> str:
    """A PNG as a ``data:`` URI (shown by the Prefect UI, which cannot read local files)."""
    import base64

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _figure(w: float = 5.0, h: float = 3.6) -> tuple[Figure, object]:
    fig = Figure(figsize=(w, h), dpi=90, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path)
    return path


#: probe columns the page reads, with their type (an index without one gets nulls: no signal)
PROBE_COLUMNS = {"width": pl.Int64, "height": pl.Int64, "fps": pl.Float64, "bit_rate": pl.Float64,
                 "size_bytes": pl.Float64, "duration": pl.Float64, "gop": pl.Float64, "codec": pl.Utf8,
                 "container": pl.Utf8, "pix_fmt": pl.Utf8, "source": pl.Utf8}


def _videos(lake: Lake) -> pl.DataFrame:
    index = read_parquet(lake.index)
    if index is None:
        raise FvcError(f"no video index at {lake.index}: run fvc ingest (or fvc run) first")
    index = index.with_columns([pl.lit(None, t).alias(c) for c, t in PROBE_COLUMNS.items()
                                if c not in index.columns])
    index = index.with_columns([pl.col(c).cast(t) for c, t in PROBE_COLUMNS.items()])
    return index.with_columns(
        pixels=pl.col("width") * pl.col("height"),
        bit_rate=pl.coalesce(pl.col("bit_rate"),   # the file's rate when the stream has none
                             pl.col("size_bytes") * 8 / pl.col("duration")),
        label=pl.col("label").cast(pl.Int8),
    ).with_columns(
        bits_per_pixel=pl.col("bit_rate")
        / (pl.col("width").cast(pl.Float64) * pl.col("height") * pl.col("fps")),
    )


def _auc(y: np.ndarray, x: np.ndarray) -> float:
    ok = np.isfinite(x)
    y, x = y[ok], x[ok]
    if np.unique(y).size < 2 or np.unique(x).size < 2:
        return math.nan
    return float(roc_auc_score(y, x))


def _grouped_folds(y: np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Validation index sets of a stratified group k-fold (fewer folds when groups are few)."""
    from sklearn.model_selection import StratifiedGroupKFold

    fewest = min(np.unique(groups[y == c]).size for c in (0, 1))
    k = min(k, fewest)
    if k < 2:
        return []
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [va for _, va in cv.split(np.zeros(len(y)), y, groups)]


def cue_table(videos: pl.DataFrame) -> tuple[pl.DataFrame, float]:
    """Single-cue ROC AUC of each codec/container cue on the labelled originals, and the grouped
    out-of-fold AUC of a gradient-boosted model on all of them.

    A numeric cue's AUC is that of its raw value; a categorical cue's is that of its category's
    fake rate (in-sample: the best any rule on that cue alone can do; NaN for a single category).
    ``separation`` is ``|auc - 0.5|``. The combined model is scored out of fold, by group.
    """
    lab = videos.filter(pl.col("label").is_not_null())
    y = lab["label"].to_numpy().astype(int)
    groups = lab["group_id"].to_numpy()
    rows = []
    for cue in NUMERIC_CUES:
        if cue in lab.columns:
            x = lab[cue].cast(pl.Float64).fill_null(np.nan).to_numpy()
            rows.append({"cue": cue, "kind": "numeric", "auc": _auc(y, x), "n": int(np.isfinite(x).sum())})
    for cue in CATEGORICAL_CUES:
        if cue not in lab.columns:
            continue
        cats = lab[cue].cast(pl.Utf8).fill_null("?").to_numpy()
        rate = {c: y[cats == c].mean() for c in set(cats)}
        rows.append({"cue": cue, "kind": "categorical", "auc": _auc(y, np.array([rate[c] for c in cats])),
                     "n": len(y)})
    folds = _grouped_folds(y, groups) if np.unique(y).size == 2 else []
    table = pl.DataFrame(rows, schema={"cue": pl.Utf8, "kind": pl.Utf8, "auc": pl.Float64, "n": pl.Int64})
    table = table.with_columns(pl.col("auc").fill_nan(None))
    table = table.with_columns(separation=(pl.col("auc") - 0.5).abs())
    table = table.sort("separation", descending=True, nulls_last=True)
    return table, _combined_auc(lab, y, folds)


def _combined_auc(lab: pl.DataFrame, y: np.ndarray, folds: list[np.ndarray]) -> float:
    if not folds:
        return math.nan
    cols = [c for c in NUMERIC_CUES if c in lab.columns]
    X = lab.select([pl.col(c).cast(pl.Float64) for c in cols]).fill_null(np.nan).to_numpy()
    cats = [c for c in CATEGORICAL_CUES if c in lab.columns]
    if cats:
        codes = np.column_stack([lab[c].cast(pl.Utf8).fill_null("?").cast(pl.Categorical).to_physical()
                                 .to_numpy() for c in cats]).astype(float)
        X = np.column_stack([X, codes])
    mask = np.array([False] * len(cols) + [True] * len(cats))
    informative = np.array([np.unique(X[np.isfinite(X[:, j]), j]).size > 1 for j in range(X.shape[1])],
                           dtype=bool)
    if not informative.any():
        return math.nan
    X, mask = X[:, informative], mask[informative]
    p = np.full(len(y), np.nan)
    with threadpool_limits(limits=1):   # tiny fits: OpenMP threads would only contend for the cores
        _fit_folds(X, y, mask, folds, p)
    return _auc(y, p)


def _fit_folds(X: np.ndarray, y: np.ndarray, mask: np.ndarray, folds: list[np.ndarray],
               p: np.ndarray) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    for va in folds:
        tr = np.setdiff1d(np.arange(len(y)), va)
        if np.unique(y[tr]).size < 2:
            continue
        model = HistGradientBoostingClassifier(max_iter=100, max_depth=3, categorical_features=mask,
                                               min_samples_leaf=max(2, len(tr) // 20), random_state=0)
        p[va] = model.fit(X[tr], y[tr]).predict_proba(X[va])[:, 1]


def _balance(videos: pl.DataFrame) -> pl.DataFrame:
    return (videos.group_by("source")
            .agg(real=(pl.col("label") == 0).sum(), fake=(pl.col("label") == 1).sum(),
                 unlabelled=pl.col("label").is_null().sum(), videos=pl.len())
            .sort("source"))


def _failures(lake: Lake) -> pl.DataFrame:
    f = read_parquet(lake.failures)
    if f is None or not f.height:
        return pl.DataFrame(schema={"stage": pl.Utf8, "reason": pl.Utf8, "videos": pl.UInt32})
    return f.group_by("stage", "reason").agg(videos=pl.len()).sort("videos", descending=True)


# figures ------------------------------------------------------------------------------------
def _by_label(videos: pl.DataFrame, col: str):
    for lab in (0, 1, None):
        part = videos.filter(pl.col("label").is_null() if lab is None else pl.col("label") == lab)
        if part.height:
            yield lab, part[col].cast(pl.Float64).fill_null(np.nan).to_numpy()


def balance_figure(balance: pl.DataFrame) -> Figure:
    fig, ax = _figure()
    x = np.arange(balance.height)
    bottom = np.zeros(balance.height)
    for col, color in (("real", COLORS[0]), ("fake", COLORS[1]), ("unlabelled", COLORS[None])):
        v = balance[col].to_numpy().astype(float)
        ax.bar(x, v, bottom=bottom, color=color, label=col)
        bottom += v
    ax.set_xticks(x, balance["source"].to_list())
    ax.set(ylabel="videos", title="class balance by source")
    ax.legend(fontsize=7)
    return fig


def resolution_figure(videos: pl.DataFrame) -> Figure:
    fig, ax = _figure()
    rng = np.random.default_rng(0)
    for lab, w in _by_label(videos, "width"):
        part = videos.filter(pl.col("label").is_null() if lab is None else pl.col("label") == lab)
        h = part["height"].cast(pl.Float64).to_numpy()
        jitter = 1 + rng.uniform(-0.01, 0.01, size=(2, len(w)))   # equal sizes do not hide each other
        ax.scatter(w * jitter[0], h * jitter[1], s=12, alpha=0.6, color=COLORS[lab],
                   label=LABELS.get(lab, "unlabelled"))
    sizes = videos.select(pl.col("width").cast(pl.Float64), pl.col("height").cast(pl.Float64)).to_numpy()
    known = np.isfinite(sizes).all(axis=1) & (sizes > 0).all(axis=1)
    if known.any():          # a log axis needs a positive size (an index without probes has none)
        ax.set(xscale="log", yscale="log")
    ax.set(xlabel="width (px)", ylabel="height (px)",
           title="resolution" if known.any() else "resolution (not in the index)")
    ax.legend(fontsize=7)
    return fig


def distributions_figure(videos: pl.DataFrame,
                         cols=("duration", "fps", "bit_rate", "bits_per_pixel")) -> Figure:
    fig = Figure(figsize=(4 * len(cols), 3.2), dpi=90, layout="constrained")
    for i, col in enumerate(cols):
        ax = fig.add_subplot(1, len(cols), i + 1)
        series = [(lab, v[np.isfinite(v)]) for lab, v in _by_label(videos, col) if lab is not None]
        log = col in ("bit_rate", "bits_per_pixel")
        series = [(lab, np.log10(v[v > 0]) if log else v) for lab, v in series]
        both = np.concatenate([v for _, v in series]) if series else np.array([])
        edges = np.histogram_bin_edges(both, bins=25) if both.size and np.ptp(both) > 0 else 10
        for lab, v in series:
            ax.hist(v, bins=edges, alpha=0.55, density=True, color=COLORS[lab], label=LABELS[lab])
        ax.set_title(f"log10 {col}" if log else col, fontsize=9)
        ax.legend(fontsize=7)
    return fig


def categories_figure(videos: pl.DataFrame) -> Figure:
    cols = [c for c in CATEGORICAL_CUES if c in videos.columns]
    fig = Figure(figsize=(4 * len(cols), 3.2), dpi=90, layout="constrained")
    lab = videos.filter(pl.col("label").is_not_null())
    for i, col in enumerate(cols):
        ax = fig.add_subplot(1, len(cols), i + 1)
        counts = lab.group_by(pl.col(col).cast(pl.Utf8).fill_null("?").alias("v"), "label").len()
        cats = sorted(set(counts["v"].to_list()))
        x = np.arange(len(cats))
        for k, (label, name) in enumerate(LABELS.items()):
            n = {r["v"]: r["len"] for r in counts.filter(pl.col("label") == label).to_dicts()}
            ax.bar(x + (k - 0.5) * 0.4, [n.get(c, 0) for c in cats], width=0.4, color=COLORS[label],
                   label=name)
        ax.set_xticks(x, cats, fontsize=7, rotation=30)
        ax.set_title(CATEGORICAL_CUES[col], fontsize=9)
        ax.legend(fontsize=7)
    return fig


def groups_figure(videos: pl.DataFrame) -> Figure:
    fig, ax = _figure()
    sizes = videos.group_by("group_id").len()["len"].to_numpy()
    ax.hist(sizes, bins=np.arange(1, sizes.max() + 2) - 0.5 if sizes.size else 5, color="tab:purple")
    ax.set(xlabel="videos per group", ylabel="groups", title="group sizes (a group never straddles folds)")
    return fig


def failures_figure(failures: pl.DataFrame) -> Figure:
    top = failures.head(12)
    fig, ax = _figure(6, 0.3 * max(top.height, 3) + 1)
    labels = [f"{s}: {r[:48]}" for s, r in zip(top["stage"], top["reason"])]
    ax.barh(np.arange(top.height)[::-1], top["videos"].to_numpy(), color="tab:orange")
    ax.set_yticks(np.arange(top.height)[::-1], labels, fontsize=7)
    ax.set(xlabel="videos", title="failures by stage and reason")
    return fig


def cues_figure(cues: pl.DataFrame) -> Figure:
    fig, ax = _figure(5, 0.3 * max(cues.height, 3) + 1)
    auc = cues["auc"].fill_null(np.nan).to_numpy()
    colors = np.where(auc >= 0.5, "tab:red", "tab:blue")
    ax.barh(np.arange(cues.height)[::-1], np.nan_to_num(auc - 0.5), left=0.5, color=colors)
    ax.axvline(0.5, color="grey", ls=":")
    ax.set_yticks(np.arange(cues.height)[::-1], cues["cue"].to_list(), fontsize=7)
    ax.set(xlim=(0, 1), xlabel="ROC AUC of the cue alone (0.5: no signal)", title="encoding cues")
    return fig


# the page -----------------------------------------------------------------------------------
def face_table(lake: Lake, videos: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Per label (labelled originals), from the faces stage: videos, the share with a face track,
    the mean share of sampled frames with one, the median face size (box area / frame area); and
    the shortcut check: the ROC AUC of "a face was found" alone. Empty without a faces table."""
    faces = read_parquet(lake.faces)
    if faces is None or not faces.height:
        return pl.DataFrame(), ""
    lab = (videos.filter(pl.col("label").is_not_null()).select("video_id", "label")
           .join(faces.select("video_id", "n_tracks", "face_found", "face_area", "detector"), on="video_id"))
    if not lab.height:
        return pl.DataFrame(), ""
    table = (lab.group_by("label").agg(
        videos=pl.len(), with_face=(pl.col("n_tracks") > 0).mean(),
        frames_with_face=pl.col("face_found").mean(),
        face_area_median=pl.col("face_area").fill_nan(None).median())
        .sort("label")
        .with_columns(label=pl.col("label").replace_strict(LABELS, return_dtype=pl.Utf8)))
    detectors = ", ".join(sorted(set(lab["detector"].drop_nulls().to_list())))
    auc = _auc(lab["label"].to_numpy(), (lab["n_tracks"] > 0).cast(pl.Float64).to_numpy())
    if math.isnan(auc):
        return table, f"Faces ({detectors}): every labelled video alike (all or none with a face)."
    sep = max(auc, 1 - auc)
    if sep >= WARN_AUC:
        return table, (f"Face found alone separates the labels (ROC AUC {sep:.3f}, detector {detectors}): "
                       "a shortcut; a face-based detector may learn whether a face was found, not the "
                       "manipulation.")
    return table, f"Face found alone does not separate the labels (ROC AUC {sep:.3f}, detector {detectors})."


def _draw(videos: pl.DataFrame, balance: pl.DataFrame, cues: pl.DataFrame, failures: pl.DataFrame,
          img_dir: Path) -> dict[str, Path]:
    images = {
        "Class balance by source": _save(balance_figure(balance), img_dir / "explore_balance.png"),
        "Resolution": _save(resolution_figure(videos), img_dir / "explore_resolution.png"),
        "Duration, frame rate and bit rate by label": _save(distributions_figure(videos),
                                                            img_dir / "explore_distributions.png"),
        "Codec, container and pixel format by label": _save(categories_figure(videos),
                                                            img_dir / "explore_codecs.png"),
        "Group sizes": _save(groups_figure(videos), img_dir / "explore_groups.png"),
        "Encoding cues alone": _save(cues_figure(cues), img_dir / "explore_cues.png"),
    }
    if failures.height:
        images["Failures by reason"] = _save(failures_figure(failures), img_dir / "explore_failures.png")
    return images


def _figures_digest(videos: pl.DataFrame, failures: pl.DataFrame) -> str:
    """What the figures are drawn from (the index's rows and the failures by reason), hashed."""
    h = hashlib.sha256(f"explore figures v{FIGURES_VERSION}".encode())
    for frame in (videos, failures):
        buf = io.BytesIO()
        frame.write_ipc(buf, compression="uncompressed")
        h.update(buf.getvalue())
    return h.hexdigest()


def _drawn_before(digest: str, img_dir: Path, elsewhere: list[Path]) -> dict[str, Path] | None:
    """The figures of ``digest`` in ``img_dir``, copied there from a folder of ``elsewhere`` (the
    exploration page's, for the training report) when drawn there; None when nowhere."""
    for folder in (img_dir, *elsewhere):
        try:
            meta = json.loads((folder / FIGURES_META).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("digest") != digest:
            continue
        files = {title: folder / name for title, name in dict(meta.get("images", {})).items()}
        if not files or not all(f.is_file() for f in files.values()):
            continue
        if folder.resolve() != img_dir.resolve():
            for f in files.values():
                shutil.copyfile(f, img_dir / f.name)
            _write_meta(img_dir, digest, {t: img_dir / f.name for t, f in files.items()})
        return {title: img_dir / f.name for title, f in files.items()}
    return None


def _write_meta(img_dir: Path, digest: str, images: dict[str, Path]) -> None:
    tmp = img_dir / f".{FIGURES_META}.tmp"
    tmp.write_text(json.dumps({"digest": digest, "images": {t: p.name for t, p in images.items()}}))
    tmp.replace(img_dir / FIGURES_META)


def analyse(lake: Lake, img_dir: Path) -> Exploration:
    """Compute the tables and write the figures into ``img_dir``."""
    videos = _videos(lake)
    img_dir.mkdir(parents=True, exist_ok=True)
    cues, combined = cue_table(videos)
    balance = _balance(videos)
    failures = _failures(lake)
    f = read_parquet(lake.failures)
    dupes = 0 if f is None else f.filter(pl.col("error_type") == "Duplicate").height
    sizes = videos.group_by("group_id").len()["len"]
    groups = {"groups": sizes.len(), "largest": int(sizes.max() or 0), "mean": float(sizes.mean() or 0),
              "duplicates": dupes}
    digest = _figures_digest(videos, failures)
    images = _drawn_before(digest, img_dir, [lake.explore])
    if images is None:
        (img_dir / FIGURES_META).unlink(missing_ok=True)      # no record while the files change
        images = _draw(videos, balance, cues, failures, img_dir)
        _write_meta(img_dir, digest, images)
    best = cues.filter(pl.col("auc").is_not_nan() & pl.col("auc").is_not_null()).head(1)
    if best.height:
        b = best.row(0, named=True)
        verdict = (f"Best single encoding cue: **{b['cue']}**, ROC AUC {b['auc']:.3f}; all encoding cues "
                   f"together (gradient boosting, grouped out-of-fold): "
                   f"{'n/a' if math.isnan(combined) else f'{combined:.3f}'}. ")
        strong = not math.isnan(combined) and combined >= WARN_AUC
        verdict += ("Encoding alone separates this corpus: a detector trained on it may learn the encoders, "
                    "not the manipulation; compare its AUC with this one, and consider re-encoding (stage 3) "
                    "features." if strong else
                    f"Encoding alone does not separate this corpus well (below {WARN_AUC}).")
    else:
        verdict = "Too few labelled videos of both classes to score the encoding cues."
    faces, faces_verdict = face_table(lake, videos)
    return Exploration(None, images, cues, combined, balance, failures, groups, verdict, faces, faces_verdict)


def _table(df: pl.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3f}"
        return html.escape(str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in df.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def fragment(ex: Exploration, *, prefix: str = "", level: int = 2, wrap: bool = True) -> str:
    """The exploration as HTML (in ``<section id="corpus">`` with its heading when ``wrap``);
    image paths are ``prefix + file name``; headings start at ``<h{level}>``."""
    h, h2 = f"h{level}", f"h{level + (1 if wrap else 0)}"
    verdict = html.escape(ex.verdict).replace("**", "")
    g = ex.groups
    parts = [f"<section id='corpus'><{h}>The corpus: could encoding alone separate it?</{h}>"] if wrap else []
    parts += [f"<p class='verdict'>{verdict}</p>",
             f"<{h2}>Single-cue ROC AUC of the codec and container cues</{h2}>", _table(ex.cues),
             f"<{h2}>Class balance by source</{h2}>", _table(ex.balance),
             f"<p>{g.get('groups', 0)} groups, largest {g.get('largest', 0)} videos, mean "
             f"{g.get('mean', 0):.2f}; {g.get('duplicates', 0)} exact duplicates dropped at ingest.</p>"]
    if ex.failures.height:
        parts += [f"<{h2}>Failures by stage and reason</{h2}>", _table(ex.failures)]
    if ex.faces.height:
        parts += [f"<{h2}>Faces by label (the faces stage)</{h2}>",
                  f"<p class='verdict'>{html.escape(ex.faces_verdict)}</p>", _table(ex.faces)]
    for title, path in ex.images.items():
        parts += [f"<figure><img src='{html.escape(prefix + path.name)}' alt='{html.escape(title)}'>"
                  f"<figcaption>{html.escape(title)}</figcaption></figure>"]
    if wrap:
        parts.append("</section>")
    return "\n".join(parts)


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}"
         "table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
         "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
         "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#555}"
         ".verdict{font-weight:bold}")


def explore(lake: Lake, out_dir: str | Path | None = None) -> Exploration:
    """Write ``<home>/explore/explore.html`` (or ``out_dir``) and its figures; return what was found.

    >>> ex = explore(Lake.at("fvc-data"))            # doctest: +SKIP
    >>> ex.cues.columns                              # doctest: +SKIP
    ['cue', 'kind', 'auc', 'n', 'separation']
    """
    out = Path(out_dir) if out_dir else lake.explore
    ex = analyse(lake, out)
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>fvcflow: the corpus</title>",
            f"<style>{STYLE}</style></head><body><h1>fvcflow: the corpus</h1>",
            f"<p>Work dir <code>{html.escape(str(lake.root))}</code>: "
            f"{int(ex.balance['videos'].sum())} indexed videos.</p>", fragment(ex), "</body></html>"]
    ex.path = out / "explore.html"
    tmp = ex.path.with_name(".explore.html.tmp")
    tmp.write_text("\n".join(page))
    tmp.replace(ex.path)
    return ex
