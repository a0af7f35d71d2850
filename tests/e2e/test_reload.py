"""`convergent run` reloads its policy when the file is saved: a valid edit is applied as a
diff (added, removed, changed resources; the rest is not checked again), an invalid one
is reported with its place and changes nothing. The real command, in a subprocess."""

from __future__ import annotations

import queue
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import IO

from convergent.resources.base import builtin_kinds
from tests.e2e.agent import Agent

WATCHING = "converged; watching for changes (Ctrl-C to stop)"


class Agent2(Agent):
    """An Agent whose stderr lines can be waited for too."""

    def __init__(self, *args: str) -> None:
        self._errors: queue.Queue[str | None] = queue.Queue()
        super().__init__(*args)

    def _read(self, stream: IO[str], into: list[str], is_stdout: bool) -> None:
        if is_stdout:
            super()._read(stream, into, is_stdout)
            return
        for line in stream:
            into.append(line.rstrip("\n"))
            self._errors.put(line.rstrip("\n"))
        self._errors.put(None)

    def wait_for_error(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The next stderr line for which ``predicate`` holds; fails after ``timeout`` s."""
        while True:
            try:
                line = self._errors.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no expected stderr line\nstderr: {self.err}") from None
            if line is None:
                raise AssertionError(f"stderr closed first\nstderr: {self.err}")
            if predicate(line):
                return line


def _write(policy: Path, root: Path, text: str) -> None:
    """Save a policy the way an editor does: a new file renamed over the old one."""
    temp = policy.with_suffix(".tmp")
    temp.write_text(textwrap.dedent(text).replace("ROOT", str(root)).lstrip("\n"))
    temp.replace(policy)


FIRST = """
    resources:
      - file: ROOT/same
        content: "same\\n"
      - exec: tick             # no guard: every check of it runs it once more
        cmd: [sh, -c, "echo tick >> ROOT/ticks"]
      - file: ROOT/change
        content: "v1\\n"
      - file: ROOT/gone
        content: "gone\\n"
        meta: {reverse: true}
      - file: ROOT/left
        content: "left\\n"
"""


def _start(tmp_path: Path, *extra: str) -> tuple[Agent2, Path, Path]:
    root = tmp_path / "root"
    root.mkdir()
    policy = tmp_path / "policy.yaml"
    _write(policy, root, FIRST)
    agent = Agent2("run", str(policy), "--state-dir", str(tmp_path / "state"), *extra)
    return agent, policy, root


def test_a_saved_edit_adds_removes_and_changes_resources_and_leaves_the_rest(
    tmp_path: Path,
) -> None:
    agent, policy, root = _start(tmp_path)
    with agent:
        agent.wait_for_line(lambda line: line == WATCHING)
        start = len(agent.out)
        _write(
            policy,
            root,
            """
            resources:
              - file: ROOT/same
                content: "same\\n"
              - exec: tick             # no guard: every check of it runs it once more
                cmd: [sh, -c, "echo tick >> ROOT/ticks"]
              - file: ROOT/change
                content: "v2\\n"
              - file: ROOT/new
                content: "new\\n"
            """,
        )
        agent.wait_for_line(lambda line: line == "converged")
        after = agent.out[start:]
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0, agent.err
    assert after[0] == "policy reloaded: +1 -2 ~1 resources", after
    assert f"file[{root}/gone]: reversed: removed" in after
    assert f"file[{root}/change]: content changed" in after
    assert f"file[{root}/new]: created" in after
    assert not any(line.startswith(("exec[tick]", f"file[{root}/same]")) for line in after)
    assert (root / "ticks").read_text() == "tick\n"  # the unchanged exec did not run again
    assert not (root / "gone").exists()
    assert (root / "left").read_text() == "left\n"  # removed without reverse: left alone
    assert (root / "change").read_text() == "v2\n"
    assert (root / "new").read_text() == "new\n"


def test_an_invalid_edit_is_reported_with_its_place_and_changes_nothing(tmp_path: Path) -> None:
    agent, policy, root = _start(tmp_path)
    with agent:
        agent.wait_for_line(lambda line: line == WATCHING)
        _write(
            policy,
            root,
            """
            resources:
              - file: ROOT/same
                content: 3
              - fiel: ROOT/gone
            """,
        )
        agent.wait_for_error(lambda line: line.startswith("policy not reloaded"))
        problems = [line for line in agent.err if line.startswith(str(policy))]
        # Still the first policy: gone is not removed, nothing was reversed.
        assert (root / "gone").read_text() == "gone\n"
        assert (root / "same").read_text() == "same\n"
        start = len(agent.out)
        _write(policy, root, FIRST.replace("same\\n", "fixed\\n"))
        agent.wait_for_line(lambda line: line.startswith("policy reloaded"))
        agent.wait_for_line(lambda line: line == "converged")
        after = agent.out[start:]
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0, agent.err
    assert problems == [
        f"{policy}:3:14: file[{root}/same]: content: expected str or null, got int; quote it "
        'to keep it as text: "3"',
        f"{policy}:4:5: fiel[{root}/gone]: unknown resource kind 'fiel' (did you mean 'file'?);"
        f" known kinds: {', '.join(builtin_kinds())}",
    ], agent.err
    assert after[0] == "policy reloaded: +0 -0 ~1 resources", after
    assert (root / "same").read_text() == "fixed\n"


def test_converged_timeout_still_ends_the_run_after_a_live_edit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    policy = tmp_path / "policy.yaml"
    one = """
        resources:
          - file: ROOT/a
            content: "a\\n"
    """
    _write(policy, root, one)
    agent = Agent2(
        "run", str(policy), "--state-dir", str(tmp_path / "state"), "--converged-timeout", "3"
    )
    with agent:
        agent.wait_for_line(lambda line: line == f"file[{root}/a]: created")
        two = """
            resources:
              - file: ROOT/a
                content: "a\\n"
              - file: ROOT/b
                content: "b\\n"
        """
        _write(policy, root, two)
        agent.wait_for_line(lambda line: line == "policy reloaded: +1 -0 ~0 resources")
        assert agent.wait(timeout=20) == 0, agent.err
    assert (root / "b").read_text() == "b\n"
    assert agent.out[-1].startswith("resources: 2, repaired: 2 (2 resources), failed: 0"), agent.out
