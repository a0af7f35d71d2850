"""The single file for tests: built once per test session, from this checkout.

::

    from tests.dist_support import built_pyz

    pyz = built_pyz()        # Path of convergent.pyz, built on first call
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

__all__ = ["built_pyz"]


@functools.cache
def built_pyz() -> Path:
    """``convergent.pyz`` built from this checkout's convergent (and the dependencies
    installed for this interpreter) into a temp directory removed at exit; one build per
    session."""
    from convergent.remote.dist import build

    where = Path(tempfile.mkdtemp(prefix="convergent-dist-"))
    atexit.register(shutil.rmtree, where, True)
    return build(where / "convergent.pyz")
