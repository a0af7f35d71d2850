"""A secret output (``password``) reaches its receivers and the disk, never a report:
not in summaries, diffs, log lines, errors or noop output (CLI: tests/e2e/test_secrets.py)."""

from __future__ import annotations

import asyncio
import io
import stat
from pathlib import Path
from typing import Any

from convergent.engine import Changed, Engine, Failed, Report, WouldChange
from convergent.engine.redact import Secrets
from convergent.errors import ResourceError
from convergent.graph import Graph
from convergent.render import TextRenderer
from convergent.resources.base import Resource
from convergent.resources.exec import Exec
from convergent.resources.file import File
from convergent.resources.password import Password
from convergent.state import StateDB
from tests.engine.support import BOUND, Recorder


def _graph(target: Path, *, leak: bool = False) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    g.add(Password("db", length=24))
    g.add(File(str(target), mode="0600"), recv={"content": "password[db].password"})
    if leak:  # a command that is the secret: sh names it in its error
        g.add(Exec("leak", cmd="true", shell=True), recv={"cmd": "password[db].password"})
    return g


def _run(graph: Graph[Resource[Any]], state: StateDB, *, noop: bool = False) -> list[Report]:
    rec = Recorder()

    async def main() -> None:
        engine = Engine(graph, reporter=rec, state=state, noop=noop, converged_timeout=0)
        await asyncio.wait_for(engine.run(), BOUND)

    asyncio.run(main())
    return rec.reports


def _everything(reports: list[Report]) -> str:
    """Every text a report holds: reprs, diffs, error texts, and the CLI's rendering."""
    out = io.StringIO()
    render = TextRenderer(out, out, color=False)
    parts = []
    for report in reports:
        render(report)
        parts.append(repr(report))
        change = getattr(report, "change", None)
        if change is not None:
            parts.append(str(change.diff))
            parts.extend(f"{m.summary} {m.diff}" for m in (change.members or {}).values())
        if isinstance(report, Failed):
            parts.append(str(report.error))
            parts.append(getattr(report.error, "stderr_tail", ""))
    parts.append(out.getvalue())
    return "\n".join(parts)


def test_a_password_reaches_the_file_and_no_report(tmp_path: Path) -> None:
    target = tmp_path / "db.conf"
    with StateDB(tmp_path / "state.db") as state:
        reports = _run(_graph(target), state)
        secret = target.read_text()
        assert len(secret) == 24 and secret == state.get_secret("password[db]")
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert secret not in _everything(reports)

        target.write_text("someone else's content\n")
        reports += _run(_graph(target), state, noop=True)
        assert target.read_text() == "someone else's content\n"
        target.write_text("drifted\n")
        reports += _run(_graph(target), state)
        assert target.read_text() == secret

    text = _everything(reports)
    assert secret not in text
    would = [r for r in reports if isinstance(r, WouldChange)]
    changed = [r for r in reports if isinstance(r, Changed) and r.resource == f"file[{target}]"]
    assert [r.change.diff for r in would if r.change] == ["content changed (secret)"]
    assert [r.change.diff for r in changed][-1] == "content changed (secret)"
    assert "would change: content changed\n    content changed (secret)" in text


def test_a_secret_in_an_error_or_a_log_line_is_shown_as_secret(tmp_path: Path) -> None:
    target = tmp_path / "db.conf"
    with StateDB(tmp_path / "state.db") as state:
        reports = _run(_graph(target, leak=True), state)
        secret = state.get_secret("password[db]")
        noop_reports = _run(_graph(target, leak=True), state, noop=True)
    assert secret is not None
    (failed,) = [r for r in reports if isinstance(r, Failed)]
    assert isinstance(failed.error, ResourceError)
    assert "<secret>" in str(failed.error) + getattr(failed.error, "stderr_tail", "")
    text = _everything(reports + noop_reports)
    assert secret not in text
    assert "exec[leak]: would run: <secret>" in text


def test_a_secret_shortened_in_a_summary_is_still_hidden(tmp_path: Path) -> None:
    """exec shows at most 60 characters of its command: a 64-character secret in it is cut
    to a piece, and the piece must not show either."""
    g: Graph[Resource[Any]] = Graph()
    g.add(Password("long", length=64))
    g.add(Exec("shown", cmd="true", shell=True), recv={"cmd": "password[long].password"})
    with StateDB(str(tmp_path / "state.db")) as state:
        _run(g, state)  # generate and keep the secret
        secret = state.get_secret("password[long]")
        assert secret is not None and len(secret) == 64
        text = _everything(_run(g, state, noop=True))
    assert "would run: " in text
    pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
    assert not [p for p in pieces if p in text], "a piece of the secret was shown"


def test_beside_a_cut_as_many_characters_as_a_secret_less_one_go_whatever_they_are() -> None:
    """``[...]`` marks where a command's output was cut (the log's 64 KiB end inside a
    line; an error's tail begins inside one): what the cut may have left of a secret on
    the side it cut goes, judged by length only (judged by content, the rule would tell
    what a secret begins with); a line's ``stdout: `` stays, and so does the rest."""
    secrets = Secrets()
    secrets.add("Mango5Kiwi7Plum")  # 15 characters: 14 go
    assert secrets.hide("stdout: abcdefghijklmnopqrstuvwxyz[...]") == ("stdout: abcdefghijkl[...]")
    assert secrets.hide("stdout: zzMango5[...]") == "stdout: [...]"
    tail = "exited with code 1: [...]i7Plum and the rest of the line\nnext"
    assert secrets.hide(tail) == "exited with code 1: [...] rest of the line\nnext"
    assert secrets.hide("abcdefghijklmnopqrstuvwxyz[...]").endswith("abcdefghijkl[...]")
    assert secrets.hide("Loading... done") == "Loading... done"  # no cut of ours
    assert Secrets().hide("stdout: abc[...]") == "stdout: abc[...]"  # no secret: as it is


def test_the_engine_knows_the_cut_mark_the_host_layer_writes() -> None:
    from convergent.engine import redact
    from convergent.host import process

    assert redact.CUT == process.CUT
