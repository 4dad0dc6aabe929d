"""Cards as an EHR shows them: a CDS Hooks response rendered to HTML the way the CDS Hooks
sandbox does (cds-hooks/sandbox src/components/CardList): the summary coloured by the card's
indicator, "Source: <label>", the detail as GitHub-flavoured Markdown with raw HTML allowed
(react-markdown with remark-gfm and rehype-raw), each suggestion and each link as a button.

Used by tests/test_ehr_view.py, and by hand to look at real responses:

    .venv/bin/python -m tests.ehr_view OUTDIR [--screenshot] [NAME ...]

writes OUTDIR/<name>.html for each named request of tests/suite_requests.py (all of them
when none is named) and, with --screenshot, a PNG of each taken by headless Chromium
(Debian's ``chromium``); docs/cards-*.png were made so.
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

# CommonMark plus the GFM tables and strikethrough the sandbox's remark-gfm adds; raw HTML
# passes through as rehype-raw lets it (autolinks of bare URLs are not needed for cards).
MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
INDICATOR_COLOURS = {"info": "#0079be", "warning": "#ffae42", "critical": "#c00000"}
WIDTH = 720
"""Pixels: about the width of the sandbox's card column beside its order form."""

STYLE = f"""
body {{ font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 12px; width: {WIDTH}px; color: #1c1f21; background: #fff; }}
h1 {{ font-size: 13px; font-weight: normal; color: #555; margin: 0 0 8px; }}
.card {{ border: 1px solid #c8cacb; border-left-width: 6px; border-radius: 3px;
        padding: 10px 12px; margin-bottom: 10px; }}
.summary {{ font-size: 16px; font-weight: 600; margin-bottom: 2px; }}
.source {{ font-size: 12px; color: #555; margin-bottom: 6px; }}
.detail p {{ margin: 6px 0; }}
.detail ul {{ margin: 4px 0; padding-left: 20px; }}
.buttons {{ margin-top: 8px; display: flex; flex-wrap: wrap; gap: 6px; }}
button {{ font: inherit; font-size: 13px; padding: 4px 10px; border-radius: 3px;
          border: 1px solid #8a8d8f; background: #f4f4f4; }}
button.suggestion {{ border-color: #0065a3; color: #0065a3; background: #fff; }}
button.link {{ border-style: dashed; }}
"""


def detail_html(detail: str) -> str:
    """A card's detail as the sandbox renders it."""
    return MARKDOWN.render(detail)


def card_html(card: dict[str, Any]) -> str:
    colour = INDICATOR_COLOURS.get(card["indicator"], "#555")
    suggestions = "".join(
        f'<button class="suggestion">{html.escape(s["label"])}</button>'
        for s in card.get("suggestions", ())
    )
    links = "".join(
        f'<button class="link">{html.escape(link["label"])}</button>'
        for link in card.get("links", ())
    )
    dismiss = "<button>Dismiss</button>" if card.get("uuid") else ""
    return (
        f'<div class="card" style="border-left-color: {colour}">'
        f'<div class="summary" style="color: {colour}">{html.escape(card["summary"])}</div>'
        f'<div class="source">Source: {html.escape(card["source"]["label"])}</div>'
        f'<div class="detail">{detail_html(card.get("detail", ""))}</div>'
        f'<div class="buttons">{suggestions}{links}{dismiss}</div>'
        "</div>"
    )


def response_html(title: str, cards: Sequence[dict[str, Any]]) -> str:
    """A page of cards, most severe first as the sandbox sorts them."""
    rank = {"critical": 0, "warning": 1, "info": 2}
    ordered = sorted(cards, key=lambda c: rank.get(c["indicator"], 3))
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(map(card_html, ordered))}</body></html>"
    )


def screenshot(page: Path, png: Path, height: int) -> None:
    """A PNG of ``page`` by headless Chromium (as root it needs ``--no-sandbox``)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={png}",
            f"--window-size={WIDTH + 24},{height}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(argv: Sequence[str] | None = None) -> None:
    # Imported here: the rendering above needs neither the app nor the test data.
    from cds_hooks.app import create_app
    from tests.conftest import sqlite_url
    from tests.scenario_requests import SERVICES
    from tests.suite_requests import suite_requests

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("names", nargs="*", help="request names (default: all)")
    parser.add_argument("--screenshot", action="store_true")
    parser.add_argument("--height", type=int, default=1100, help="screenshot height, px")
    args = parser.parse_intermixed_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp())
    app = create_app({"TESTING": True, "ENV": "development", "DATABASE_URL": sqlite_url(store)})
    client = app.test_client()
    requests = dict(suite_requests(date.today()))
    for name in args.names or sorted(requests):
        body = requests[name]
        cards = client.post(f"/cds-services/{SERVICES[body['hook']]}", json=body).get_json()
        page = args.outdir / f"{name.replace('/', '--')}.html"
        page.write_text(response_html(name, cards["cards"]), "utf-8")
        if args.screenshot:
            screenshot(page.resolve(), page.with_suffix(".png"), args.height)
        print(page)


if __name__ == "__main__":
    main()
