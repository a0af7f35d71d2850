"""`convergent man`: the convergent(1) page, rendered by the real man/groff."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import convergent
from convergent.resources.base import builtin_kinds

SRC = Path(convergent.__file__).resolve().parent.parent
BOUND = 60.0


def _page(tmp_path: Path) -> Path:
    out = tmp_path / "convergent.1"
    done = subprocess.run(
        [sys.executable, "-m", "convergent", "man", "-o", str(out)],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_the_page_has_the_sections_of_a_man_page(tmp_path: Path) -> None:
    lines = _page(tmp_path).read_text().splitlines()
    assert lines[0].startswith(".TH CONVERGENT 1 ")
    sections = [line for line in lines if line.startswith(".SH ")]
    assert sections[:3] == [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION"]
    assert ".SH EXIT STATUS" in sections and ".SH ENVIRONMENT" in sections
    for line in lines:  # a text line starting with a control character would be a request
        assert line.startswith((".", "\\&")) or line[:1] not in ("'", ".")


@pytest.mark.skipif(shutil.which("groff") is None, reason="no groff (make test installs it)")
def test_groff_renders_the_page_without_a_warning(tmp_path: Path) -> None:
    page = _page(tmp_path)
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.skipif(shutil.which("man") is None, reason="no man-db (make test installs it)")
def test_man_shows_every_command_option_and_kind(tmp_path: Path) -> None:
    page = _page(tmp_path)
    done = subprocess.run(
        ["man", "-l", str(page)],
        env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.replace("\u2010", "-")
    for words in ("convergent run", "convergent state reset", "convergent service install"):
        assert words in text
    for option in ("--converged-timeout N", "--state-dir DIR", "--format {dot,svg}", "--yes"):
        assert option in text
    for kind in builtin_kinds():
        assert f"\n   {kind}\n" in text
    assert "cmd (list[str] or str; required)" in text
    assert "NOTIFY_SOCKET" in text
