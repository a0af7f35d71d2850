"""The guarantee of ``--noop``, as a property: on random graphs and random pre-states,
every change the dry run predicts happens in the real run that follows from the same
state, and every real change was predicted as *would* or *may* (no surprise):
``would <= real <= would | may`` (as sets); and *may* is empty when no guard command is
involved.

The graphs: files (content, ``source``, received values, directories, absent), ``exec``
with ``creates``/``removes``/``ifnewer`` whose commands do what their guards declare
(and, sometimes, an ``unless`` guard command), ``kv``, ``password``, ``notify`` edges to
refresh-only commands and ``recv`` edges. Each example runs in process through
``convergent.api.arun``: a set-up run, the noop run, the real run.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from convergent import Exec, File, Graph, Kv, Password, Resource
from convergent.resources.base import Meta
from tests.noop.support import noop_then_real, run_once

F_PATHS = 5  # paths files manage
E_PATHS = 3  # paths commands create or remove
T_PATHS = 2  # make-style targets, one command each
CONTENTS = ("a\n", "b\n")


@dataclass
class Case:
    """One random graph and pre-state (indices into the path and resource lists)."""

    files: list[tuple[int, str, Any, str | None]]  # (path, how, what, mode)
    execs: list[tuple[str, int, tuple[int, ...], int | None]]  # (role, path, sources, unless)
    kvs: list[tuple[str, str | None]]  # (value, value before)
    passwords: list[bool]  # stored before
    notify: list[tuple[str, int]]  # (sender, refresh command)
    refreshers: int
    before_f: list[str | None]  # content of each F path before (None: absent)
    before_e: list[bool]  # each E path exists before
    before_t: list[bool]  # each make target exists before


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kvs = draw(
        st.lists(
            st.tuples(st.sampled_from(["1", "2"]), st.sampled_from([None, "1", "2"])),
            max_size=2,
        )
    )
    passwords = draw(st.lists(st.booleans(), max_size=1))
    paths = draw(st.lists(st.integers(0, F_PATHS - 1), unique=True, max_size=F_PATHS))
    files: list[tuple[int, str, Any, str | None]] = []
    existing: list[int] = []  # F paths a file leaves as a regular file (a source may read)
    for path in paths:
        hows = ["content", "absent", "directory"]
        if existing:
            hows.append("source")
        if kvs:
            hows.append("kv")
        if passwords:
            hows.append("password")
        how = draw(st.sampled_from(hows))
        what: Any = None
        if how == "content":
            what = draw(st.sampled_from(CONTENTS))
        elif how == "source":
            what = draw(st.sampled_from(existing))
        elif how == "kv":
            what = draw(st.integers(0, len(kvs) - 1))
        elif how == "password":
            what = 0
        mode = draw(st.sampled_from([None, "0600", "0644"])) if how != "absent" else None
        files.append((path, how, what, mode))
        if how in ("content", "source", "kv", "password"):
            existing.append(path)
    execs: list[tuple[str, int, tuple[int, ...], int | None]] = []
    targets = list(range(T_PATHS))
    # Each command path is created or removed, never both: two commands that fight over
    # a path never converge (each one's watch sees the other's work).
    removed = draw(st.lists(st.booleans(), min_size=E_PATHS, max_size=E_PATHS))
    for _ in range(draw(st.integers(0, 3))):
        roles = ["command"] + (["ifnewer"] if targets and existing else [])
        role = draw(st.sampled_from(roles))
        sources: tuple[int, ...] = ()
        if role == "ifnewer":
            path = targets.pop(0)
            sources = tuple(draw(st.lists(st.sampled_from(existing), min_size=1, max_size=2)))
        else:
            path = draw(st.integers(0, E_PATHS - 1))
            role = "removes" if removed[path] else "creates"
        unless = None
        if paths and draw(st.integers(0, 4)) == 0:
            unless = draw(st.sampled_from([p for p, _, _, _ in files]))
        execs.append((role, path, sources, unless))
    refreshers = draw(st.integers(0, 2))
    senders = [f"f{i}" for i in range(len(files))] + [f"k{i}" for i in range(len(kvs))]
    senders += [f"p{i}" for i in range(len(passwords))] + [f"e{i}" for i in range(len(execs))]
    notify: list[tuple[str, int]] = []
    if refreshers and senders:
        notify = draw(
            st.lists(
                st.tuples(st.sampled_from(senders), st.integers(0, refreshers - 1)),
                unique=True,
                max_size=3,
            )
        )
    before_f = draw(
        st.lists(st.sampled_from([None, *CONTENTS]), min_size=F_PATHS, max_size=F_PATHS)
    )
    before_e = draw(st.lists(st.booleans(), min_size=E_PATHS, max_size=E_PATHS))
    before_t = draw(st.lists(st.booleans(), min_size=T_PATHS, max_size=T_PATHS))
    return Case(files, execs, kvs, passwords, notify, refreshers, before_f, before_e, before_t)


def _graph(case: Case, root: Path) -> Graph[Resource[Any]]:
    f = [str(root / f"f{i}") for i in range(F_PATHS)]
    e = [str(root / f"e{i}") for i in range(E_PATHS)]
    t = [str(root / f"t{i}") for i in range(T_PATHS)]
    g: Graph[Resource[Any]] = Graph()
    for i, (value, _) in enumerate(case.kvs):
        g.add(Kv(f"k{i}", value=value))
    for i, _ in enumerate(case.passwords):
        g.add(Password(f"p{i}"))
    ids: dict[str, str] = {f"k{i}": f"kv[k{i}]" for i in range(len(case.kvs))}
    ids.update({f"p{i}": f"password[p{i}]" for i in range(len(case.passwords))})
    file_of: dict[int, str] = {}
    for n, (path, how, what, mode) in enumerate(case.files):
        fields: dict[str, Any] = {"mode": mode} if mode else {}
        require: list[str] = []
        recv = None
        if how == "content":
            fields["content"] = what
        elif how == "absent":
            fields["state"] = "absent"
            fields["force"] = True
        elif how == "directory":
            fields["state"] = "directory"
            fields["force"] = True
        elif how == "source":
            fields["source"] = f[what]
            require.append(file_of[what])
        elif how == "kv":
            recv = {"content": f"kv[k{what}].value"}
        else:
            recv = {"content": f"password[p{what}].password"}
        g.add(File(f[path], **fields), require=require, recv=recv)
        file_of[path] = ids[f"f{n}"] = f"file[{f[path]}]"
    for n, (role, path, sources, unless) in enumerate(case.execs):
        require = []
        fields = {}
        if role == "creates":
            fields = {"cmd": ["sh", "-c", f"echo made > {e[path]}"], "creates": e[path]}
        elif role == "removes":
            fields = {"cmd": ["rm", "-f", e[path]], "removes": e[path]}
        else:
            target = t[path]
            fields = {"cmd": ["touch", target]}
            fields["ifnewer"] = {"target": target, "sources": [f[s] for s in sources]}
            require += [file_of[s] for s in sources]
        for m, (other_role, other, _, _) in enumerate(case.execs[:n]):
            if other_role != "ifnewer" and role != "ifnewer" and other == path:
                require.append(f"exec[e{m}]")
        if unless is not None:
            fields["unless"] = f"test -e {f[unless]}"
            require.append(file_of[unless])
        g.add(Exec(f"e{n}", meta=Meta(autoedge=False), **fields), require=sorted(set(require)))
        ids[f"e{n}"] = f"exec[e{n}]"
    for n in range(case.refreshers):
        g.add(Exec(f"r{n}", cmd=["true"], refresh_only=True))
    for sender, n in case.notify:
        g.add_edge(ids[sender], f"exec[r{n}]", notify=True)
    return g


def _before(case: Case, root: Path) -> None:
    """The pre-state on disk, each path with its own age (no two share a time stamp)."""
    now = time.time()
    age = 1000.0
    named = [(f"f{i}", c) for i, c in enumerate(case.before_f)]
    named += [(f"e{i}", "was\n" if b else None) for i, b in enumerate(case.before_e)]
    named += [(f"t{i}", "old\n" if b else None) for i, b in enumerate(case.before_t)]
    for name, content in named:
        if content is not None:
            path = root / name
            path.write_text(content)
            age -= 10
            os.utime(path, (now - age, now - age))


def _setup(case: Case) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    for i, (_, before) in enumerate(case.kvs):
        g.add(Kv(f"k{i}", value=before))
    for i, stored in enumerate(case.passwords):
        if stored:
            g.add(Password(f"p{i}"))
    return g


@settings(
    max_examples=50,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no tracing
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_noop_predicts_every_real_change_and_nothing_else(case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "d"
        root.mkdir()
        state = str(Path(tmp) / "state")
        _before(case, root)
        asyncio.run(run_once(lambda: _setup(case), state))
        outcome = asyncio.run(noop_then_real(lambda: _graph(case, root), state))
    would, may, real = outcome.would, set(outcome.may), outcome.real
    assert would <= real, f"predicted, did not happen: {would - real}"
    assert real <= would | may, f"happened, not predicted: {real - would - may}"
    if all(unless is None for _, _, _, unless in case.execs):
        assert outcome.may == {}
