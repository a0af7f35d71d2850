"""Fixtures for end-to-end tests: copies of the examples confined to a tmp directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.agent import EXAMPLES

HELLO_PREFIX = "/tmp/convergent-hello"


@dataclass(frozen=True)
class Hello:
    """examples/hello.yaml with its ``/tmp/convergent-hello`` prefix moved to ``root``."""

    policy: Path
    root: Path
    state: Path  # a --state-dir inside the tmp directory

    @property
    def f1(self) -> Path:
        return self.root / "f1"

    @property
    def f2(self) -> Path:
        return self.root / "f2"

    @property
    def built(self) -> Path:
        return self.root / "built"

    def run_args(self, *extra: str) -> list[str]:
        return ["run", str(self.policy), "--state-dir", str(self.state), *extra]


@pytest.fixture
def hello(tmp_path: Path) -> Hello:
    text = (EXAMPLES / "hello.yaml").read_text(encoding="utf-8")
    assert HELLO_PREFIX in text
    root = tmp_path / "hello"
    policy = tmp_path / "hello.yaml"
    policy.write_text(text.replace(HELLO_PREFIX, str(root)), encoding="utf-8")
    return Hello(policy, root, tmp_path / "state")
