"""Running convergent.pyz as a host without convergent would: ``/usr/bin/python3 -I``,
an empty working directory, a bare environment, a cache directory of the test's."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from convergent.remote.dist_boot import abi_tag

__all__ = ["SYSTEM_PYTHON", "TIMEOUT", "abi_of", "bare_env", "needs_system_python", "rewrite", "run"]

SYSTEM_PYTHON = "/usr/bin/python3"
TIMEOUT = 60.0  # a first run extracts ~40 MB; a healthy one takes about a second


def abi_of(python: str) -> str:
    """The extension ABI of the interpreter ``python`` ("" when it cannot say)."""
    try:
        done = subprocess.run(
            [
                python,
                "-I",
                "-c",
                "import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0][1:-3])",
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


needs_system_python = pytest.mark.skipif(
    not os.path.exists(SYSTEM_PYTHON) or abi_of(SYSTEM_PYTHON) != abi_tag(),
    reason=f"{SYSTEM_PYTHON} is missing or of another ABI than the build's ({abi_tag()})",
)


def bare_env(cache: Path, home: Path) -> dict[str, str]:
    """What a fresh login would have, plus the cache directory: no PYTHONPATH, no venv."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LC_ALL": "C.UTF-8",
        "CONVERGENT_CACHE_DIR": str(cache),
    }


def run(
    pyz: Path,
    *args: str,
    cwd: Path,
    cache: Path,
    python: str = SYSTEM_PYTHON,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``python -I pyz ARGS`` from ``cwd`` in a bare environment, to completion."""
    return subprocess.run(
        [python, "-I", str(pyz), *args],
        cwd=cwd,
        env=bare_env(cache, cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rewrite(pyz: Path, out: Path, main: Callable[[str], str]) -> Path:
    """A copy of ``pyz`` whose ``__main__.py`` (the manifest) is ``main(text)``."""
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(pyz) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "__main__.py":
                data = main(data.decode()).encode()
            dst.writestr(info, data)
    out.write_bytes(buf.getvalue())
    return out
