"""A group vertex: members keep their identity through watch, check, apply and refresh."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Engine, Failed, Log, Report, RunResult, WouldChange
from convergent.errors import ResourceError
from convergent.graph import Graph
from convergent.render import TextRenderer
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.exec import Exec
from convergent.resources.group import Group, Member, prepare
from convergent.resources.noop import Noop

BOUND = 10.0  # seconds any run or wait in these tests may take


class MarkParams(Params, frozen=True):
    """A file in a test directory with the given content.

    path: absolute path of the file
    content: what it holds
    fail: apply raises
    """

    path: str
    content: str = "ok\n"
    fail: bool = False


def _read(path: str) -> str:
    return Path(path).read_text() if Path(path).exists() else ""


def _write(path: str, content: str) -> None:
    Path(path).write_text(content)


class Mark(Resource[MarkParams], kind="grouptest"):
    """A groupable, refreshable kind whose real thing is a file."""

    journal: list[str]
    gate: asyncio.Event | None = None  # when given, watch is ready only once it is set
    watching: asyncio.Event | None = None  # when given, set once watch called ready()

    @classmethod
    def make(cls, name: str, path: Path, journal: list[str], **fields: Any) -> Mark:
        mark = cls(name, path=str(path), **fields)
        mark.journal = journal
        return mark

    async def watch(self, ctx: Context) -> None:
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), BOUND)
        ctx.ready()
        if self.watching is not None:
            self.watching.set()
        await asyncio.Event().wait()

    async def check(self, ctx: Context) -> Change | None:
        old = _read(self.params.path)
        if old == self.params.content:
            return None
        return Change("content", f"-{old.strip()}\n+{self.params.content.strip()}\n")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        self.journal.append(f"apply {ctx.id}")
        if self.params.fail:
            raise RuntimeError("disk full")
        _write(self.params.path, self.params.content)
        return "wrote"

    async def refresh(self, ctx: Context) -> str | None:
        self.journal.append(f"refresh {ctx.id} from {','.join(sorted(ctx.refresh))}")
        return "refreshed"

    def can_group(self, other: Resource[Any]) -> bool:
        return isinstance(other, Mark)


class BatchMark(Mark, kind="grouptestbatch"):
    """A kind that applies all of its members of a group in one call."""

    @classmethod
    async def apply_group(cls, members: Sequence[Member]) -> Sequence[str | None]:
        journal = members[0].resource.journal  # type: ignore[attr-defined]
        journal.append("batch " + " ".join(m.ctx.id for m in members))
        for m in members:
            _write(m.resource.params.path, m.resource.params.content)
        return ["wrote in a batch"] * len(members)


class PkgParams(Params, frozen=True):
    """A line in a test "package database" file.

    db: the file that lists the installed packages, one a line
    """

    db: str


class Pkg(Resource[PkgParams], kind="grouptestpkg"):
    """A package-like kind: checking asks the database, one query for a whole group."""

    queries: list[list[str]]  # per query, the names it answered for

    @classmethod
    def make(cls, name: str, db: Path, queries: list[list[str]]) -> Pkg:
        pkg = cls(name, db=str(db))
        pkg.queries = queries
        return pkg

    @classmethod
    def _query(cls, db: str, names: list[str], queries: list[list[str]]) -> set[str]:
        queries.append(names)
        return set(_read(db).split())

    async def check(self, ctx: Context) -> Change | None:
        installed = self._query(self.params.db, [self.name], self.queries)
        return None if self.name in installed else Change("install")

    @classmethod
    async def check_group(
        cls, members: Sequence[tuple[Resource[Any], Context]]
    ) -> Sequence[Change | None]:
        first = members[0][0]
        assert isinstance(first, Pkg)
        names = [m.name for m, _ in members]
        installed = cls._query(first.params.db, names, first.queries)
        return [None if name in installed else Change("install") for name in names]

    async def apply(self, ctx: Context, change: Change) -> str | None:
        _write(self.params.db, _read(self.params.db) + self.name + "\n")
        return "installed"

    def can_group(self, other: Resource[Any]) -> bool:
        return isinstance(other, (Pkg, Mark))


def converge(
    graph: Graph[Resource[Any]], *, noop: bool = False
) -> tuple[RunResult, list[Report], str]:
    """Run the prepared graph to convergence; return the result, the reports, the text."""
    reports: list[Report] = []
    out, err = io.StringIO(), io.StringIO()
    render = TextRenderer(out, err, color=False)

    def report(r: Report) -> None:
        reports.append(r)
        render(r)

    async def main() -> RunResult:
        engine = Engine(prepare(graph), noop=noop, converged_timeout=0, reporter=report)
        return await asyncio.wait_for(engine.run(), BOUND)

    result = asyncio.run(main())
    return result, reports, out.getvalue() + err.getvalue()


# -- through the engine ------------------------------------------------------------------


def test_a_grouped_graph_converges_and_reports_each_member(tmp_path: Path) -> None:
    journal: list[str] = []
    g: Graph[Resource[Any]] = Graph()
    g.add(Mark.make("b", tmp_path / "b", journal))
    g.add(Mark.make("a", tmp_path / "a", journal))
    result, reports, text = converge(g)
    assert result.exit_code == 0 and result.converged
    (changed,) = [r for r in reports if isinstance(r, Changed)]
    assert changed.resource == "autogroup[grouptest:a,b]"
    assert changed.change.members is not None
    assert {m: c.summary for m, c in changed.change.members.items()} == {
        "grouptest[a]": "wrote",
        "grouptest[b]": "wrote",
    }
    assert text.splitlines() == ["grouptest[a]: wrote", "grouptest[b]: wrote"]
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text() == "ok\n"
    journal.clear()
    result, reports, _ = converge(g)  # already right: nothing to do
    assert result.exit_code == 0
    assert journal == []
    assert not [r for r in reports if isinstance(r, Changed)]


def test_under_noop_each_member_is_reported_would_change_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    journal: list[str] = []
    g: Graph[Resource[Any]] = Graph()
    g.add(Mark.make("a", tmp_path / "a", journal))
    g.add(Mark.make("b", tmp_path / "b", journal))
    (tmp_path / "b").write_text("ok\n")
    g.add(Mark.make("c", tmp_path / "c", journal, content="new\n"))
    result, reports, text = converge(g, noop=True)
    assert result.exit_code == 0
    (would,) = [r for r in reports if isinstance(r, WouldChange)]
    assert would.change is not None and would.change.members is not None
    assert set(would.change.members) == {"grouptest[a]", "grouptest[c]"}
    assert text.splitlines() == [
        "grouptest[a]: would change: content",
        "    -",
        "    +ok",
        "grouptest[c]: would change: content",
        "    -",
        "    +new",
    ]
    assert journal == []
    assert not (tmp_path / "a").exists()


def test_a_refresh_reaches_only_the_member_it_was_sent_to(tmp_path: Path) -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(Noop("a"))
    g.add(Noop("b"))
    g.add(Exec("x", cmd=["true"]), notify=["noop[a]"])
    result, reports, text = converge(g)
    assert result.exit_code == 0
    logs = [r for r in reports if isinstance(r, Log)]
    assert logs == [Log("autogroup[noop:a,b]", "noop[a]: notified by exec[x]")]
    assert "noop[b]" not in text


def test_a_notified_member_is_refreshed_when_another_member_is_applied(tmp_path: Path) -> None:
    journal: list[str] = []
    g: Graph[Resource[Any]] = Graph()
    g.add(Mark.make("a", tmp_path / "a", journal))
    (tmp_path / "b").write_text("ok\n")
    g.add(Mark.make("b", tmp_path / "b", journal))
    g.add(Exec("x", cmd=["true"]), notify=["grouptest[b]"])
    result, _, text = converge(g)
    assert result.exit_code == 0
    assert journal == ["apply grouptest[a]", "refresh grouptest[b] from exec[x]"]
    assert "grouptest[a]: wrote" in text.splitlines()
    assert "grouptest[b]: refreshed" in text.splitlines()


def test_a_failing_member_is_named_and_the_others_are_still_applied(tmp_path: Path) -> None:
    journal: list[str] = []
    g: Graph[Resource[Any]] = Graph()
    g.add(Mark.make("a", tmp_path / "a", journal))
    g.add(Mark.make("b", tmp_path / "b", journal, fail=True))
    result, reports, text = converge(g)
    assert result.exit_code == 1
    (failed,) = [r for r in reports if isinstance(r, Failed)]
    assert failed.resource == "autogroup[grouptest:a,b]"
    assert isinstance(failed.error, ResourceError)
    assert failed.error.resource == "grouptest[b]"
    assert "autogroup[grouptest:a,b]: FAILED: grouptest[b]: disk full" in text
    assert (tmp_path / "a").read_text() == "ok\n"


def test_a_kind_can_apply_its_members_of_a_group_in_one_call(tmp_path: Path) -> None:
    journal: list[str] = []
    g: Graph[Resource[Any]] = Graph()
    g.add(BatchMark.make("c", tmp_path / "c", journal))
    g.add(Mark.make("a", tmp_path / "a", journal))
    g.add(BatchMark.make("b", tmp_path / "b", journal))
    result, reports, text = converge(g)
    assert result.exit_code == 0
    assert journal == ["apply grouptest[a]", "batch grouptestbatch[b] grouptestbatch[c]"]
    (changed,) = [r for r in reports if isinstance(r, Changed)]
    assert changed.resource == "autogroup[grouptest:a;grouptestbatch:b,c]"
    assert text.splitlines() == [
        "grouptest[a]: wrote",
        "grouptestbatch[b]: wrote in a batch",
        "grouptestbatch[c]: wrote in a batch",
    ]


class PartialBatch(Mark, kind="grouptestpartial"):
    """Applies its members in one call; a member with ``fail`` fails alone (left out)."""

    @classmethod
    async def apply_group(cls, members: Sequence[Member]) -> Sequence[str | Exception | None]:
        results: list[str | Exception | None] = []
        for m in members:
            if m.resource.params.fail:
                results.append(ResourceError(m.resource.id, "no such package"))
            else:
                _write(m.resource.params.path, m.resource.params.content)
                results.append("wrote in a batch")
        return results


def test_a_batch_can_fail_one_member_alone_and_apply_the_others(tmp_path: Path) -> None:
    journal: list[str] = []
    g: Graph[Resource[Any]] = Graph()
    g.add(PartialBatch.make("a", tmp_path / "a", journal))
    g.add(PartialBatch.make("b", tmp_path / "b", journal, fail=True))
    result, reports, text = converge(g)
    assert result.exit_code == 1
    (failed,) = [r for r in reports if isinstance(r, Failed)]
    assert isinstance(failed.error, ResourceError)
    assert failed.error.resource == "grouptestpartial[b]"
    assert "grouptestpartial[b]: no such package" in text
    assert (tmp_path / "a").read_text() == "ok\n"
    assert not (tmp_path / "b").exists()


def test_a_kind_checks_its_members_of_a_group_in_one_query(tmp_path: Path) -> None:
    queries: list[list[str]] = []
    journal: list[str] = []
    db = tmp_path / "installed"
    db.write_text("curl\n")
    g: Graph[Resource[Any]] = Graph()
    for name in ("vim", "curl", "git"):
        g.add(Pkg.make(name, db, queries))
    g.add(Mark.make("m", tmp_path / "m", journal))  # a kind without the hook, same group
    result, reports, text = converge(g)
    assert result.exit_code == 0 and result.converged
    (changed,) = [r for r in reports if isinstance(r, Changed)]
    assert changed.resource == "autogroup[grouptest:m;grouptestpkg:curl,git,vim]"
    assert text.splitlines() == [
        "grouptest[m]: wrote",
        "grouptestpkg[git]: installed",
        "grouptestpkg[vim]: installed",
    ]
    assert queries and all(q == ["curl", "git", "vim"] for q in queries)
    assert sorted(db.read_text().split()) == ["curl", "git", "vim"]
    queries.clear()
    result, reports, _ = converge(g)  # already right: one check pass, one query
    assert result.exit_code == 0
    assert queries == [["curl", "git", "vim"]]
    assert not [r for r in reports if isinstance(r, Changed)]


def test_a_failing_group_check_names_every_member_it_was_for() -> None:
    async def broken(cls: type[Pkg], members: Sequence[Any]) -> Sequence[Change | None]:
        raise OSError(2, "No such file or directory", "/var/lib/dpkg")

    Broken = type("BrokenPkg", (Pkg,), {"check_group": classmethod(broken)})
    group = Group.of([Broken("vim", db="x"), Broken("git", db="x")])
    ctx = Context(group.id, ready=lambda: None, event=lambda: None, log=print, shared=lambda f: f())
    with pytest.raises(ResourceError) as caught:
        asyncio.run(asyncio.wait_for(group.check(ctx), BOUND))
    assert caught.value.message.splitlines() == [
        "2 members failed:",
        "grouptestpkg[git]: No such file or directory: /var/lib/dpkg",
        "grouptestpkg[vim]: No such file or directory: /var/lib/dpkg",
    ]


# -- the group on its own ----------------------------------------------------------------


def test_a_group_is_ready_only_when_every_member_is(tmp_path: Path) -> None:
    journal: list[str] = []
    slow = Mark.make("slow", tmp_path / "s", journal)
    fast = Mark.make("fast", tmp_path / "f", journal)
    group = Group.of([fast, slow])

    async def main() -> None:
        slow.gate = asyncio.Event()
        fast.watching = asyncio.Event()
        ready = asyncio.Event()
        ctx = Context(
            group.id,
            ready=ready.set,
            event=lambda: None,
            log=lambda message: None,
            shared=lambda factory: factory(),
        )
        task = asyncio.create_task(group.watch(ctx))
        await asyncio.wait_for(fast.watching.wait(), BOUND)
        assert not ready.is_set()
        slow.gate.set()
        await asyncio.wait_for(ready.wait(), BOUND)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_member_watch_failure_names_the_member(tmp_path: Path) -> None:
    class Broken(Mark, kind="grouptestbroken"):
        async def watch(self, ctx: Context) -> None:
            raise OSError(2, "No such file or directory", "/nowhere")

    journal: list[str] = []
    group = Group.of([Mark.make("a", tmp_path / "a", journal), Broken.make("b", tmp_path, journal)])
    ctx = Context(group.id, ready=lambda: None, event=lambda: None, log=print, shared=lambda f: f())
    with pytest.raises(ResourceError, match=r"grouptestbroken\[b\]: No such file or directory"):
        asyncio.run(asyncio.wait_for(group.watch(ctx), BOUND))


def test_group_identity_comes_from_sorted_members_with_separators_escaped() -> None:
    a, b, c = Noop("b"), Noop("a,x"), Noop("c;d")
    assert Group.of([a, b, c]).id == r"autogroup[noop:a\,x,b,c\;d]"
    assert Group.of([c, a, b]).id == Group.of([a, b, c]).id


def test_groups_of_the_same_members_differ_when_a_member_does(tmp_path: Path) -> None:
    journal: list[str] = []
    one = Group.of([Mark.make("a", tmp_path / "a", journal), Mark.make("b", tmp_path, journal)])
    same = Group.of([Mark.make("a", tmp_path / "a", journal), Mark.make("b", tmp_path, journal)])
    other = Group.of(
        [Mark.make("a", tmp_path / "a", journal, content="x"), Mark.make("b", tmp_path, journal)]
    )
    assert one == same
    assert one.id == other.id
    assert one != other  # a live graph change re-checks it


def test_a_group_needs_two_members() -> None:
    with pytest.raises(ValueError, match="at least two"):
        Group.of([Noop("a")])


def test_render_prints_a_group_change_as_one_line_per_member() -> None:
    out = io.StringIO()
    render = TextRenderer(out, io.StringIO(), color=False)
    members = {"noop[a]": Change("did a"), "noop[b]": Change("did b")}
    render(Changed.of("autogroup[noop:a,b]", "x", Change("x", members=members), 0.1))
    render(WouldChange("autogroup[noop:a,b]", Change("x", members=members), ("exec[z]",)))
    assert out.getvalue().splitlines() == [
        "noop[a]: did a",
        "noop[b]: did b",
        "noop[a]: would change: did a",
        "noop[b]: would change: did b",
        "  would refresh exec[z]",
    ]
    assert render.would_change == {"noop[a]", "noop[b]"}
