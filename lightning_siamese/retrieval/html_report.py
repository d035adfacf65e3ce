"""The results page: one self-contained ``report.html`` a browser opens from disk.

It holds the split's metrics, the ROC curve and the similarity histograms (PNG, embedded), and
every query's row: its thumbnail, the true match's rank and similarity, and its top-k with
thumbnails and scores, the true match framed. Rows come failures first (highest rank first),
with a filter by rank and a search box by file name, 50 a page: the page builds only the rows
it shows, so 10,000 queries stay quick. Thumbnails are small JPEGs embedded as data URIs, each
image once; nothing is fetched from a network. File names reach the page as text, never as HTML.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lightning_siamese.data import images
from lightning_siamese.files import atomic_write, display_path
from lightning_siamese.outputs import SOFTWARE
from lightning_siamese.retrieval.plots import plot_roc, plot_similarities
from lightning_siamese.retrieval.report import SplitEmbeddings
from lightning_siamese.retrieval.verification import Verification

REPORT_FILE = "report.html"
PAGE_SIZE = 50


def _figure_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_uri(path: Path, size: int) -> str:
    """The image as a JPEG of at most ``size`` pixels a side, as a data URI (a grey square
    when it cannot be read)."""
    buffer = io.BytesIO()
    images.thumbnail(path, size).convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _finite(value: float) -> float | None:
    """A number for JSON: NaN and infinities (a diverged model's scores) become null."""
    return value if math.isfinite(value) else None


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def page_data(
    split: SplitEmbeddings,
    rows: Sequence[dict[str, Any]],
    metrics: dict[str, Any],
    title: str,
    notes: Sequence[str] = (),
    thumbnail: int = 64,
) -> dict[str, Any]:
    """What the page shows, as JSON-ready data: ``rows`` are
    :meth:`~lightning_siamese.retrieval.report.SplitEmbeddings.table`'s (the ``retrieval.csv``
    rows), with the gallery rows of their top-k."""
    count = len(split)
    return {
        "title": title,
        "notes": list(notes),
        "metrics": [[name, _shown(value)] for name, value in metrics.items()],
        "left": [display_path(path.name) for path in split.left],
        "right": [display_path(path.name) for path in split.right],
        # Left images first, then right ones: image i of the page is left[i] or right[i - N].
        "images": [thumbnail_uri(path, thumbnail) for path in [*split.left, *split.right]],
        "pageSize": PAGE_SIZE,
        "rows": [
            {
                "i": query,
                "r": row["rank"],
                "s": _finite(row["true_match_score"]),
                "k": [
                    [count + gallery, _finite(score)]
                    for gallery, (_, score) in zip(row["top_k_rows"], row["top_k"], strict=True)
                ],
            }
            for query, row in enumerate(rows)
        ],
    }


def write_html_report(
    path: str | Path,
    split: SplitEmbeddings,
    rows: Sequence[dict[str, Any]],
    metrics: dict[str, Any],
    title: str,
    verification: Verification | None = None,
    threshold: float | None = None,
    notes: Sequence[str] = (),
    thumbnail: int = 64,
) -> Path:
    """Write the page to ``path`` (whole, see the module docstring): ``rows`` from
    :meth:`SplitEmbeddings.table`, the ROC curve and histograms from ``verification`` with the
    match ``threshold`` marked, ``notes`` as lines under the title."""
    data = page_data(split, rows, metrics, title, notes, thumbnail)
    figures = []
    if verification is not None and verification.impostors:
        fmr, tmr = verification.roc()
        marks = []
        if threshold is not None and threshold in verification.above:
            tmr_at, fmr_at = verification.rates(threshold)
            marks.append(("match threshold", fmr_at, tmr_at))
        figures.append(("ROC curve", _figure_uri(plot_roc(fmr, tmr, marks))))
        histograms = (verification.genuine_histogram, verification.impostor_histogram)
        figures.append(("similarities", _figure_uri(plot_similarities(*histograms, threshold))))
    # Inside <script>, "<" is written as \u003c: no "</script>" can close it early.
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    pictures = "".join(
        f'<img class="plot" alt="{html.escape(name)}" src="{uri}">' for name, uri in figures
    )
    values = {
        "TITLE": html.escape(title),
        "SOFTWARE": html.escape(SOFTWARE),
        "PLOTS": pictures,
        "DATA": payload,
    }
    page = re.sub(r"%(TITLE|SOFTWARE|PLOTS|DATA)%", lambda found: values[found[1]], PAGE)
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="%SOFTWARE%">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } .notes { color: #555; }
#metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr));
  gap: 2px 16px; margin: 1em 0; }
.metric { display: flex; justify-content: space-between; border-bottom: 1px solid #eee; }
.plot { max-width: 48%; margin-right: 1%; border: 1px solid #ddd; }
.controls { position: sticky; top: 0; background: #fff; padding: .5em 0; display: flex;
  gap: 1em; align-items: center; flex-wrap: wrap; border-bottom: 1px solid #ccc; }
#rows { border-collapse: collapse; width: 100%; }
#rows td { vertical-align: top; padding: 4px; border-bottom: 1px solid #eee; }
figure { display: inline-block; margin: 0 4px 0 0; width: 72px; text-align: center;
  font-size: 11px; overflow-wrap: anywhere; white-space: pre-line; }
#rows td:nth-child(-n+2) { width: 90px; }
figure img { width: 64px; height: 64px; object-fit: contain; border: 3px solid transparent; }
figure.true img { border-color: #2a2; } .rank { font-weight: bold; }
.fail .rank { color: #c22; }
</style></head>
<body>
<h1 id="title"></h1><div class="notes" id="notes"></div>
<div id="metrics"></div>
<div>%PLOTS%</div>
<h2>Queries</h2>
<div class="controls">
  <label>Rank of the true match
    <select id="rank-filter">
      <option value="all">all</option>
      <option value="failures">failures (rank above 1)</option>
      <option value="first">rank 1</option>
      <option value="near">rank above 1, within the top 5</option>
      <option value="far">rank above 5</option>
    </select></label>
  <label>File name <input id="search" type="search" placeholder="part of a name"></label>
  <button id="prev" type="button">&larr;</button>
  <span id="count"></span>
  <button id="next" type="button">&rarr;</button>
</div>
<table id="rows"><thead><tr><th>query</th><th>true match (rank, similarity)</th>
<th>top results (score)</th></tr></thead><tbody></tbody></table>
<script id="report-data" type="application/json">%DATA%</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("report-data").textContent);
const count = data.left.length;
const state = { filter: "all", search: "", page: 0 };
const name = (image) => image < count ? data.left[image] : data.right[image - count];
const keep = {
  all: () => true, failures: (r) => r > 1, first: (r) => r <= 1,
  near: (r) => r > 1 && r <= 5, far: (r) => r > 5,
};
// Failures first: the highest rank on top, then by query name.
const order = data.rows.slice().sort(
  (a, b) => b.r - a.r || data.left[a.i].localeCompare(data.left[b.i]));
function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}
const fixed = (value, digits) => value === null ? "not a number" : value.toFixed(digits);
function figure(image, caption, isTrue) {
  const node = element("figure", isTrue ? { class: "true" } : {});
  node.append(element("img", { src: data.images[image], alt: name(image) }));
  node.append(element("figcaption", {}, caption));
  return node;
}
function selected() {
  const text = state.search.trim().toLowerCase();
  return order.filter((row) => keep[state.filter](row.r) && (!text
    || data.left[row.i].toLowerCase().includes(text)
    || data.right[row.i].toLowerCase().includes(text)));
}
function render() {
  const rows = selected();
  const pages = Math.max(1, Math.ceil(rows.length / data.pageSize));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * data.pageSize;
  const shown = rows.slice(start, start + data.pageSize);
  const body = document.querySelector("#rows tbody");
  body.replaceChildren();
  for (const row of shown) {
    const line = element("tr", { "data-query": data.left[row.i], "data-rank": String(row.r) });
    if (row.r > 1) line.className = "fail";
    const query = element("td");
    query.append(figure(row.i, data.left[row.i], false));
    const truth = element("td");
    truth.append(figure(count + row.i, data.right[row.i], true));
    truth.append(element("div", { class: "rank" }, "rank " + row.r));
    truth.append(element("div", {}, fixed(row.s, 4)));
    const top = element("td");
    for (const [image, score] of row.k)
      top.append(figure(image, name(image) + "\\n" + fixed(score, 3), image === count + row.i));
    line.append(query, truth, top);
    body.append(line);
  }
  document.getElementById("count").textContent = rows.length
    ? `${start + 1}-${start + shown.length} of ${rows.length} queries `
      + `(page ${state.page + 1} of ${pages})`
    : `no query matches (of ${data.rows.length})`;
  document.getElementById("prev").disabled = state.page === 0;
  document.getElementById("next").disabled = state.page >= pages - 1;
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}
document.getElementById("title").textContent = data.title;
for (const note of data.notes) document.getElementById("notes").append(element("div", {}, note));
for (const [key, value] of data.metrics) {
  const line = element("div", { class: "metric" });
  line.append(element("span", { class: "name" }, key), element("span", { class: "value" }, value));
  document.getElementById("metrics").append(line);
}
document.getElementById("rank-filter").addEventListener("change", (event) => {
  state.filter = event.target.value; state.page = 0; render();
});
document.getElementById("search").addEventListener("input", (event) => {
  state.search = event.target.value; state.page = 0; render();
});
document.getElementById("prev").addEventListener("click", () => { state.page -= 1; render(); });
document.getElementById("next").addEventListener("click", () => { state.page += 1; render(); });
render();
document.body.dataset.ready = "true";
</script>
</body></html>
"""
