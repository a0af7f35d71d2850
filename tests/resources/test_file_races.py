"""A local user (uid 65534) racing the root agent's ``file`` resources never steers them:
no chmod through a swapped-in symlink, no deletion through a symlinked parent, no read of
a temp file, no hang on a FIFO."""

from __future__ import annotations

import asyncio
import ctypes
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Engine
from convergent.errors import ResourceError
from convergent.graph import Graph
from convergent.resources.base import Context, Resource
from convergent.resources.file import File
from tests.host.hostile import NOBODY, TIMEOUT, Hostile, exchange, lab, needs_root, run_as_nobody
from tests.resources.test_file import context as _context

pytestmark = [needs_root, pytest.mark.timeout(120)]

ROUNDS = 300


def _converge_once(resource: File) -> str:
    """check, then apply what was found: "changed", "clean" or "refused"."""

    async def main() -> str:
        ctx = _context(resource)
        change = await resource.check(ctx)
        if change is None:
            return "clean"
        await resource.apply(ctx, change)
        return "changed"

    try:
        return asyncio.run(main())
    except ResourceError:
        return "refused"


def _swapper(a: Path, b: Path, bound: int = 2_000_000) -> Any:
    def work(stopped: Any) -> int:
        swaps = 0
        while swaps < bound and (swaps % 256 or not stopped()):
            swaps += exchange(str(a), str(b))
        return swaps

    return work


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_chmod_never_reaches_a_swapped_in_symlink(tmp_path: Path, kind: str) -> None:
    root = lab(tmp_path)
    home = root / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    decoy = root / "decoy"
    target = home / "managed"
    if kind == "file":
        decoy.write_text("root's secret\n")
        target.write_text("managed\n")
        real = os.open(target, os.O_RDONLY)
        resource = File(str(target), mode="0666")
    else:
        decoy.mkdir()
        target.mkdir()
        real = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        resource = File(str(target), state="directory", mode="0777")
    decoy.chmod(0o600 if kind == "file" else 0o700)
    run_as_nobody(lambda: os.symlink(decoy, home / "swap"))
    outcomes: dict[str, int] = {}
    try:
        with Hostile(_swapper(target, home / "swap")) as user:
            for _ in range(ROUNDS):
                os.fchmod(real, 0o600)  # the managed thing drifts, wherever its name is
                outcome = _converge_once(resource)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        os.close(real)
    assert stat.S_IMODE(decoy.stat().st_mode) == (0o600 if kind == "file" else 0o700)
    assert user.result > 0
    assert outcomes.get("changed") and outcomes.get("refused"), outcomes  # a real race


def test_reverse_never_follows_a_symlink_that_replaced_the_directory(tmp_path: Path) -> None:
    from convergent.resources.base import Change
    from convergent.state import StateDB

    root = lab(tmp_path)
    home = root / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    managed = home / "d"
    managed.mkdir(mode=0o777)
    managed.chmod(0o777)
    decoy = root / "decoy"
    decoy.mkdir(mode=0o700)
    resource = File(str(managed), state="directory", mode="0755")
    with StateDB(tmp_path / "state.db") as state:
        ctx = Context(
            resource.id,
            ready=lambda: None,
            event=lambda: None,
            log=lambda message: None,
            shared=lambda factory: factory(),
            state=state,
        )

        async def converge() -> Change | None:
            change = await resource.check(ctx)
            assert change is not None
            resource.record_reverse(ctx, change)
            await resource.apply(ctx, change)
            return await resource.check(ctx)

        assert asyncio.run(converge()) is None

        def replace() -> None:
            os.rename(managed, home / "moved")
            os.symlink(decoy, managed)

        run_as_nobody(replace)
        with pytest.raises(ResourceError, match=f"{managed} is a symlink"):
            asyncio.run(resource.reverse(ctx))
    assert stat.S_IMODE(decoy.stat().st_mode) == 0o700


@pytest.mark.timeout(60)
def test_fifo_at_path_is_refused_without_blocking(tmp_path: Path) -> None:
    root = lab(tmp_path)
    home = root / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    target = home / "conf"
    target.write_text("old\n")
    run_as_nobody(lambda: os.mkfifo(home / "pipe"))
    resource = File(str(target), content="new\n")
    outcomes: dict[str, int] = {}

    def check() -> str:
        try:
            change = asyncio.run(resource.check(_context(resource)))
        except ResourceError as exc:
            assert "fifo" in str(exc)
            return "refused"
        assert change is not None and change.summary == "content changed"
        return "would change"

    with Hostile(_swapper(target, home / "pipe")) as user:
        for _ in range(ROUNDS):
            outcome = check()
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert user.result > 0
    assert outcomes.get("refused") and outcomes.get("would change"), outcomes
    # A FIFO that stays is refused by check at once, naming it.
    os.mkfifo(root / "fifo")
    with pytest.raises(ResourceError, match=r"fifo is a fifo; set force: true"):
        asyncio.run(File(str(root / "fifo"), content="x").check(_context(resource)))


@pytest.mark.timeout(60)
def test_a_fifo_at_one_path_never_stalls_the_repair_of_another(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    source = tmp_path / "source-pipe"
    os.mkfifo(source)
    graph: Graph[Resource[Any]] = Graph()
    graph.add(File(str(tmp_path / "pipe"), content="x\n"))
    graph.add(File(str(tmp_path / "copy"), source=str(source)))
    graph.add(File(str(tmp_path / "fine"), content="repaired\n"))

    async def main() -> Any:
        return await asyncio.wait_for(Engine(graph, converged_timeout=0).run(), TIMEOUT)

    result = asyncio.run(main())
    assert result.failed == 2
    assert (tmp_path / "fine").read_text() == "repaired\n"
    assert stat.S_ISFIFO((tmp_path / "pipe").lstat().st_mode)


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_absent_never_deletes_through_a_user_symlinked_parent(tmp_path: Path, link: str) -> None:
    root = lab(tmp_path)
    x = root / "x"
    x.mkdir()
    os.chown(x, NOBODY, NOBODY)
    victim = root / "etc"
    victim.mkdir()
    (victim / "old.conf").write_text("root's config\n")
    target = x / "sub" / "old.conf"
    pointer = str(victim) if link == "absolute" else "../etc"
    run_as_nobody(lambda: os.symlink(pointer, x / "sub"))
    with pytest.raises(ResourceError) as info:
        _converge_strict(File(str(target), state="absent"))
    assert f"the symlink {x / 'sub'} is owned by nobody" in str(info.value)
    assert (victim / "old.conf").read_text() == "root's config\n"


def _converge_strict(resource: File) -> None:
    async def main() -> None:
        ctx = _context(resource)
        change = await resource.check(ctx)
        if change is not None:
            await resource.apply(ctx, change)

    asyncio.run(main())


_IN_CREATE = 0x100


def _read_temps(directory: Path, stop_name: str, prefix: str) -> Any:
    """Runs as the hostile user: open every temp file as soon as inotify reports it."""

    def work(stopped: Any) -> dict[str, int]:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC)
        assert libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CREATE) >= 0
        seen = opened = leaked = 0
        while True:
            data = os.read(fd, 65536)
            offset = 0
            while offset < len(data):
                _, _, _, size = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + size].rstrip(b"\0").decode()
                offset += 16 + size
                if name == stop_name:
                    return {"seen": seen, "opened": opened, "leaked": leaked}
                if not name.startswith(prefix):
                    continue
                seen += 1
                try:
                    with open(directory / name, "rb") as f:
                        opened += 1
                        leaked += len(f.read())
                except OSError:
                    pass

    return work


def test_temp_file_is_never_readable_by_others(tmp_path: Path) -> None:
    root = lab(tmp_path)
    secrets = root / "secrets"
    secrets.mkdir(mode=0o755)
    target = secrets / "db.key"
    rewrites = ROUNDS
    with Hostile(_read_temps(secrets, "stop", ".db.key.convergent-")) as user:
        for i in range(rewrites):
            _converge_strict(File(str(target), content=f"secret {i}\n" * 1000, mode="0600"))
        (secrets / "stop").write_text("")
    assert user.result["seen"] > 0, user.result  # it really watched the temp files appear
    assert user.result["opened"] == 0, user.result
    assert user.result["leaked"] == 0, user.result


def test_chmod_never_reaches_a_file_hard_linked_into_a_users_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    secret = tmp_path / "secret"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    # What the user could do where fs.protected_hardlinks is 0 (root makes it here).
    os.link(secret, home / "managed")
    with pytest.raises(ResourceError, match="has 2 hard links"):
        _converge_strict(File(str(home / "managed"), mode="0644", owner=str(NOBODY)))
    st = secret.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)
