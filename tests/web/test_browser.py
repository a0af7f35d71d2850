"""The page of a running agent in a real browser (headless Chromium): it draws the graph,
colours each vertex by its state, and shows a repair as it happens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.web.browser import chromium_page
from tests.web.conftest import Site

WAIT_MS = 15_000  # the longest any DOM wait may take
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "web-view.png"


def _node(vid: str) -> str:
    """The CSS selector of vertex ``vid``'s element in the drawn graph."""
    return f'#graph g.node[id="{vid}"]'


@pytest.mark.slow
def test_a_deleted_file_turns_repaired_in_the_browser(site: Site, tmp_path: Path) -> None:
    vid = f"file[{site.root}/kept]"
    failed = f"download[{site.root}/d/fetched]"
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(site.agent.url)
        node = page.locator(_node(vid))
        node.wait_for(timeout=WAIT_MS)
        page.wait_for_selector(f'{_node(vid)}[data-state="converged"]', timeout=WAIT_MS)
        page.wait_for_selector(f'{_node(failed)}[data-state="failed"]', timeout=WAIT_MS)
        before = int(node.get_attribute("data-repairs") or "0")
        assert node.get_attribute("data-outcome") == "kept"

        node.click()  # the detail panel: its parameters, its events
        page.wait_for_selector("#detail h2", timeout=WAIT_MS)
        assert page.locator("#detail h2").inner_text() == vid
        assert page.locator("#detail table").inner_text().split() == ["content", "kept"]

        site.kept.unlink()
        page.wait_for_selector(
            f'{_node(vid)}[data-outcome="repaired"][data-state="converged"]', timeout=WAIT_MS
        )
        assert int(node.get_attribute("data-repairs") or "0") == before + 1
        page.wait_for_selector(
            "#detail-events li.outcome-repaired", timeout=WAIT_MS
        )  # the open panel got the event live
        assert site.kept.read_text() == "kept\n"

        page.locator(_node(failed)).click()
        page.wait_for_selector("#detail-error", timeout=WAIT_MS)
        assert (
            "fetching http://127.0.0.1:9/x?... failed" in page.locator("#detail-error").inner_text()
        )
        page.locator(_node(vid)).click()
        page.wait_for_selector(f'#detail h2:text-is("{vid}")', timeout=WAIT_MS)
        shot = tmp_path / "web-view.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("CONVERGENT_DOCS_SCREENSHOT"):  # make docs-screenshot
            DOCS_SCREENSHOT.write_bytes(shot.read_bytes())
        assert errors == []
