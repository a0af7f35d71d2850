"""One agent with its web view for the tests of a module: a policy of files, a password
sent to a file, and resources whose parameters hold credentials."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.web.support import WebAgent

HEADER = "Bearer hdr-0123456789abcdef"
URL_PASSWORD = "urlpass-0123456789"
QUERY_TOKEN = "qtok-0123456789"
ENV_TOKEN = "envtok-0123456789"


@dataclass
class Site:
    """A running agent and what it manages."""

    agent: WebAgent
    root: Path
    secret_file: Path

    @property
    def kept(self) -> Path:
        return self.root / "kept"

    def secrets(self) -> list[str]:
        """Every secret value the agent holds: none may appear in a response."""
        return [self.secret_file.read_text(), HEADER, URL_PASSWORD, QUERY_TOKEN, ENV_TOKEN]


def write_policy(root: Path) -> Path:
    policy = root / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - file: {root}/d
                state: directory
              - file: {root}/kept
                content: "kept\\n"
              - file: {root}/d/a
                content: "a\\n"
                notify: [exec[after]]
              - exec: after
                cmd: ["true"]
                refresh_only: true
                env: {{TOKEN: {ENV_TOKEN}}}
              - password: db
                length: 24
              - file: {root}/d/db.conf
                mode: "0600"
                recv: {{content: password[db].password}}
              - download: {root}/d/fetched
                url: "http://user:{URL_PASSWORD}@127.0.0.1:9/x?token={QUERY_TOKEN}"
                sha256: "{"0" * 64}"
                headers: {{Authorization: "{HEADER}"}}
                timeout: 2
            """
        )
    )
    return policy


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web")
    (root / "kept").write_text("kept\n")  # already right: kept, never repaired
    policy = write_policy(root)
    with WebAgent(
        "run", str(policy), "--state-dir", str(root / "state"), "--http", "127.0.0.1:0"
    ) as agent:
        agent.wait_for_line(lambda line: line.startswith("settled"), timeout=20)
        yield Site(agent, root, root / "d" / "db.conf")
