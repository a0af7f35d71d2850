"""Bad input never exhausts memory: a policy file has a size limit, huge lines are cheap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convergent.errors import PolicyError
from convergent.policy import build, load_policy, load_policy_text, nodes
from convergent.policy.fast import load_plain
from convergent.policy.loader import MAX_POLICY_BYTES, _load_yaml
from convergent.policy.nodes import TooManyResources, TooManyValues, compose, expanded_size

MIB = 1024 * 1024


# The check runs in a grandchild: a child's peak RSS counts the copy of its parent it
# started as (this test process), a grandchild started by a small Python does not.
_MEASURE = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "convergent", "check", sys.argv[1]],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sys.stderr.buffer.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def _check(policy: Path) -> tuple[int, str, float]:
    """``convergent check POLICY``: exit code, stderr, the command's peak RSS in MiB."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(policy)], capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stderr, int(done.stdout) / 1024  # ru_maxrss is in KiB


def test_a_policy_over_the_size_limit_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    policy = tmp_path / "huge.yaml"
    policy.write_text('resources:\n  - file: /srv/a\n    content: "' + "x" * (30 * MIB) + '"\n')
    code, err, peak = _check(policy)
    assert code == 2
    assert err == (
        f"{policy}:1:1: the policy is {policy.stat().st_size:,} bytes, over the limit of "
        f"{MAX_POLICY_BYTES:,} bytes (16 MiB); split it into smaller policies, or move large "
        "contents into files that 'source:' copies\n"
    )
    assert peak < 60, f"checking a refused policy took {peak:.0f} MiB"


def test_a_policy_just_under_the_size_limit_with_huge_lines_loads_with_bounded_memory(
    tmp_path: Path,
) -> None:
    head = 'resources:\n  - file: /srv/a\n    content: "' + "x" * MIB + '"\n'
    padding = MAX_POLICY_BYTES - len(head) - 100
    policy = tmp_path / "big.yaml"
    policy.write_text(head + "# " + "y" * padding + "\n  - noop: done\n")
    assert policy.stat().st_size < MAX_POLICY_BYTES
    code, err, peak = _check(policy)
    assert (code, err) == (0, "")
    assert peak < 300, f"checking a 16 MiB policy took {peak:.0f} MiB"


def test_a_policy_just_under_the_size_limit_with_one_huge_value_loads(tmp_path: Path) -> None:
    policy = tmp_path / "value.yaml"
    value = "z" * (MAX_POLICY_BYTES - 60)
    policy.write_text("resources:\n  - file: /srv/a\n    content: '" + value + "'\n")
    assert policy.stat().st_size <= MAX_POLICY_BYTES
    code, err, peak = _check(policy)
    assert (code, err) == (0, "")
    assert peak < 300, f"checking a 16 MiB value took {peak:.0f} MiB"


def test_the_size_limit_applies_to_a_file_that_grows_while_read(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("resources:\n  - noop: a\n" + "# padding\n" * 10)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy, max_bytes=50)
    assert "over the limit of 50 bytes" in str(caught.value)
    assert load_policy(policy, max_bytes=policy.stat().st_size).vertices


def test_the_size_limit_applies_to_policy_text() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text("resources: []\n" + " " * 100, "t.yaml", max_bytes=100)
    assert str(caught.value) == (
        "t.yaml:1:1: the policy is 114 characters, over the limit of 100 characters; "
        "split it into smaller policies, or move large contents into "
        "files that 'source:' copies"
    )


def test_the_fast_path_runs_no_regex_over_a_long_line() -> None:
    text = 'resources:\n  - file: /srv/a\n    content: "' + "x" * 5000 + '"\n'
    assert load_plain(text) is None  # left to libyaml, whose memory does not grow with it
    assert load_policy_text(text)["file[/srv/a]"].params.content == "x" * 5000


def test_problems_about_a_resource_with_a_huge_name_stay_small() -> None:
    name = "n" * 100_000
    text = "resources:\n  - noop: " + name + "\n" + "".join(f"    p{i}: 1\n" for i in range(2000))
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "site.yaml")
    problems = caught.value.problems
    assert len(problems) == 2000
    assert max(len(str(problem)) for problem in problems) < 400  # not a copy of the name each
    assert str(problems[0]).startswith("site.yaml:3:5: noop[nnn")
    assert str(problems[0]).endswith("...: unknown parameter 'p0'; noop takes: none")


@pytest.mark.timeout(60)
def test_a_fifo_with_no_writer_as_the_policy_does_not_hang_the_check(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    code, err, _ = _check(fifo)
    assert code == 2
    assert err.startswith(f"{fifo}:1:1: the policy is empty")


def test_a_directory_as_the_policy_is_refused(tmp_path: Path) -> None:
    code, err, _ = _check(tmp_path)
    assert (code, err) == (
        2,
        f"convergent: {tmp_path}: is a directory; give the path of a policy file\n",
    )


def test_more_resources_than_the_limit_are_refused_at_the_first_one_past_it(
    tmp_path: Path,
) -> None:
    """300,000 one-line resources (4.7 MB, under every other limit): the 250,001st is named,
    and the check stops before converting any (0.8 s and ~160 MiB here)."""
    policy = tmp_path / "many.yaml"
    with policy.open("w") as f:
        f.write("resources:\n")
        f.writelines(f"- noop: n{i}\n" for i in range(300_000))
    code, err, peak = _check(policy)
    assert code == 2
    assert err == (
        f"{policy}:250002:3: noop[n250000]: more than 250,000 resources in one policy, the "
        "most convergent loads (each is kept in memory and watched); give each host a policy "
        "with only its own resources, or split them between agents, each with its own "
        "policy and --state-dir\n"
    )
    assert peak < 400, f"refusing 300,000 resources took {peak:.0f} MiB"


@pytest.mark.parametrize("count", [4, 6], ids=["one past", "more past"])
@pytest.mark.parametrize("name", ["n{i}", "{i}"], ids=["fast path", "full path"])
def test_both_paths_refuse_the_first_resource_past_the_limit_alike(
    monkeypatch: pytest.MonkeyPatch, name: str, count: int
) -> None:
    """With the limit at 3: the fast path, libyaml's composer (stopping at the entry after
    the first one past: "more past") and the builder (one past) report the same problem."""
    text = "resources:\n" + "".join(f"  - noop: {name.format(i=i)}\n" for i in range(count))
    assert (load_plain(text, "p.yaml") is None) == (name == "{i}")  # a number: the full path
    for module in (build, nodes):
        monkeypatch.setattr(module, "MAX_RESOURCES", 3)
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.column) == ("p.yaml", 5, 5)
    assert problem.resource == f"noop[{name.format(i=3)}]"
    assert problem.message.startswith("more than 250,000 resources in one policy")
    with pytest.raises(PolicyError) as full:
        _load_yaml(text, "p.yaml")
    assert full.value.problems == caught.value.problems
    for module in (build, nodes):
        monkeypatch.setattr(module, "MAX_RESOURCES", count)
    assert len(load_policy_text(text, "p.yaml").vertices) == count


def test_the_full_path_counts_every_value_it_composes_whatever_its_tag_and_no_alias() -> None:
    text = "a: &x !!seq [!!str 1, 2, {b: !!int 3}]\nc: *x\nd: *x\n"
    written = expanded_size(compose(text))[0]  # type: ignore[arg-type]
    assert written == 10  # the mapping, a, the list, 1, 2, {b: 3} (three), c, d: no alias
    assert compose(text, limit=written) is not None
    with pytest.raises(TooManyValues, match=r"more than 3,000,000 values"):
        compose(text, limit=written - 1)


def test_libyamls_composer_stops_at_the_entry_after_the_first_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the top-level ``resources:`` list is counted as it is read (a bundle's list,
    mgmt's mapping of kinds are the builder's to count)."""
    monkeypatch.setattr(nodes, "MAX_RESOURCES", 3)
    entries = "".join(f"  - noop: {i}\n" for i in range(5))
    with pytest.raises(TooManyResources) as caught:
        compose("vars: {}\nresources:\n" + entries)
    assert caught.value.entry.start_mark.line == 5  # the fourth entry: the first past 3
    assert compose("resources:\n" + entries[: entries.index("  - noop: 4")]) is not None
    assert compose("bundles:\n  b:\n    resources:\n" + entries.replace("  -", "      -"))
    assert compose("graph: g\nresources:\n  noop:\n" + entries.replace("noop: ", "name: "))


def test_an_alias_past_the_limit_does_not_hide_the_entries_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An alias item makes no value of its own as the list is read: the next entry after
    the limit still stops the load, naming the one past it (here the aliased entry)."""
    for module in (build, nodes):
        monkeypatch.setattr(module, "MAX_RESOURCES", 3)
    text = "resources:\n  - &e {noop: a}\n  - noop: b\n  - noop: c\n  - *e\n" + "".join(
        f"  - noop: n{i}\n" for i in range(5)
    )
    with pytest.raises(TooManyResources) as caught:
        compose(text)
    assert caught.value.entry.start_mark.line == 1  # the aliased entry, as written
    with pytest.raises(PolicyError) as refused:
        load_policy_text(text, "p.yaml")
    (problem,) = refused.value.problems
    assert (problem.line, problem.resource) == (2, "noop[a]")


@pytest.mark.parametrize(
    "text",
    [
        "x: &l [{noop: a}, {noop: b}, {noop: c}, {noop: d}, {noop: e}]\nresources: *l\n",
        "<<: {resources: [{noop: a}, {noop: b}, {noop: c}, {noop: d}, {noop: e}]}\n",
    ],
    ids=["an aliased list", "a merged key"],
)
def test_a_resources_list_read_whole_is_refused_before_any_entry_is_read(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    from convergent.policy import native

    for module in (build, native, nodes):
        monkeypatch.setattr(module, "MAX_RESOURCES", 3)
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml")
    problems = [p for p in caught.value.problems if "resources in one policy" in p.message]
    assert [p.resource for p in problems] == ["noop[d]"]


def test_entries_the_language_may_leave_out_are_counted_as_made_not_as_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fleet's policy may write more entries than one host keeps (``if:``): the limit is
    on the resources this host gets."""
    from convergent.policy import lang

    for module in (build, lang, nodes):
        monkeypatch.setattr(module, "MAX_RESOURCES", 3)
    text = "resources:\n" + "".join(
        f"  - noop: n{i}\n    if: {'any' if i == 4 else 'windows'}\n" for i in range(6)
    )
    assert sorted(load_policy_text(text, "p.yaml").vertices) == ["noop[n4]"]
