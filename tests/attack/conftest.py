"""A lab the unprivileged user can reach, outside pytest's temp root (another pytest
session makes that root 0700 again, which would cut the user off mid-race)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["open_lab"]


@pytest.fixture
def open_lab() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="convergent-attack-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
