"""Headless Chromium (Debian's ``chromium``) driven by playwright, never a browser that
``playwright install`` downloads."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["CHROMIUM", "chromium_page"]

CHROMIUM = "/usr/bin/chromium"
_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_page(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A page of a fresh headless Chromium; skips when chromium or playwright is missing
    (``make test`` installs both)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("chromium is not installed: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()
