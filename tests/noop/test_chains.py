"""``--noop`` predicts a chain of changes whole: what a resource would change flows to
the resources that read it (a ``source:``, an ``ifnewer`` guard, a received value, a
refresh), so the dry run names exactly what the real run that follows does."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import msgspec

from convergent import Exec, File, Graph, Kv, Noop, Password, Resource
from convergent.engine.report import WouldChange
from convergent.resources.base import Meta
from tests.noop.support import noop_then_real, run_once


def _age(path: Path, seconds: float) -> None:
    """Give ``path`` a modification time ``seconds`` in the past."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_source_chain_is_predicted_to_its_refresh(tmp_path: Path) -> None:
    """A source that would change -> the file copying it -> the make-style exec whose
    ifnewer source that copy is -> the refresh it sends: 4 of 4 predicted."""
    src, build = tmp_path / "src", tmp_path / "build"
    src.mkdir()
    build.mkdir()
    (src / "app.c").write_text("v1\n")
    (build / "app.c").write_text("v1\n")
    (build / "app.o").write_text("v1\n")
    _age(src / "app.c", 300)
    _age(build / "app.c", 200)
    _age(build / "app.o", 100)  # up to date before the change

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(File(str(src / "app.c"), content="v2\n"))
        g.add(File(str(build / "app.c"), source=str(src / "app.c")), require=[f"file[{src}/app.c]"])
        g.add(
            Exec(
                "make",
                cmd=["cp", str(build / "app.c"), str(build / "app.o")],
                ifnewer={"target": str(build / "app.o"), "sources": [str(build / "app.c")]},
            ),
            require=[f"file[{build}/app.c]"],
        )
        g.add(
            Exec("restart", cmd=["touch", str(tmp_path / "restarted")], refresh_only=True),
            require=["exec[make]"],
        )
        g.add_edge("exec[make]", "exec[restart]", notify=True)
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    chain = {f"file[{src}/app.c]", f"file[{build}/app.c]", "exec[make]", "exec[restart]"}
    assert outcome.would == chain
    assert outcome.may == {}
    assert outcome.real == chain
    assert (build / "app.o").read_text() == "v2\n" and (tmp_path / "restarted").exists()


def test_password_chain_is_predicted_through_its_receiver_and_creates_guards(
    tmp_path: Path,
) -> None:
    """A new password -> the file receiving it ("would change (secret)") -> an exec whose
    ``creates`` that file now satisfies (not run) and one whose ``creates`` is missing
    (run) -> the refresh it sends. The secret's stand-in is never shown."""
    state = str(tmp_path / "state")
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    var.mkdir()
    asyncio.run(run_once(lambda: _one(Noop("start")), state))  # the state directory exists
    secret_file = str(etc / "db.pass")

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Password("db"))
        g.add(File(secret_file, mode="0600"), recv={"content": "password[db].password"})
        g.add(
            Exec(
                "default-pass",
                cmd=["sh", "-c", f"echo default > {secret_file}"],
                creates=secret_file,
                meta=Meta(autoedge=False),
            ),
            require=[f"file[{secret_file}]"],
        )
        g.add(
            Exec("initdb", cmd=["touch", str(var / "PG_VERSION")], creates=str(var / "PG_VERSION")),
            require=[f"file[{secret_file}]"],
        )
        g.add(Exec("restart", cmd=["true"], refresh_only=True), require=["exec[initdb]"])
        g.add_edge("exec[initdb]", "exec[restart]", notify=True)
        return g

    outcome = asyncio.run(noop_then_real(graph, state))
    chain = {"password[db]", f"file[{secret_file}]", "exec[initdb]", "exec[restart]"}
    assert outcome.would == chain
    assert outcome.may == {}
    assert outcome.real == chain
    receiver = next(
        r
        for r in outcome.noop_reports
        if isinstance(r, WouldChange) and r.resource == f"file[{secret_file}]"
    )
    assert receiver.change is not None and receiver.change.summary.endswith("(secret)")
    shown = "".join(msgspec.json.encode(r).decode() for r in outcome.noop_reports)
    assert not any(0xE000 <= ord(c) < 0xF900 for c in shown)  # the stand-in's characters
    assert Path(secret_file).read_text() not in shown


def test_kv_chain_is_predicted_through_its_receiver_to_the_refresh(tmp_path: Path) -> None:
    """A kv value that would change -> the file receiving it -> the refresh it sends."""
    state = str(tmp_path / "state")
    target, reloaded = tmp_path / "upstream", tmp_path / "reloaded"

    def graph(value: str) -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Kv("port", value=value))
        g.add(File(str(target)), recv={"content": "kv[port].value"})
        g.add(Exec("reload", cmd=["touch", str(reloaded)], refresh_only=True))
        g.add_edge(f"file[{target}]", "exec[reload]", notify=True)
        return g

    asyncio.run(run_once(lambda: graph("8080"), state))
    reloaded.unlink()
    outcome = asyncio.run(noop_then_real(lambda: graph("8081"), state))
    chain = {"kv[port]", f"file[{target}]", "exec[reload]"}
    assert outcome.would == chain
    assert outcome.may == {}
    assert outcome.real == chain
    assert target.read_text() == "8081" and reloaded.exists()


def _one(resource: Resource[Any]) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    g.add(resource)
    return g
