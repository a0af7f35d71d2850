"""Every report record is plain data: ``msgspec.json.encode`` takes it with no enc_hook,
and a plain run computes no diff (and imports no difflib) to make it so."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec

from convergent.engine import Engine, Report
from convergent.engine.report import (
    Blocked,
    Changed,
    ChangeText,
    Converged,
    Failed,
    Log,
    MayChange,
    RunResult,
    WouldChange,
)
from convergent.errors import CommandError, ResourceError
from convergent.graph import Graph
from convergent.resources.base import Change, Meta, Resource
from convergent.resources.exec import Exec
from convergent.resources.file import File
from convergent.resources.noop import Noop
from tests.engine.support import BOUND


def _run(graph: Graph[Resource[Any]], **kwargs: Any) -> tuple[list[Report], RunResult]:
    reports: list[Report] = []

    async def main() -> RunResult:
        engine = Engine(graph, reporter=reports.append, converged_timeout=0, **kwargs)
        return await asyncio.wait_for(engine.run(), BOUND)

    return reports, asyncio.run(main())


def _round_trip(report: Any) -> Any:
    data = msgspec.json.encode(report)  # no enc_hook
    return msgspec.json.decode(data, type=type(report))


def test_every_record_of_a_real_run_encodes_as_plain_data(tmp_path: Path) -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(File(str(tmp_path / "f"), content="new\n"))  # Changed, with a lazy diff
    g.add(Noop("a"))
    g.add(Noop("b"))  # grouped with noop[a]
    g.add(Exec("fails", cmd="echo out; echo err >&2; exit 4", shell=True))  # Failed
    g.add(Exec("after", cmd=["true"]), require=["exec[fails]"])  # Blocked
    reports, result = _run(g)
    kinds = {type(r) for r in reports}
    assert {Changed, Failed, Blocked, Converged} <= kinds, reports
    for report in reports:
        back = _round_trip(report)
        assert back == report
    failed = next(r for r in reports if isinstance(r, Failed))
    assert failed.command and failed.exit_code == 4 and "err" in failed.stderr_tail
    decoded = _round_trip(failed)
    assert isinstance(decoded.error, CommandError) and decoded.error.exit_code == 4
    assert str(decoded.error) == str(failed.error)
    assert _round_trip(result) == result


def test_a_file_change_is_encoded_without_its_diff_but_keeps_it_in_process(
    tmp_path: Path,
) -> None:
    target = tmp_path / "f"
    target.write_text("old\n")
    g: Graph[Resource[Any]] = Graph()
    g.add(File(str(target), content="new\n"))
    reports, _ = _run(g)
    changed = next(r for r in reports if isinstance(r, Changed))
    assert b"diff" not in msgspec.json.encode(changed)
    assert changed.change.diff is not None and "+new" in changed.change.diff


def test_noop_records_carry_the_diff_as_data(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old\n")
    g: Graph[Resource[Any]] = Graph()
    g.add(File(str(target), content="new\n", meta=Meta(noop=True)))
    reports, _ = _run(g)
    would = next(r for r in reports if isinstance(r, WouldChange))
    assert isinstance(would.change, ChangeText)
    back = _round_trip(would)
    assert back.change is not None and back.change.diff is not None
    assert "-old" in back.change.diff and "+new" in back.change.diff


def test_records_built_by_hand_encode_too() -> None:
    members = {"noop[a]": Change("x"), "noop[b]": Change("y", "diff")}
    records: list[Any] = [
        Changed.of("autogroup[noop:a,b]", "x", Change("x", members=members), 0.1),
        WouldChange("file[/x]", Change("content", "-a\n+b\n", members), ("exec[y]",)),
        WouldChange("exec[y]", None, ()),
        Failed.of("file[/x]", ResourceError("file[/x]", "Permission denied: /x")),
        Failed.of("file[/y]", RuntimeError()),
        Log("exec[y]", "a line"),
        Blocked("exec[z]", "exec[y]"),
        Converged(1, 2),
        MayChange("exec[x]", "may run", "its guard runs a command", ("exec[y]",)),
    ]
    for record in records:
        assert _round_trip(record) == record
    assert _round_trip(records[0]).members == {"noop[a]": "x", "noop[b]": "y"}


def test_a_plain_run_computes_no_diff(tmp_path: Path) -> None:
    """The W1 budget: creating files reports them without importing difflib."""
    policy = tmp_path / "p.yaml"
    lines = "".join(
        f'  - file: {tmp_path / "out" / str(i)}\n    content: "{i}\\n"\n' for i in range(20)
    )
    policy.write_text(f"resources:\n  - file: {tmp_path / 'out'}\n    state: directory\n{lines}")
    code = textwrap.dedent(
        f"""
        import sys
        from convergent.cli.main import main
        try:
            main(["run", {str(policy)!r}, "--state-dir", {str(tmp_path / "st")!r},
                   "--converged-timeout", "0"])
        except SystemExit:
            pass
        print("difflib" in sys.modules, file=sys.stderr)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=BOUND * 6
    )
    assert done.stderr.strip().splitlines()[-1] == "False", done.stderr
    assert (tmp_path / "out" / "19").read_text() == "19\n"
