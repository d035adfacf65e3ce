"""``report.html`` in a real browser: headless Chromium, driven by Playwright, opens the page
``evaluate`` wrote, filters by rank, searches by file name and turns pages; the rows it renders
must be ``retrieval.csv``'s. A screenshot is written for the test log.

Chromium is the system's (Debian's ``chromium``; ``$CHROMIUM`` names another); Playwright comes
with the test extra. Without either the test is skipped, except under ``CI=true``, where
``.ci/run`` installs Chromium and a missing browser is a failure.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.retrieval.html_report import write_html_report
from lightning_siamese.retrieval.report import SplitEmbeddings


def chromium() -> str | None:
    given = os.environ.get("CHROMIUM")
    if given:
        return given
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((found for name in names if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        executable = None
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true: the browser test needs Chromium and Playwright (.ci/run installs them)"
            )
        pytest.skip("no Chromium or Playwright here (CI installs them)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_page(browser: Any, path: Path) -> tuple[Any, list[str]]:
    """The page from disk, ready; the requests it made and its errors are collected."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: problems.append(f"a dialog opened: {dialog.message}"))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on(
        "request",
        lambda request: (
            request.url.startswith(("file:", "data:"))
            or problems.append(f"network request: {request.url}")
        ),
    )
    page.goto(path.as_uri())
    try:
        page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    except Exception as error:  # the script failed: say why
        raise AssertionError(f"the page did not get ready: {problems}") from error
    return page, problems


def rendered(page: Any) -> list[tuple[str, str]]:
    rows = page.locator("#rows tbody tr")
    return [
        (rows.nth(i).get_attribute("data-query"), rows.nth(i).get_attribute("data-rank"))
        for i in range(rows.count())
    ]


def failures_first(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    ordered = sorted(rows, key=lambda row: (-float(row["rank"]), row["query"]))
    return [(row["query"], str(float(row["rank"])).removesuffix(".0")) for row in ordered]


def test_the_page_in_a_browser_shows_retrieval_csv(
    browser: Any, trained_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, _, checkpoint = trained_run
    root, out = tmp_path / "pairs", tmp_path / "eval"
    write_pairs(root, 30, start=200)  # pairs the model never saw: some are failures
    assert (
        main(["evaluate", "--ckpt", str(checkpoint), "--root", str(root), "--out", str(out)]) == 0
    )
    table = list(csv.DictReader((out / "retrieval.csv").open(encoding="utf-8")))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    page, problems = open_page(browser, out / "report.html")

    assert rendered(page) == failures_first(table)
    shown = dict(
        zip(
            page.locator("#metrics .name").all_text_contents(),
            page.locator("#metrics .value").all_text_contents(),
            strict=True,
        )
    )
    assert shown["recall@1"] == f"{metrics['recall@1']:.4f}"
    assert shown["roc_auc"] == f"{metrics['roc_auc']:.4f}"
    assert page.locator("img.plot").count() == 2  # the ROC curve and the histograms
    # Every thumbnail shown decoded (embedded JPEGs).
    widths = page.eval_on_selector_all("#rows img", "images => images.map(i => i.naturalWidth)")
    assert widths and min(widths) > 0

    page.select_option("#rank-filter", "failures")
    failed = [row for row in table if float(row["rank"]) > 1]
    assert failed and rendered(page) == failures_first(failed)
    page.fill("#search", "pair021")
    wanted = [row for row in failed if "pair021" in row["query"] or "pair021" in row["true_match"]]
    assert rendered(page) == failures_first(wanted)
    page.select_option("#rank-filter", "first")
    page.fill("#search", "PAIR02")  # case does not matter
    wanted = [row for row in table if float(row["rank"]) <= 1 and "pair02" in row["query"]]
    assert rendered(page) == failures_first(wanted)
    page.fill("#search", "")
    page.select_option("#rank-filter", "all")
    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot of the report page: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert problems == []


def test_pages_of_many_queries(browser: Any, tmp_path: Path) -> None:
    """120 queries: 50 a page, the second page the next 50 rows, the last one 20."""
    count = 120
    write_pairs(tmp_path / "pairs", count, size=16)
    # A file name that is also markup stays text (and cannot end the page's script early).
    first = tmp_path / "pairs" / "left" / "pair0000.jpg"
    first.rename(first.with_name("<script>alert(1)<!--0.jpg"))
    left = sorted((tmp_path / "pairs" / "left").iterdir())
    right = sorted((tmp_path / "pairs" / "right").iterdir())
    generator = torch.Generator().manual_seed(0)
    anchor = torch.randn(count, 8, generator=generator)
    split = SplitEmbeddings(
        left, right, anchor, anchor + torch.randn(count, 8, generator=generator), anchor
    )
    table = split.table(3)
    path = write_html_report(tmp_path / "report.html", split, table, {"pairs": count}, "paging")
    page, problems = open_page(browser, path)
    rows = [{"query": row["query"], "rank": str(row["rank"])} for row in table]
    expected = failures_first(rows)
    assert rendered(page) == expected[:50]
    assert "1-50 of 120 queries (page 1 of 3)" in page.text_content("#count")
    page.click("#next")
    assert rendered(page) == expected[50:100]
    page.click("#next")
    assert rendered(page) == expected[100:]
    assert page.is_disabled("#next") and not page.is_disabled("#prev")
    page.fill("#search", "alert(1)")
    name = "<script>alert(1)<!--0.jpg"
    assert [query for query, _ in rendered(page)] == [name]
    assert page.locator("#rows figcaption").first.text_content() == name
    assert problems == []
