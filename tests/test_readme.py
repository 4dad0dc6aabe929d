"""The README's quick-start POST and local-sandbox recipe, run against the served process.

The commands are read from the README itself, so the README cannot drift from what works.
The server runs on a free port rather than the README's (the machine is shared).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from cds_hooks.config import LOCAL_SANDBOX_ORIGINS
from cds_hooks.model import Indicator
from tests.served import serve

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCED = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)
QUICK_START_BASE = "http://127.0.0.1:8080"
INDICATORS = frozenset(indicator.value for indicator in Indicator)


def fenced_blocks() -> list[tuple[str, str]]:
    return [(match[1], match[2]) for match in FENCED.finditer(README)]


def preflight(base: str, origin: str) -> requests.Response:
    return requests.options(
        f"{base}/cds-services/baclofen-order-sign",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example uses curl")
def test_the_quick_start_post_prints_the_cards_the_readme_shows(tmp_path: Path) -> None:
    blocks = fenced_blocks()
    (index,) = [i for i, (_, text) in enumerate(blocks) if "--data-binary @-" in text]
    command = blocks[index][1]
    language, shown = blocks[index + 1]
    assert language == "text"
    with serve(tmp_path, workers=1) as (base, _, _):
        result = subprocess.run(
            ["sh", "-c", command.replace(QUICK_START_BASE, base)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    printed = result.stdout.splitlines()
    assert '    "services": [' in printed  # the discovery document's first lines
    cards = [line for line in printed if line.split(" ", 1)[0] in INDICATORS]
    # The wording is pinned elsewhere (tests/test_cards.py); ages and lab ages move with the
    # calendar, so the README's lines are compared by indicator and count.
    assert [line.split()[0] for line in cards] == [line.split()[0] for line in shown.splitlines()]


def test_the_local_sandbox_recipe_gives_the_sandbox_its_own_port_and_origin(
    tmp_path: Path,
) -> None:
    (port,) = re.findall(r"make run AUTH=sandbox PORT=(\d+)\n", README)
    sandbox_origin = "http://localhost:8080"
    assert f"the sandbox (Node.js LTS), on {sandbox_origin}" in README
    assert sandbox_origin.endswith(":8080") and port != "8080"
    assert f"enter\n`http://localhost:{port}/cds-services`" in README
    assert sandbox_origin in LOCAL_SANDBOX_ORIGINS

    elsewhere = "http://localhost:3000"
    with serve(tmp_path, workers=1, env={"CDS_AUTH_MODE": "sandbox"}) as (base, log, _):
        granted = preflight(base, sandbox_origin)
        refused = preflight(base, elsewhere)
    assert granted.headers["Access-Control-Allow-Origin"] == sandbox_origin
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert f"browser origin {elsewhere} is not in CDS_CORS_ORIGINS" in log.read_text()


def test_the_readmes_origin_override_lets_a_sandbox_elsewhere_in(tmp_path: Path) -> None:
    (origin,) = re.findall(r"`CDS_CORS_ORIGINS=(\S+) make run AUTH=sandbox PORT=\d+`", README)
    env = {"CDS_AUTH_MODE": "sandbox", "CDS_CORS_ORIGINS": origin}
    with serve(tmp_path, workers=1, env=env) as (base, log, _):
        granted = preflight(base, origin)
    assert granted.headers["Access-Control-Allow-Origin"] == origin
    assert "CDS_CORS_ORIGINS" not in log.read_text()
