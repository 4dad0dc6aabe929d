"""The console in a real browser: Debian's chromium, driven by Playwright, against the
service served by gunicorn on a loopback port (``baclofen-cds serve``, two workers) with
its SQLite store. The first user is made with the documented command, and the feedback by
real hook calls. Sign in, see the charts drawn, filter, export, read the comments, look
at the rules, replay a captured sandbox request and see its cards.

``CONSOLE_SCREENSHOTS=docs/console`` keeps a screenshot of each page there (the README's
pictures); otherwise they go to the test's temporary folder.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import DATA
from tests.console_data import COMMENT, PASSWORD, SIGN, make_feedback
from tests.served import serve

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Saturated pixels of a drawn image: the charts' coloured lines and bars (axes, text and
# grid are grey). Run in the page by the test only (the console itself sends no script).
COUNT_COLOURED = """(img) => {
    if (!img.complete || img.naturalWidth === 0) return -1;
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
        const high = Math.max(data[i], data[i + 1], data[i + 2]);
        const low = Math.min(data[i], data[i + 1], data[i + 2]);
        if (data[i + 3] > 128 && high - low > 60) coloured++;
    }
    return coloured;
}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The served service with a console user and four weeks of feedback."""
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("chromium not installed: `make test` installs it (make system-deps)")
        pytest.skip("chromium not installed: run `make system-deps` as root")
    tmp_path = tmp_path_factory.mktemp("console")
    with serve(tmp_path, workers=2) as (base, log, _process):
        environ = {
            **os.environ,
            "CDS_ENV": "development",
            "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
        }
        added = subprocess.run(
            [sys.executable, "-m", "cds_hooks.cli", "console", "add-user", "pharmacist",
             "--password-stdin"],
            input=PASSWORD + "\n", env=environ, cwd=tmp_path, text=True,
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        assert "added" in added.stdout

        def post(path: str, body: dict[str, Any]) -> Any:
            response = requests.post(base + path, json=body, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()

        make_feedback(post)
        yield base, log


@pytest.fixture(scope="module")
def browser(served: Any) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Any, served: tuple[str, Path]) -> Iterator[Any]:
    context = browser.new_context(
        base_url=served[0], viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Any, password: str = PASSWORD) -> None:
    page.goto("/console/")
    assert page.url.endswith("/console/login")
    page.fill("input[name=username]", "pharmacist")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def drawn(page: Any, selector: str) -> int:
    image = page.locator(selector)
    image.scroll_into_view_if_needed()
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    return int(image.evaluate(COUNT_COLOURED))


def totals(page: Any) -> tuple[int, int]:
    rows = page.locator("#rates tbody tr").all()
    accepted = overridden = 0
    for row in rows:
        cells = row.locator("td").all_inner_texts()
        if len(cells) == 4:
            accepted += int(cells[1])
            overridden += int(cells[2])
    return accepted, overridden


def test_sign_in_and_see_the_charts(page: Any, shots: Path) -> None:
    sign_in(page, password="not the password at all")
    assert "Wrong user name or password." in page.inner_text("main")
    page.screenshot(path=str(shots / "login.png"))
    sign_in(page)
    page.wait_for_url("**/console/overrides")
    assert totals(page) == (6, 26)
    # The browser drew both SVG charts: lines of five topics, bars of five reasons.
    assert drawn(page, "#rate-chart") > 1000
    assert drawn(page, "#reasons-chart") > 20000
    page.screenshot(path=str(shots / "overrides.png"), full_page=True)


def test_filter_and_export(page: Any, shots: Path, tmp_path: Path) -> None:
    sign_in(page)
    page.wait_for_url("**/console/overrides")
    page.select_option("select[name=service]", "baclofen-order-select")
    page.select_option("select[name=by]", "rule")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**service=baclofen-order-select**")
    accepted, overridden = totals(page)
    assert accepted + overridden > 0
    assert page.locator("#rates tbody td").first.inner_text().startswith("R")
    assert "service=baclofen-order-select" in str(page.get_attribute("#rate-chart", "src"))
    assert drawn(page, "#rate-chart") > 500
    page.screenshot(path=str(shots / "overrides-filtered.png"), full_page=True)
    with page.expect_download() as download:
        page.click("text=Export these counts as CSV")
    saved = tmp_path / "export.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert rows and {row["service"] for row in rows} == {"baclofen-order-select"}
    assert sum(int(row["count"]) for row in rows) == 3 * 4  # three cards a week, four weeks


def test_comments_rules_and_a_replayed_case(page: Any, shots: Path) -> None:
    sign_in(page)
    page.wait_for_url("**/console/overrides")
    page.click("nav >> text=Comments")
    assert page.locator("#comments tbody tr").count() == 20
    assert COMMENT in page.inner_text("#comments")
    page.screenshot(path=str(shots / "comments.png"), full_page=True)
    page.click("text=older →")
    assert page.locator("#comments tbody tr").count() == 6

    page.click("nav >> text=Rules")
    assert page.locator("#rules tbody tr").count() > 20
    assert "%" in page.inner_text("#rules")
    page.screenshot(path=str(shots / "rules.png"), full_page=True)

    page.click("nav >> text=Replay a case")
    page.set_input_files("input[name=upload]", str(DATA / "requests" / SIGN))
    page.fill("input[name=today]", "2026-12-07")
    page.click("form.replay button[type=submit]")
    page.wait_for_selector("#cards")
    cards = page.locator("article.card")
    assert cards.count() == 4
    critical = page.locator("article.indicator-critical").first
    assert "opioid plus benzodiazepine" in critical.inner_text()
    colour = critical.evaluate("(card) => getComputedStyle(card).borderLeftColor")
    assert colour == "rgb(209, 36, 47)"  # the critical red, as an EHR marks it
    assert page.locator("article.indicator-warning").count() >= 1
    assert page.locator("button.suggestion").count() >= 1
    assert page.locator("button.suggestion").first.is_visible()
    assert page.locator("article.card .detail p").count() >= 4  # Markdown made paragraphs
    assert "Finding:" in critical.inner_text()
    page.screenshot(path=str(shots / "replay.png"), full_page=True)


def test_sign_out(page: Any, served: tuple[str, Path]) -> None:
    sign_in(page)
    page.wait_for_url("**/console/overrides")
    page.click("text=Sign out")
    page.wait_for_url("**/console/login")
    page.goto("/console/rules")
    assert page.url.endswith("/console/login")
    # The served log names who read the comments, never what they said.
    log = served[1].read_text(encoding="utf-8", errors="replace")
    assert "console comments viewed" in log and COMMENT not in log
