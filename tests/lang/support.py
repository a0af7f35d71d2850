"""Helpers of the language tests: write a policy (and its other files) into a directory,
load it, read its problems, run the CLI on it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from convergent.errors import PolicyError, Problem
from convergent.graph.core import Graph
from convergent.policy import load_policy
from convergent.policy.vars import Inputs

__all__ = ["FACTS", "cli", "load", "problems", "write"]

#: Facts of a made-up host, so that a test does not depend on the machine it runs on.
FACTS: dict[str, Any] = {
    "hostname": "web-1",
    "fqdn": "web-1.example.org",
    "os": {
        "id": "debian",
        "family": "debian",
        "name": "Debian GNU/Linux",
        "version": "12 (bookworm)",
        "version_id": "12",
        "codename": "bookworm",
    },
    "kernel": {"name": "linux", "release": "6.1.0", "version": "#1 SMP"},
    "arch": "x86_64",
    "cpus": 2,
    "memory": 4 << 30,
    "interfaces": {"lo": ["127.0.0.1", "::1"]},
    "virtual": {"container": "", "hypervisor": "kvm"},
    "version": "0",
}


def write(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path -> text, dedented) under ``root``; the first one's path."""
    first = None
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        first = first or path
    assert first is not None
    return first


def load(path: Path, **inputs: Any) -> Graph[Any]:
    inputs.setdefault("facts", FACTS)
    return load_policy(path, inputs=Inputs(**inputs))


def problems(path: Path, **inputs: Any) -> list[Problem]:
    with pytest.raises(PolicyError) as caught:
        load(path, **inputs)
    return caught.value.problems


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``convergent ARGS`` in a child process."""
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )
