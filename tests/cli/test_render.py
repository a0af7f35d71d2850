"""TextRenderer: one flushed line per report, on the right stream."""

from __future__ import annotations

import io

import pytest

from convergent.engine.report import Blocked, Changed, Converged, Failed, Log, WouldChange
from convergent.errors import CommandError, ResourceError
from convergent.render import WATCHING, TextRenderer
from convergent.resources.base import Change

DIFF = "--- /x\n+++ /x\n@@ -1 +1 @@\n-old\n+new\n"


class FlushCounter(io.StringIO):
    """A StringIO that counts flushes and can claim to be a terminal."""

    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.flushes = 0
        self.tty = tty

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def isatty(self) -> bool:
        return self.tty


def make(watching: bool = False) -> tuple[TextRenderer, FlushCounter, FlushCounter]:
    out, err = FlushCounter(), FlushCounter()
    return TextRenderer(out, err, watching=watching), out, err


def test_changed_prints_resource_and_summary_flushed() -> None:
    render, out, err = make()
    render(Changed.of("file[/tmp/demo/f1]", "created", Change("created"), 0.001))
    render(Changed.of("exec[build]", "ran (0.01 s)", Change("would run"), 0.01))
    assert out.getvalue() == "file[/tmp/demo/f1]: created\nexec[build]: ran (0.01 s)\n"
    assert out.flushes == 2
    assert err.getvalue() == ""


def test_would_change_prints_summary_indented_diff_and_refreshes() -> None:
    render, out, _ = make()
    render(WouldChange("file[/x]", Change("content", DIFF), ("exec[y]", "noop[z]")))
    assert out.getvalue().splitlines() == [
        "file[/x]: would change: content",
        "    --- /x",
        "    +++ /x",
        "    @@ -1 +1 @@",
        "    -old",
        "    +new",
        "  would refresh exec[y]",
        "  would refresh noop[z]",
    ]
    assert render.would_change == {"file[/x]"}


def test_would_change_without_diff_is_one_line() -> None:
    render, out, _ = make()
    render(WouldChange("file[/d]", Change("created")))
    assert out.getvalue() == "file[/d]: would change: created\n"


def test_would_change_does_not_say_would_twice() -> None:
    render, out, _ = make()
    render(WouldChange("exec[build]", Change("would run: make all"), ("noop[done]",)))
    assert out.getvalue().splitlines() == [
        "exec[build]: would run: make all",
        "  would refresh noop[done]",
    ]


def test_diff_is_plain_when_stream_is_not_a_terminal() -> None:
    render, out, _ = make()
    render(WouldChange("file[/x]", Change("content", DIFF)))
    assert "\x1b[" not in out.getvalue()


def test_diff_is_coloured_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out, err = FlushCounter(tty=True), FlushCounter()
    render = TextRenderer(out, err)
    render(WouldChange("file[/x]", Change("content", DIFF)))
    text = out.getvalue()
    assert "\x1b[" in text
    assert "+new" in text
    assert "-old" in text
    assert text.startswith("file[/x]: would change: content\n")


def test_failed_goes_to_stderr_without_repeating_the_resource() -> None:
    render, out, err = make()
    render(Failed.of("exec[build]", ResourceError("exec[build]", "exited with 1")))
    assert err.getvalue() == "exec[build]: FAILED: exited with 1\n"
    assert out.getvalue() == ""
    assert err.flushes == 1


def test_failed_shows_command_stderr_tail_once() -> None:
    render, _, err = make()
    error = CommandError("exec[build]", "exited with 2", 2, "make: *** no rule\n")
    render(Failed.of("exec[build]", error))
    assert err.getvalue().splitlines() == [
        "exec[build]: FAILED: exited with 2",
        "    make: *** no rule",
    ]
    render, _, err = make()
    error = CommandError("exec[b]", "exited with 2: make: *** no rule", 2, "make: *** no rule\n")
    render(Failed.of("exec[b]", error))
    assert err.getvalue() == "exec[b]: FAILED: exited with 2: make: *** no rule\n"


def test_failed_with_a_plain_exception_uses_its_text_or_type() -> None:
    render, _, err = make()
    render(Failed.of("file[/x]", RuntimeError("boom\nsecond line")))
    render(Failed.of("file[/y]", RuntimeError()))
    assert err.getvalue().splitlines() == [
        "file[/x]: FAILED: boom",
        "    second line",
        "file[/y]: FAILED: RuntimeError",
    ]


def test_blocked_names_the_failed_upstream_on_stderr() -> None:
    render, out, err = make()
    render(Blocked("exec[x]", "exec[build]"))
    assert err.getvalue() == "exec[x]: blocked: exec[build] failed\n"
    assert out.getvalue() == ""


def test_log_is_prefixed_with_the_resource() -> None:
    render, out, _ = make()
    render(Log("noop[done]", "notified by exec[build]"))
    assert out.getvalue() == "noop[done]: notified by exec[build]\n"


def test_converged_is_silent_when_not_watching() -> None:
    render, out, err = make()
    render(Converged(0, 0))
    assert out.getvalue() == err.getvalue() == ""


def test_converged_when_watching_is_announced_once_then_only_after_repairs() -> None:
    render, out, _ = make(watching=True)
    render(Converged(0, 0))
    render(Converged(0, 0))  # a spurious re-check settled again: nothing new to say
    render(Changed.of("file[/f1]", "created", Change("created"), 0.0))
    render(Converged(0, 0))
    render(Converged(0, 0))
    assert out.getvalue().splitlines() == [WATCHING, "file[/f1]: created", "converged"]


def test_converged_with_failures_says_settled_not_converged() -> None:
    render, out, _ = make(watching=True)
    render(Failed.of("exec[a]", ResourceError("exec[a]", "exited with 1")))
    render(Converged(1, 2))
    line = out.getvalue().splitlines()[0]
    assert line.startswith("settled with 1 failed, 2 blocked; watching for changes")


class _NoReader(io.StringIO):
    """A stream whose reader is gone: every write fails with EPIPE."""

    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("outlive", [False, True])
def test_a_lost_reader_of_a_stream_other_than_stdout_or_stderr_is_an_error(
    monkeypatch: pytest.MonkeyPatch, outlive: bool
) -> None:
    """Only the command's own stdout and stderr (descriptors 1 and 2, after
    ``outlive_readers()``) are sent to /dev/null; any other stream, and every stream of a
    program that embeds convergent, gets the error."""
    from convergent import render

    monkeypatch.setattr(render, "_OUTLIVE", [True] if outlive else [])
    renderer = TextRenderer(out=_NoReader(), err=_NoReader())
    with pytest.raises(BrokenPipeError):
        renderer.note("hello")
