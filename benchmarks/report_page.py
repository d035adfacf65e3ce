"""How report.html fares with many queries: its size, the time to write it, and in headless
Chromium the time to open it and to filter, search and turn a page.

    .venv/bin/python benchmarks/report_page.py                  # 10,000 queries
    .venv/bin/python benchmarks/report_page.py --queries 2000

The pairs are drawn images (64 px PNG, a shape on a colour, the right one a shifted copy) with
random embeddings near their pair's, so some queries fail; the verification counts and the table
are the package's own. Needs Playwright and a Chromium (``$CHROMIUM`` or on the PATH) for the
browser figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_siamese.retrieval.html_report import write_html_report  # noqa: E402
from lightning_siamese.retrieval.report import SplitEmbeddings  # noqa: E402


def draw_pairs(folder: Path, count: int) -> tuple[list[Path], list[Path]]:
    left, right = [], []
    for index in range(count):
        colour = ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256)
        for side, shift, paths in (("left", 0, left), ("right", 6, right)):
            image = Image.new("RGB", (64, 64), colour)
            ImageDraw.Draw(image).ellipse((10 + shift, 12, 40 + shift, 44), fill=(20, 20, 20))
            path = folder / side / f"pair{index:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            paths.append(path)
    return left, right


def timed(action, page) -> float:  # type: ignore[no-untyped-def]
    """Seconds from ``action`` to the page's next rendering of its rows."""
    before = page.evaluate("Number(document.body.dataset.renders || 0)")
    started = time.perf_counter()
    action()
    page.wait_for_function(f"Number(document.body.dataset.renders || 0) > {before}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=10_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="report-page-"))
    try:
        left, right = draw_pairs(folder, args.queries)
        generator = torch.Generator().manual_seed(0)
        anchor = torch.randn(args.queries, 64, generator=generator)
        positive = anchor + 1.2 * torch.randn(args.queries, 64, generator=generator)
        split = SplitEmbeddings(left, right, anchor, positive, positive.roll(1, 0))
        started = time.perf_counter()
        table = split.table(5)
        counts = split.verification(0.5)
        metrics = split.metrics(verified=counts)
        computed = time.perf_counter() - started
        started = time.perf_counter()
        path = write_html_report(
            folder / "report.html", split, table, metrics, "benchmark", counts, 0.5
        )
        written = time.perf_counter() - started
        print(f"queries: {args.queries:,}")
        print(f"table and verification: {computed:.1f} s; page written in {written:.1f} s")
        print(f"report.html: {path.stat().st_size / 2**20:.1f} MiB")
        browser_figures(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def browser_figures(path: Path) -> None:
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        executable = None
    if executable is None:
        print("no Chromium or Playwright: browser figures skipped")
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        started = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready=true]")
        opened = time.perf_counter() - started
        rows = page.locator("#rows tbody tr").count()
        filtered = timed(lambda: page.select_option("#rank-filter", "failures"), page)
        paged = timed(lambda: page.click("#next"), page)
        counted = page.text_content("#count")
        searched = timed(lambda: page.fill("#search", "pair01"), page)
        browser.close()
    print(f"open to first rows ({rows} rendered): {opened:.2f} s")
    print(
        f"filter to failures: {filtered * 1000:.0f} ms; search 'pair01': {searched * 1000:.0f} ms"
    )
    print(f"next page: {paged * 1000:.0f} ms ({counted})")


if __name__ == "__main__":
    main()
