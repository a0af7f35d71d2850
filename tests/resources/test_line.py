"""The ``line`` kind on real files: edits that leave the rest byte for byte, owner and
mode kept, concurrent edits of one file never lost, drift put back, noop inert."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Converged, WouldChange
from convergent.errors import ParamError, PolicyError, ResourceError
from convergent.graph import Graph
from convergent.policy import load_policy_text
from convergent.resources.base import Resource
from convergent.resources.line import Line
from tests.resources.kinds import Reports, Shared, check, context, converge, engine_run, run

NOBODY = 65534


def test_matching_line_is_replaced_and_the_rest_stays_byte_identical(tmp_path: Path) -> None:
    target = tmp_path / "sshd_config"
    before = b"# \xff not utf-8\r\nPort 22\n#PermitRootLogin yes\n\n  trailing spaces  \nlast"
    target.write_bytes(before)
    change = converge(
        Line("root", path=str(target), match="^#?PermitRootLogin", text="PermitRootLogin no")
    )
    assert change is not None and change.summary == "line 3 replaced"
    assert change.diff is not None and "-#PermitRootLogin yes\n+PermitRootLogin no\n" in change.diff
    assert target.read_bytes() == before.replace(b"#PermitRootLogin yes", b"PermitRootLogin no")


def test_the_last_matching_line_is_the_one_replaced(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x=1\nx=2\ny\n")
    converge(Line("x", path=str(target), match="^x=", text="x=9"))
    assert target.read_text() == "x=1\nx=9\ny\n"


def test_a_missing_line_is_added_at_the_end_with_a_line_end(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("a\nb")  # no final newline
    change = converge(Line("c", path=str(target), text="c"))
    assert change is not None and change.summary == "line 3 added"
    assert target.read_text() == "a\nb\nc\n"


def test_a_line_already_there_is_left_alone_even_without_match(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("a\nc\nb\n")
    assert check(Line("c", path=str(target), text="c")) is None


def test_insert_after_and_insert_before_anchor_the_new_line_at_the_first_match(
    tmp_path: Path,
) -> None:
    target = tmp_path / "f"
    target.write_text("[one]\nx\n[two]\ny\n[two]\n")
    converge(Line("after", path=str(target), text="a=1", insert_after=r"^\[two\]"))
    converge(Line("before", path=str(target), text="b=1", insert_before=r"^\[two\]"))
    assert target.read_text() == "[one]\nx\nb=1\n[two]\na=1\ny\n[two]\n"


def test_an_anchor_that_matches_nothing_adds_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("a\n")
    converge(Line("x", path=str(target), text="x", insert_after="^nothing"))
    assert target.read_text() == "a\nx\n"


def test_crlf_files_keep_their_line_ends(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"a=1\r\nb=2\r\n")
    converge(Line("a", path=str(target), match="^a=", text="a=2"))
    converge(Line("c", path=str(target), text="c=3"))
    assert target.read_bytes() == b"a=2\r\nb=2\r\nc=3\r\n"


def test_absent_removes_every_matching_line(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("keep\ndebug=1\nkeep2\ndebug=2\n")
    change = converge(Line("nodebug", path=str(target), match="^debug=", state="absent"))
    assert change is not None and change.summary == "2 lines removed"
    assert target.read_text() == "keep\nkeep2\n"


def test_absent_by_line_removes_equal_lines_only(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("a\nab\na\n")
    converge(Line("a", path=str(target), text="a", state="absent"))
    assert target.read_text() == "ab\n"


def test_a_rewritten_file_keeps_its_owner_and_mode(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another owner")
    target = tmp_path / "f"
    target.write_text("a\n")
    os.chown(target, NOBODY, NOBODY)
    target.chmod(0o640)
    converge(Line("b", path=str(target), text="b"))
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temp file left


def test_a_missing_file_is_an_error_unless_create(tmp_path: Path) -> None:
    target = tmp_path / "new"
    with pytest.raises(ResourceError, match="does not exist; set create: true"):
        check(Line("x", path=str(target), text="x"))
    assert not target.exists()
    change = converge(Line("x", path=str(target), text="x", create=True))
    assert change is not None and change.summary == "created with the line"
    assert target.read_text() == "x\n"
    assert check(Line("x", path=str(tmp_path / "gone"), text="x", state="absent")) is None


def test_a_symlink_at_the_path_is_refused_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("a\n")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ResourceError, match="is a symlink"):
        check(Line("x", path=str(tmp_path / "link"), text="x"))
    assert real.read_text() == "a\n"


def test_concurrent_line_resources_on_one_file_never_lose_each_others_edits(
    tmp_path: Path,
) -> None:
    target = tmp_path / "f"
    target.write_text("head\n")
    (tmp_path / "via").symlink_to(tmp_path)  # one file, two spellings of its path
    spellings = [target, tmp_path / "via" / "f"]
    lines = [Line(f"l{i}", path=str(spellings[i % 2]), text=f"line {i}") for i in range(30)]
    shared = Shared()

    async def main() -> None:
        # Every check sees the file as it was; the applies then run at the same time.
        changes = [await line.check(context(line, shared)) for line in lines]
        assert all(change is not None for change in changes)
        await asyncio.gather(
            *(
                line.apply(context(line, shared), change)
                for line, change in zip(lines, changes, strict=True)
                if change is not None
            )
        )

        await shared.aclose()

    run(main())
    assert target.read_text().splitlines() == ["head"] + [f"line {i}" for i in range(30)]


def test_many_line_resources_on_one_file_converge_through_the_engine(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x=0\n")
    graph: Graph[Resource[Any]] = Graph()
    for i in range(20):
        graph.add(Line(f"k{i}", path=str(target), match=f"^k{i}=", text=f"k{i}=on"))
    graph.add(Line("x", path=str(target), match="^x=", text="x=1"))
    result, _ = engine_run(graph)
    assert result.failed == 0
    assert sorted(target.read_text().splitlines()) == sorted(
        ["x=1"] + [f"k{i}=on" for i in range(20)]
    )
    again, reports = engine_run(graph)
    assert again.changed == 0 and not any(isinstance(r, Changed) for r in reports.items)


def test_a_line_removed_by_hand_is_put_back(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("a\n")
    graph: Graph[Resource[Any]] = Graph()
    graph.add(Line("b", path=str(target), text="b"))

    async def drift(reports: Reports) -> None:
        assert target.read_text() == "a\nb\n"
        mark = len(reports.items)
        target.write_text("a\nz\n")
        changed = await reports.next(Changed, mark)
        assert changed.summary == "line 3 added"
        await reports.next(Converged, mark)
        assert target.read_text() == "a\nz\nb\n"

    result, _ = engine_run(graph, during=drift)
    assert result.failed == 0


def test_noop_reports_the_edit_and_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("a=1\n")
    before = target.stat()
    graph: Graph[Resource[Any]] = Graph()
    graph.add(Line("a", path=str(target), match="^a=", text="a=2"))
    graph.add(Line("new", path=str(tmp_path / "new"), text="x", create=True))
    result, reports = engine_run(graph, noop=True)
    assert result.failed == 0
    would = {
        r.resource: r.change
        for r in reports.items
        if isinstance(r, WouldChange) and r.change is not None
    }
    assert would["line[a]"].summary == "line 1 replaced"
    assert would["line[new]"].summary == "created with the line"
    assert target.read_text() == "a=1\n" and target.stat().st_mtime_ns == before.st_mtime_ns
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("fields", "field", "hint"),
    [
        ({"text": "x", "match": "("}, "match", "not a valid regular expression"),
        ({"text": "x", "insert_after": "[a-"}, "insert_after", "not a valid regular expression"),
        ({"text": "x", "path": "rel"}, "path", "absolute path"),
        ({"text": "a\nb"}, "text", "one line"),
        ({}, "text", "needs the text"),
        ({"state": "absent"}, "match", "needs match"),
        ({"text": "x", "insert_after": "a", "insert_before": "b"}, "insert_before", "exclusive"),
        ({"text": "x", "state": "absent", "insert_after": "a"}, "insert_after", "no meaning"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(
    fields: dict[str, Any], field: str, hint: str
) -> None:
    fields.setdefault("path", "/etc/f")
    with pytest.raises(ParamError) as caught:
        Line("x", **fields)
    assert caught.value.field == field
    assert hint in caught.value.message


def test_a_regex_that_does_not_compile_is_refused_at_load_with_its_location() -> None:
    text = 'resources:\n  - line: x\n    path: /etc/f\n    text: "a"\n    match: "a(b"\n'
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "site.yaml")
    message = str(caught.value)
    assert message.startswith("site.yaml:5:12: line[x]: match: 'a(b' is not a valid regular")
    assert "missing ), unterminated subpattern at position 1" in message
