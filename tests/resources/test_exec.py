"""``exec``: guards, shells, environment, timeouts, failures, output and refresh.

Every test runs real processes in tmp_path; waits are bounded, none is a sleep.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Converged, Engine, Failed, Log, Report, WouldChange
from convergent.errors import CommandError, ParamError, ResourceError
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Resource
from convergent.resources.exec import Exec
from tests.waits import until_group_gone

BOUND = 10.0  # seconds any single wait in these tests may take
PR_SET_CHILD_SUBREAPER = 36


# -- helpers ---------------------------------------------------------------------------


class Recorder:
    """A reporter that keeps every report and lets a test wait for one."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self._new = asyncio.Event()

    def __call__(self, report: Report) -> None:
        self.reports.append(report)
        self._new.set()

    async def wait_for(self, predicate: Callable[[Report], bool], start: int = 0) -> Report:
        async with asyncio.timeout(BOUND):
            while True:
                for report in self.reports[start:]:
                    if predicate(report):
                        return report
                self._new.clear()
                await self._new.wait()

    def logs(self, resource: str) -> list[str]:
        return [r.message for r in self.reports if isinstance(r, Log) and r.resource == resource]

    def changed(self, resource: str) -> list[str]:
        return [
            r.summary for r in self.reports if isinstance(r, Changed) and r.resource == resource
        ]


def graph_of(*items: Exec | tuple[Resource[Any], dict[str, Any]]) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    for item in items:
        if isinstance(item, tuple):
            g.add(item[0], **item[1])
        else:
            g.add(item)
    return g


def converge(graph: Graph[Resource[Any]], *, noop: bool = False) -> Recorder:
    """Run ``graph`` through the real engine until it converges once."""
    rec = Recorder()

    async def main() -> None:
        engine = Engine(graph, noop=noop, converged_timeout=0, reporter=rec)
        await asyncio.wait_for(engine.run(), BOUND)

    asyncio.run(main())
    return rec


def make_ctx(res: Exec, logs: list[str], log: Callable[[str], None] | None = None) -> Context:
    services: dict[Any, Any] = {}
    return Context(
        res.id,
        ready=lambda: None,
        event=lambda: None,
        log=logs.append if log is None else log,
        shared=lambda factory: services.setdefault(factory, factory()),
    )


def converge_once(res: Exec, logs: list[str] | None = None) -> bool:
    """check, then apply when needed, as the engine does; True when the command ran."""
    ctx = make_ctx(res, [] if logs is None else logs)

    async def main() -> bool:
        change = await res.check(ctx)
        if change is None:
            return False
        await res.apply(ctx, change)
        return True

    return asyncio.run(asyncio.wait_for(main(), BOUND))


def apply_error(res: Exec) -> CommandError:
    """Apply ``res`` and return the CommandError it must raise."""

    async def main() -> None:
        await res.apply(make_ctx(res, []), Change("run"))

    with pytest.raises(CommandError) as info:
        asyncio.run(asyncio.wait_for(main(), BOUND))
    return info.value


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def appender(log: Path, word: str = "ran") -> list[str]:
    """A command that appends ``word`` to ``log``: each run leaves one line."""
    return ["sh", "-c", f'echo {word} >> "{log}"']


@pytest.fixture
def wait_group_gone() -> Iterator[Callable[[int], None]]:
    """Wait, bounded, until no process of a process group exists any more.

    PID 1 in this lab never reaps orphans, so this process becomes their subreaper for
    the test and reaps the group's zombies itself while it waits on their pidfds.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def wait(pgid: int) -> None:
        until_group_gone(pgid, BOUND)

    yield wait
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


# -- guards ----------------------------------------------------------------------------


def test_creates_skips_the_command_once_the_path_exists(tmp_path: Path) -> None:
    made, log = tmp_path / "made", tmp_path / "log"
    res = Exec("make", cmd=["sh", "-c", f'echo ran >> "{log}"; touch "{made}"'], creates=str(made))
    assert converge_once(res) is True
    assert converge_once(res) is False
    assert lines(log) == ["ran"]
    made.unlink()
    assert converge_once(res) is True
    assert lines(log) == ["ran", "ran"]


def test_unless_skips_when_the_guard_exits_zero(tmp_path: Path) -> None:
    flag, log = tmp_path / "flag", tmp_path / "log"
    as_list = Exec("l", cmd=appender(log, "list"), unless=["test", "-e", str(flag)])
    as_string = Exec("s", cmd=appender(log, "string"), unless=f'test -e "{flag}"')
    assert converge_once(as_list) and converge_once(as_string)
    flag.touch()
    assert not converge_once(as_list) and not converge_once(as_string)
    assert lines(log) == ["list", "string"]


def test_onlyif_skips_when_the_guard_exits_non_zero(tmp_path: Path) -> None:
    flag, log = tmp_path / "flag", tmp_path / "log"
    as_list = Exec("l", cmd=appender(log, "list"), onlyif=["test", "-e", str(flag)])
    as_string = Exec("s", cmd=appender(log, "string"), onlyif=f'test -e "{flag}"')
    assert not converge_once(as_list) and not converge_once(as_string)
    assert lines(log) == []
    flag.touch()
    assert converge_once(as_list) and converge_once(as_string)
    assert lines(log) == ["list", "string"]


def test_guards_run_in_cwd_with_env(tmp_path: Path) -> None:
    (tmp_path / "here").touch()
    log = tmp_path / "log"
    res = Exec(
        "g",
        cmd=appender(log),
        cwd=str(tmp_path),
        env={"WANT": "yes"},
        onlyif='test -e here && test "$WANT" = yes',
    )
    assert converge_once(res)
    assert lines(log) == ["ran"]


def test_ifnewer_runs_only_when_the_target_is_missing_or_older_than_a_source(
    tmp_path: Path,
) -> None:
    a, b, target = tmp_path / "a", tmp_path / "b", tmp_path / "built"
    a.write_text("a\n")
    b.write_text("b\n")
    res = Exec(
        "build",
        cmd=["sh", "-c", f'cat "{a}" "{b}" > "{target}"'],
        ifnewer={"target": str(target), "sources": [str(a), str(b)]},
    )
    assert converge_once(res) is True  # target missing
    assert target.read_text() == "a\nb\n"
    assert converge_once(res) is False  # up to date
    b.write_text("B\n")
    earlier = b.stat().st_mtime_ns - 1_000_000_000
    os.utime(target, ns=(earlier, earlier))
    assert converge_once(res) is True  # a source is newer
    assert target.read_text() == "a\nB\n"
    assert converge_once(res) is False


def test_ifnewer_missing_source_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    (tmp_path / "t").write_text("built\n")
    res = Exec(
        "build",
        cmd=["true"],
        ifnewer={"target": str(tmp_path / "t"), "sources": [str(missing)]},
    )
    with pytest.raises(ResourceError) as info:
        converge_once(res)
    assert str(missing) in str(info.value)
    assert str(info.value).startswith("exec[build]: ifnewer:")


def test_ifnewer_missing_target_runs_before_sources_are_looked_at(tmp_path: Path) -> None:
    """Under noop on a fresh host the sources do not exist yet: that is "would run"."""
    target = tmp_path / "t"
    res = Exec(
        "build",
        cmd=["touch", str(target)],
        ifnewer={"target": str(target), "sources": [str(tmp_path / "not-made-yet")]},
    )
    converge_once(res)
    assert target.exists()


# -- how the command runs --------------------------------------------------------------


def test_without_shell_arguments_are_not_interpreted(tmp_path: Path) -> None:
    logs: list[str] = []
    converge_once(Exec("echo", cmd=["echo", "$HOME", "a;b"]), logs)
    assert logs == ["stdout: $HOME a;b"]


def test_with_shell_the_string_is_interpreted_by_sh(tmp_path: Path) -> None:
    logs: list[str] = []
    converge_once(Exec("echo", cmd='echo "$HOME"; echo two', shell=True, env={"HOME": "/x"}), logs)
    assert logs == ["stdout: /x", "stdout: two"]


def test_env_is_added_to_the_agents_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = Exec(
        "env",
        cmd=["sh", "-c", f'printf "%s|%s" "$GREETING" "$PATH" > "{out}"'],
        env={"GREETING": "hi"},
    )
    converge_once(res)
    greeting, path = out.read_text().split("|")
    assert greeting == "hi"
    assert path == os.environ["PATH"]


def test_cwd_is_the_commands_working_directory(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    converge_once(Exec("touch", cmd=["touch", "here"], cwd=str(sub)))
    assert (sub / "here").exists()
    assert not (tmp_path / "here").exists()


def test_missing_cwd_is_reported(tmp_path: Path) -> None:
    error = apply_error(Exec("x", cmd=["true"], cwd=str(tmp_path / "nope")))
    assert f"cwd {tmp_path / 'nope'} does not exist" in str(error)


def test_a_cwd_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    error = apply_error(Exec("x", cmd=["true"], cwd=str(tmp_path / "plain")))
    assert f"cwd {tmp_path / 'plain'} is not a directory" in str(error)


def test_a_cwd_reached_through_roots_own_symlink_is_entered(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    converge_once(Exec("touch", cmd=["touch", "here"], cwd=str(tmp_path / "link")))
    assert (real / "here").exists()


# -- failures --------------------------------------------------------------------------


def test_failure_names_the_exit_code_and_the_last_stderr_lines() -> None:
    script = "for i in $(seq 1 15); do echo err$i >&2; done; echo out; exit 3"
    error = apply_error(Exec("fail", cmd=["sh", "-c", script]))
    assert error.exit_code == 3
    tail = "\n".join(f"err{i}" for i in range(6, 16))
    assert str(error) == f"exec[fail]: exited with code 3: {tail}"
    assert error.stderr_tail == tail
    assert "err5\n" not in str(error)


def test_missing_program_is_reported_as_command_not_found() -> None:
    error = apply_error(Exec("x", cmd=["convergent-no-such-program", "arg"]))
    assert str(error) == (
        "exec[x]: command not found: convergent-no-such-program (is it installed and on PATH?)"
    )
    assert error.exit_code is None


def test_missing_guard_program_is_reported_with_the_guard_name() -> None:
    res = Exec("x", cmd=["true"], unless=["convergent-no-such-program"])
    with pytest.raises(CommandError) as info:
        converge_once(res)
    assert str(info.value).startswith("exec[x]: unless: command not found:")


def test_timeout_kills_the_whole_process_group(
    tmp_path: Path, wait_group_gone: Callable[[int], None]
) -> None:
    pgid_file, late = tmp_path / "pgid", tmp_path / "late"
    script = f'echo $$ > "{pgid_file}"; (sleep 2; touch "{late}") & wait'
    error = apply_error(Exec("slow", cmd=["sh", "-c", script], timeout=0.5))
    assert error.exit_code is None
    assert str(error) == (
        "exec[slow]: timed out after 0.5 s; the process group was killed "
        "(raise `timeout:` if the command needs longer; `timeout: null` for none)"
    )
    wait_group_gone(int(pgid_file.read_text()))
    assert not late.exists()


def test_timeout_uses_sigkill_when_sigterm_is_ignored(
    tmp_path: Path, wait_group_gone: Callable[[int], None]
) -> None:
    pgid_file, late = tmp_path / "pgid", tmp_path / "late"
    script = f'trap "" TERM; echo $$ > "{pgid_file}"; (sleep 3; touch "{late}") & wait'
    error = apply_error(Exec("stubborn", cmd=["sh", "-c", script], timeout=0.5))
    assert "timed out" in str(error)
    wait_group_gone(int(pgid_file.read_text()))
    assert not late.exists()


def test_cancelling_apply_kills_the_process_group(
    tmp_path: Path, wait_group_gone: Callable[[int], None]
) -> None:
    late = tmp_path / "late"
    res = Exec("long", cmd=["sh", "-c", f'echo $$; (sleep 2; touch "{late}") & wait'])
    logs: list[str] = []
    started = asyncio.Event()

    def log(message: str) -> None:
        logs.append(message)
        started.set()

    async def main() -> None:
        ctx = make_ctx(res, [], log)
        task = asyncio.create_task(res.apply(ctx, Change("run")))
        await asyncio.wait_for(started.wait(), BOUND)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    wait_group_gone(int(logs[0].removeprefix("stdout: ")))
    assert not late.exists()


# -- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"cmd": "make all"}, "cmd", ["shell: true", "list"]),
        ({"cmd": []}, "cmd", ["empty"]),
        ({"cmd": ["ls"], "shell": True}, "cmd", ["one string"]),
        ({"cmd": ["ls"], "cwd": "rel"}, "cwd", ["absolute"]),
        ({"cmd": ["ls"], "creates": "rel"}, "creates", ["absolute"]),
        ({"cmd": ["ls"], "timeout": 0}, "timeout", ["> 0"]),
        ({"cmd": ["ls"], "unless": ""}, "unless", ["empty"]),
        ({"cmd": ["ls"], "onlyif": []}, "onlyif", ["empty"]),
        ({"cmd": ["ls"], "env": {"A=B": "x"}}, "env", ["A=B"]),
        ({"cmd": ["ls"], "env": {"CONVERGENT_RUN": "x"}}, "env", ["CONVERGENT_RUN", "name"]),
        ({"cmd": ["ls"], "ifnewer": {"target": "t", "sources": []}}, "ifnewer.target", []),
    ],
)
def test_bad_parameters_are_rejected_with_the_field_named(
    fields: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(ParamError) as info:
        Exec("x", **fields)
    assert info.value.field == field
    for word in words:
        assert word in str(info.value)


# -- through the engine ----------------------------------------------------------------


def test_noop_run_reports_would_run_and_runs_nothing(tmp_path: Path) -> None:
    made = tmp_path / "made file"
    res = Exec("x", cmd=["touch", "made file"], cwd=str(tmp_path))
    rec = converge(graph_of(res), noop=True)
    would = [r for r in rec.reports if isinstance(r, WouldChange)]
    assert len(would) == 1 and would[0].change is not None
    assert would[0].change.summary == "would run: touch 'made file'"
    assert not made.exists()


def test_long_commands_are_shortened_in_the_summary() -> None:
    res = Exec("x", cmd=["echo", "a" * 200])
    change = asyncio.run(res.check(make_ctx(res, [])))
    assert change is not None
    assert len(change.summary) <= len("would run: ") + 60
    assert change.summary.endswith("...")


def test_apply_reports_how_long_the_command_ran(tmp_path: Path) -> None:
    rec = converge(graph_of(Exec("x", cmd=["true"])))
    (summary,) = rec.changed("exec[x]")
    assert summary.startswith("ran (") and summary.endswith(" s)")


def test_output_lines_are_logged_as_they_arrive(tmp_path: Path) -> None:
    """The command waits for a file the test creates only after seeing its first line."""
    go = tmp_path / "go"
    script = (
        f'echo started; echo warning >&2; i=0; while [ ! -e "{go}" ] && [ $i -lt 2000 ]; '
        "do sleep 0.01; i=$((i+1)); done; echo finished"
    )
    res = Exec("talk", cmd=["sh", "-c", script], timeout=BOUND * 2)
    rec = Recorder()

    async def main() -> None:
        engine = Engine(graph_of(res), reporter=rec)
        task = asyncio.create_task(engine.run())
        try:
            await rec.wait_for(lambda r: isinstance(r, Log) and r.message == "stdout: started")
            go.touch()
            await rec.wait_for(lambda r: isinstance(r, Changed))
        finally:
            engine.stop()
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    logs = rec.logs("exec[talk]")
    assert [m for m in logs if m.startswith("stdout: ")] == ["stdout: started", "stdout: finished"]
    assert [m for m in logs if m.startswith("stderr: ")] == ["stderr: warning"]


def test_failure_reaches_the_engine_as_a_command_error() -> None:
    rec = converge(graph_of(Exec("x", cmd=["sh", "-c", "echo boom >&2; exit 4"])))
    (failed,) = [r for r in rec.reports if isinstance(r, Failed)]
    assert isinstance(failed.error, CommandError)
    assert str(failed.error) == "exec[x]: exited with code 4: boom"


def test_refresh_reruns_the_command_through_a_notify_edge(tmp_path: Path) -> None:
    made, log = tmp_path / "made", tmp_path / "log"
    build = Exec("build", cmd=["touch", str(made)], unless=["test", "-e", str(made)])
    restart = Exec("restart", cmd=appender(log), refresh_only=True)
    rec = converge(graph_of((build, {"notify": [restart]}), restart))
    assert lines(log) == ["ran"]
    (summary,) = rec.changed("exec[restart]")
    assert summary.startswith("ran (") and summary.endswith(" s) on refresh")
    # Nothing changed upstream: no notification, so the refresh_only command stays put.
    converge(graph_of((build, {"notify": [restart]}), restart))
    assert lines(log) == ["ran"]


def test_refresh_is_skipped_when_a_guard_says_so(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build = Exec("build", cmd=["true"])
    restart = Exec("restart", cmd=appender(log), refresh_only=True, onlyif=["false"])
    rec = converge(graph_of((build, {"notify": [restart]}), restart))
    assert rec.logs("exec[restart]") == ["refresh skipped: onlyif: false exited with code 1"]
    assert rec.changed("exec[restart]") == []
    assert not log.exists()


def test_deleting_the_creates_file_runs_the_command_again(tmp_path: Path) -> None:
    made, log = tmp_path / "made", tmp_path / "log"
    res = Exec("make", cmd=["sh", "-c", f'echo ran >> "{log}"; touch "{made}"'], creates=str(made))
    rec = Recorder()

    async def main() -> None:
        engine = Engine(graph_of(res), reporter=rec)
        task = asyncio.create_task(engine.run())
        try:
            await rec.wait_for(lambda r: isinstance(r, Converged))
            assert lines(log) == ["ran"]
            seen = len(rec.reports)
            made.unlink()
            await rec.wait_for(lambda r: isinstance(r, Changed), start=seen)
        finally:
            engine.stop()
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert lines(log) == ["ran", "ran"]
    assert made.exists()


def test_independent_branches_overlap_in_time(tmp_path: Path) -> None:
    """Three chained commands and one independent one, each stamping its start and end.

    step-2 and the independent command each wait until the other has started before
    they end: that only happens when the engine runs them at the same time. Run one
    after the other, the first gives up after a bound and the overlap assertion fails.
    """

    def stamped(name: str, wait_for: str = "") -> list[str]:
        stamp = f'date +%s.%N > "{tmp_path}/{name}'
        wait = ""
        if wait_for:
            wait = (
                f'i=0; while [ ! -s "{tmp_path}/{wait_for}.start" ] && [ $i -lt 300 ]; '
                "do sleep 0.01; i=$((i+1)); done;"
            )
        return ["sh", "-c", f'{stamp}.start"; {wait} {stamp}.end"']

    s1 = Exec("step-1", cmd=stamped("step-1"))
    s2 = Exec("step-2", cmd=stamped("step-2", wait_for="independent"))
    s3 = Exec("step-3", cmd=stamped("step-3"))
    ind = Exec("independent", cmd=stamped("independent", wait_for="step-2"))
    rec = converge(graph_of(s1, (s2, {"require": [s1]}), (s3, {"require": [s2]}), ind))
    assert not [r for r in rec.reports if isinstance(r, Failed)]

    def interval(name: str) -> tuple[float, float]:
        return (
            float((tmp_path / f"{name}.start").read_text()),
            float((tmp_path / f"{name}.end").read_text()),
        )

    (a1, b1), (a2, b2), (a3, b3) = (interval(f"step-{i}") for i in (1, 2, 3))
    ai, bi = interval("independent")
    assert a1 <= b1 <= a2 <= b2 <= a3 <= b3, "chain members overlapped: upstream must end first"
    assert max(ai, a2) < min(bi, b2), "the independent command did not run beside the chain"


def test_a_command_is_summarised_as_shlex_writes_it() -> None:
    """Reports show an argv as ``shlex.join`` does (``host.process.summary``, without
    shlex), cut to the limit; a shell string with its white space runs made one."""
    import shlex

    from convergent.host.process import summary

    words = [
        "", "plain", "a b", "it's", "é", "$HOME", "a;b", "-x=1,2", "~user", "tab\there",
        "new\nline", "'", '"', "*", "100%", "a@b:c/d.e", "back\\slash", "\x00nul",
    ]  # fmt: skip
    for word in words:
        for argv in ([word], ["cmd", word, "x"]):
            assert summary(argv, 1000) == shlex.join(argv), argv
    assert summary(["echo", "x" * 100]) == shlex.join(["echo", "x" * 100])[:57] + "..."
    assert len(summary(["echo", "x" * 100])) == 60
    assert summary("echo   a \n b") == "echo a b"
    assert summary(["echo", "x" * 10], 0) == "..."  # a limit under 3 counts as 3
