"""``scan.html``: the triage page of a scan, one self-contained HTML file (thumbnails inlined).

Videos sorted by P(fake), highest first: a thumbnail (the first frame), P(fake) and whether it is
calibrated, the verdict at the threshold, the features that moved the score most, and the
deviant-tile overlay (the frame where the local features deviate most, the tiles tinted by their
robust z, the deviant ones outlined; its top tiles listed) where the scan drew one; then the
files that could not be scored, each with its reason. Every text from a file (a path, an error) is
escaped.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

import polars as pl

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.35em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}
.fake{color:#b00020;font-weight:600}.real{color:#1b5e20;font-weight:600}
.p{font-variant-numeric:tabular-nums}.path{font-family:monospace;font-size:.85em;word-break:break-all}
ul.ev{margin:0;padding-left:1.1em;font-size:.85em}.up{color:#b00020}.down{color:#1b5e20}
img{max-width:192px;border:1px solid #ccc}.note{color:#555;font-size:.9em}
"""


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _evidence(row: dict[str, Any]) -> str:
    feats = json.loads(row["top_features"]) if row.get("top_features") else []
    if not feats:
        return f'<span class="note">{_esc(row.get("evidence_method") or "no evidence")}</span>'
    items = []
    for f in feats[:5]:
        c = f["contribution"]
        value = "" if f.get("value") is None else f" = {f['value']:.4g}"
        items.append(f'<li><span class="{"up" if c > 0 else "down"}">{c:+.3f}</span> '
                     f'{_esc(f["feature"])}{_esc(value)}</li>')
    how = _esc(row.get("evidence_method"))
    if row.get("evidence_approximate"):
        how += " (approximate)"
    return f'<ul class="ev">{"".join(items)}</ul><span class="note">{how}</span>'


def _img(jpeg: bytes | None, alt: str, missing: str) -> str:
    if not jpeg:
        return f'<span class="note">{_esc(missing)}</span>'
    return f'<img alt="{_esc(alt)}" src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}">'


def _overlay(row: dict[str, Any], jpeg: bytes | None) -> str:
    if not jpeg:
        return '<span class="note">-</span>'
    tiles = json.loads(row["top_tiles"]) if row.get("top_tiles") else []
    listed = ", ".join(f'({t["x"]},{t["y"]}) z {t["z"]:.1f}' for t in tiles[:3])
    return (_img(jpeg, "deviant tiles", "") + '<br><span class="note">'
            f'frame {_esc(row.get("overlay_frame"))}; top tiles {_esc(listed)}</span>')


def render(scores: pl.DataFrame, *, name: str, threshold: float, thumbnails: dict[str, bytes | None],
           skipped: int = 0, overlays: dict[str, bytes | None] | None = None) -> str:
    """The page's HTML for a scan's ``scores`` table."""
    ok = scores.filter(pl.col("prob_fake").is_not_null()).sort(["prob_fake", "path"],
                                                                descending=[True, False])
    bad = scores.filter(pl.col("prob_fake").is_null()).sort("path")
    first = scores.row(0, named=True) if scores.height else {}
    model = (f"{_esc(first.get('registered_name'))} v{_esc(first.get('version'))} "
             f"({_esc(first.get('model'))})") if first else "-"
    cal = (f"calibrated ({_esc(first.get('calibration'))})" if first.get("calibrated") else "uncalibrated") \
        if first else ""
    n_fake = int((ok["prob_fake"] >= threshold).sum()) if ok.height else 0
    rows = []
    for r in ok.iter_rows(named=True):
        img = _img(thumbnails.get(r["content_hash"]), "first frame", "no thumbnail")
        rows.append(f'<tr class="video"><td>{img}</td><td class="p">{r["prob_fake"]:.4f}</td>'
                    f'<td class="{_esc(r["verdict"])}">{_esc(r["verdict"])}</td>'
                    f'<td class="path">{_esc(r["path"])}</td><td>{_evidence(r)}</td>'
                    f'<td class="overlay">{_overlay(r, (overlays or {}).get(r["content_hash"]))}</td></tr>')
    fails = [f'<tr class="failure"><td class="path">{_esc(r["path"])}</td><td>{_esc(r["error_type"])}</td>'
             f'<td>{_esc(r["error"])}</td></tr>' for r in bad.iter_rows(named=True)]
    skipped_note = (f'<p class="note">{skipped} files in the folders were not scanned: their names have '
                    "no video suffix (name them on the command line to scan them).</p>") if skipped else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fvc scan {_esc(name)}</title>
<style>{_STYLE}</style></head><body>
<h1>Scan {_esc(name)}</h1>
<p>{scores.height} files; {ok.height} scored, {bad.height} failed; <b>{n_fake}</b> at or above the
threshold {threshold:g} (verdict fake). Model {model}, P(fake) {cal}.</p>{skipped_note}
<h2>Videos by P(fake)</h2>
<table id="videos"><tr><th>first frame</th><th>P(fake)</th><th>verdict</th><th>file</th>
<th>what moved the score (log-odds)</th><th>deviant tiles (robust z)</th></tr>
{"".join(rows) or '<tr><td colspan="6">none</td></tr>'}
</table>
<h2>Failures</h2>
<table id="failures"><tr><th>file</th><th>error</th><th>reason</th></tr>
{"".join(fails) or '<tr><td colspan="3">none</td></tr>'}
</table>
</body></html>
"""


def write_page(result, settings, *, thumbnails: dict[str, bytes | None], threshold: float,
               overlays: dict[str, bytes | None] | None = None) -> None:
    """Write ``result.page`` atomically."""
    text = render(result.scores, name=result.name, threshold=threshold, thumbnails=thumbnails,
                  skipped=len(result.skipped), overlays=overlays)
    tmp = result.page.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(result.page)
