"""Where exactness is impossible ``--noop`` says *may*, with the reason, and counts it
apart: a guard command after a predicted change, a command whose effect no kind
describes, content a command writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from convergent import Exec, File, Graph, Resource, arun
from convergent.engine.report import Failed, MayChange, Report
from tests.e2e.agent import convergent
from tests.noop.support import noop_then_real


def test_a_guard_command_after_a_predicted_change_may_run(tmp_path: Path) -> None:
    conf = tmp_path / "y"
    conf.write_text("old\n")

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(File(str(conf), content="new\n"))
        g.add(
            Exec("x", cmd=["touch", str(tmp_path / "ran")], unless=f"grep -q new {conf}"),
            require=[f"file[{conf}]"],
        )
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.would == {f"file[{conf}]"}
    assert outcome.may == {
        "exec[x]": f"its guard runs a command; upstream file[{conf}] would change"
    }
    assert outcome.would <= outcome.real <= outcome.would | set(outcome.may)


def test_a_guard_command_with_nothing_changed_upstream_is_exact(tmp_path: Path) -> None:
    conf = tmp_path / "y"
    conf.write_text("new\n")

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(File(str(conf), content="new\n"))
        g.add(
            Exec("x", cmd=["touch", str(tmp_path / "ran")], unless=f"grep -q old {conf}"),
            require=[f"file[{conf}]"],
        )
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.would == outcome.real == {"exec[x]"}
    assert outcome.may == {}


def test_downstream_of_a_command_no_kind_describes_may_change(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Exec("gen", cmd=["sh", "-c", f"echo x > {out}"]))
        g.add(File(str(out), content="x\n"), require=["exec[gen]"])
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.would == {"exec[gen]"}
    assert outcome.may == {
        f"file[{out}]": "upstream exec[gen] runs a command whose effect no kind describes"
    }
    assert outcome.real == {"exec[gen]"}


def test_content_a_command_creates_is_may_for_a_file_that_manages_it(tmp_path: Path) -> None:
    made = tmp_path / "made"

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Exec("make", cmd=["sh", "-c", f"echo y > {made}"], creates=str(made)))
        g.add(File(str(made), content="y\n"))  # after the exec: it provides the path
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.would == {"exec[make]"}
    assert set(outcome.may) == {f"file[{made}]"}
    assert outcome.may[f"file[{made}]"] == (
        f"{made} would be made by exec[make]'s command: what it holds is not known"
    )
    assert outcome.real == {"exec[make]"}


def _policy(tmp_path: Path) -> Path:
    t = tmp_path
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n"
        f"  - file: {t}/etc\n    state: directory\n"
        f'  - file: {t}/etc/y\n    content: "new\\n"\n'
        f"  - file: {t}/etc/z\n    source: {t}/etc/y\n    require: [file[{t}/etc/y]]\n"
        f"  - exec: x\n    cmd: [touch, {t}/ran]\n    unless: grep -q new {t}/etc/y\n"
        f"    require: [file[{t}/etc/y]]\n"
        f"  - exec: build\n    cmd: [cp, {t}/etc/z, {t}/z.out]\n"
        f"    ifnewer: {{target: {t}/z.out, sources: [{t}/etc/z]}}\n"
        f"    require: [file[{t}/etc/z]]\n"
    )
    return policy


def test_noop_summary_counts_would_and_may_apart(tmp_path: Path) -> None:
    args = ["run", str(_policy(tmp_path)), "--state-dir", str(tmp_path / "state")]
    done = convergent(*args, "--converged-timeout", "0", "--noop")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    t = tmp_path
    assert (
        f"exec[x]: may run (its guard runs a command; upstream file[{t}/etc/y], "
        f"file[{t}/etc] would change)"
    ) in lines
    assert f"file[{t}/etc/z]: would change: created" in lines
    assert any(line.startswith("exec[build]: would run: ") for line in lines), lines
    assert lines[-1] == "noop: 4 would change, 1 may change; nothing was changed"
    assert not (t / "etc").exists()


def test_noop_json_carries_may_and_the_counts_as_data(tmp_path: Path) -> None:
    args = ["run", str(_policy(tmp_path)), "--state-dir", str(tmp_path / "state")]
    done = convergent(*args, "--converged-timeout", "0", "--noop", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    (may,) = [e for e in events if e["event"] == "may_change"]
    assert may["resource"] == "exec[x]"
    assert may["reason"].startswith("its guard runs a command; upstream ")
    assert len([e for e in events if e["event"] == "would_change"]) == 4
    summary = events[-1]
    assert summary["event"] == "summary"
    assert (summary["would_change"], summary["may_change"]) == (4, 1)


def test_a_check_that_cannot_be_made_before_an_upstream_change_may_change(
    tmp_path: Path,
) -> None:
    """An owner a resource upstream would create (here: a name no host has) cannot be
    looked up under noop: the file *may* change, the dry run does not fail."""
    marker, owned = tmp_path / "marker", tmp_path / "owned"

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(File(str(marker), content="x\n"))
        g.add(File(str(owned), owner="convergent-no-such-user"), require=[f"file[{marker}]"])
        return g

    reports: list[Report] = []
    result = asyncio.run(arun(graph(), converged_timeout=0, noop=True, reporter=reports.append))
    assert result.exit_code == 0
    assert not [r for r in reports if isinstance(r, Failed)]
    (may,) = [r for r in reports if isinstance(r, MayChange)]
    assert may.resource == f"file[{owned}]"
    assert may.reason.startswith(f"its check cannot be made before file[{marker}] would change: ")
    assert "convergent-no-such-user" in may.reason
