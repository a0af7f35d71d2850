"""Path resolution by CHASE_SAFE rules and opens that never follow or block (host/fs.py)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from convergent.host import fs
from tests.host.hostile import NOBODY, lab, needs_root, run_as_nobody


def _mine(path: Path) -> None:
    """Give ``path`` (a directory or a symlink) to the unprivileged user."""
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def test_the_final_component_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc/passwd")
    with fs.locate(str(tmp_path / "link")) as at:
        assert (at.dir, at.name) == (str(tmp_path), "link")
        st = fs.lstat(at)
        assert st is not None and stat.S_ISLNK(st.st_mode)
        with pytest.raises(fs.PathRefused, match="is a symlink"):
            fs.open_node(at)


def test_a_root_owned_symlink_in_a_parent_keeps_working(tmp_path: Path) -> None:
    real = tmp_path / "run"
    real.mkdir()
    (tmp_path / "var-run").symlink_to(real)  # like /var/run -> /run, owned by root
    with fs.locate(str(tmp_path / "var-run" / "app.pid")) as at:
        assert (at.dir, at.name) == (str(real), "app.pid")


def test_a_system_symlink_like_var_run_keeps_working() -> None:
    if not os.path.islink("/var/run"):
        pytest.skip("/var/run is not a symlink here")
    with fs.locate("/var/run/x") as at:
        assert at.dir == os.path.realpath("/var/run")


@needs_root
def test_a_users_symlink_into_a_root_directory_is_refused_naming_link_and_owners(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _mine(home)
    (home / "sub").symlink_to("/etc")
    _mine(home / "sub")
    with pytest.raises(fs.PathRefused) as info:
        fs.locate(str(home / "sub" / "passwd"))
    message = str(info.value)
    assert f"the symlink {home / 'sub'} is owned by nobody (uid {NOBODY})" in message
    assert "leads to /etc (from /, owned by root (uid 0))" in message  # its target, named
    assert "Fix:" in message


@needs_root
def test_a_users_relative_symlink_out_of_their_directory_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _mine(home)
    (tmp_path / "root-only").mkdir()
    (home / "sub").symlink_to("../root-only")
    _mine(home / "sub")
    with pytest.raises(fs.PathRefused, match="symlink") as info:
        fs.locate(str(home / "sub" / "f"))
    assert f"leads to {tmp_path} (owned by root (uid 0))" in str(info.value)  # named


@needs_root
def test_a_users_symlink_in_a_root_owned_sticky_directory_is_refused(tmp_path: Path) -> None:
    shared = lab(tmp_path) / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (tmp_path / "root-only").mkdir()
    run_as_nobody(lambda: os.symlink("../root-only", shared / "sub"))
    with pytest.raises(fs.PathRefused, match=f"{shared / 'sub'}"):
        fs.locate(str(shared / "sub" / "f"))


@needs_root
def test_a_users_symlink_within_their_own_tree_is_followed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "real").mkdir(parents=True)
    _mine(home)
    _mine(home / "real")
    (home / "alias").symlink_to("real")
    _mine(home / "alias")
    with fs.locate(str(home / "alias" / "f")) as at:
        assert at.dir == str(home / "real")


@needs_root
def test_a_users_directory_holding_a_root_directory_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "root-owned").mkdir(parents=True)
    _mine(home)
    with pytest.raises(fs.PathRefused, match=rf"the directory {home} is owned by nobody"):
        fs.locate(str(home / "root-owned" / "f"))


@needs_root
def test_a_parent_swapped_for_a_symlink_after_a_safe_walk_is_refused(tmp_path: Path) -> None:
    home = lab(tmp_path) / "home"
    (home / "sub").mkdir(parents=True)
    _mine(home)
    _mine(home / "sub")
    with fs.locate(str(home / "sub" / "f")):
        pass  # walked once: found again by openat2 from now on

    def swap() -> None:
        os.rename(home / "sub", home / "old")
        os.symlink("/etc", home / "sub")

    run_as_nobody(swap)
    with pytest.raises(fs.PathRefused, match="symlink"):
        fs.locate(str(home / "sub" / "f"))


def test_a_symlink_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError, match="symbolic links"):
        fs.locate(str(tmp_path / "a" / "f"))


def test_a_missing_parent_and_a_file_parent_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        fs.locate(str(tmp_path / "no" / "such" / "f"))
    assert missing.value.filename == str(tmp_path / "no")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(NotADirectoryError) as blocked:
        fs.locate(str(tmp_path / "plain" / "f"))
    assert blocked.value.filename == str(tmp_path / "plain")


def test_create_makes_the_missing_parents(tmp_path: Path) -> None:
    with fs.locate(str(tmp_path / "a" / "b" / "f"), create=True) as at:
        assert at.dir == str(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_follow_reads_through_a_final_root_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("data")
    (tmp_path / "link").symlink_to("real")
    with fs.locate(str(tmp_path / "link"), follow=True) as at:
        assert fs.read_regular(at)[0] == b"data"


@pytest.mark.timeout(30)
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with fs.locate(str(tmp_path / "pipe")) as at:
        with pytest.raises(fs.PathRefused, match="is a fifo, not a regular file"):
            fs.read_regular(at)
        with pytest.raises(fs.PathRefused, match="is a fifo"):
            fs.open_node(at)


def test_open_node_accepts_only_the_kind_asked_for(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with fs.locate(str(tmp_path / "d")) as at:
        fd, st = fs.open_node(at, directory=True)
        os.close(fd)
        assert stat.S_ISDIR(st.st_mode)
        with pytest.raises(fs.PathRefused, match="is a directory, not a regular file"):
            fs.open_node(at, directory=False)


@needs_root
def test_missing_parents_inside_a_users_directory_are_created_as_theirs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _mine(home)
    with fs.locate(str(home / ".config" / "app" / "conf"), create=True) as at:
        assert at.dir == str(home / ".config" / "app")
    for made in (home / ".config", home / ".config" / "app"):
        assert (made.stat().st_uid, made.stat().st_gid) == (NOBODY, NOBODY)


def test_the_root_directory_itself_can_be_located_and_opened() -> None:
    with fs.locate("/") as at:
        assert at.path == "/"
        fd, st = fs.open_node(at, directory=True)
        os.close(fd)
        assert st.st_ino == os.stat("/").st_ino


def _open_fds(path: Path) -> int:
    """How many descriptors of this process are open on ``path``."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return found


def test_checks_in_one_pass_of_the_loop_share_their_directory_and_leak_nothing(
    tmp_path: Path,
) -> None:
    """The checks of one pass of the event loop open a directory once; each gets its own
    descriptor of it, and the shared one is closed when the loop turns."""
    import asyncio

    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)

    async def one_pass() -> tuple[list[bytes | None], int, int, int]:
        await asyncio.sleep(0)
        before = _open_fds(tmp_path)
        read = []
        for name in ("a", "b", "c"):
            with fs.locate(str(tmp_path / name), check=True) as at:
                read.append(fs.read_if_regular(at)[0])
        during = _open_fds(tmp_path)
        await asyncio.sleep(0)  # the loop turns: the pass is over
        return read, before, during, _open_fds(tmp_path)

    read, before, during, after = asyncio.run(one_pass())
    assert read == [b"a", b"b", b"c"]
    assert during == before + 1  # the one shared directory descriptor
    assert after == before


def test_a_pass_of_checks_in_many_directories_holds_few_descriptors(tmp_path: Path) -> None:
    """A first pass starts 512 checks in one turn of the loop: were every directory kept,
    files in as many directories would take the agent to its descriptor limit (1,024 by
    default). At most ``fs._PASS_MAX`` are held; the checks beyond still read right."""
    import asyncio

    dirs = [tmp_path / f"d{i}" for i in range(200)]
    for d in dirs:
        d.mkdir()
        (d / "f").write_text(d.name)

    def held() -> int:
        return sum(_open_fds(d) for d in dirs)

    async def one_pass() -> tuple[list[bytes | None], int, int]:
        await asyncio.sleep(0)
        read = []
        for d in dirs:
            with fs.locate(str(d / "f"), check=True) as at:
                read.append(fs.read_if_regular(at)[0])
        during = held()
        await asyncio.sleep(0)
        return read, during, held()

    read, during, after = asyncio.run(one_pass())
    assert read == [d.name.encode() for d in dirs]
    assert 0 < during <= fs._PASS_MAX
    assert after == 0


def test_a_directory_found_again_in_the_pass_carries_its_owner(tmp_path: Path) -> None:
    """Every check of a pass sees the parent's real owner (the hard-link rule and the
    owner checks read it), also when the directory comes from the pass's cache."""
    import asyncio

    for name in ("a", "b"):
        (tmp_path / name).write_text(name)

    async def one_pass() -> list[int]:
        await asyncio.sleep(0)
        owners = []
        for name in ("a", "b", "a"):
            with fs.locate(str(tmp_path / name), check=True) as at:
                owners.append(at.owner)
        return owners

    assert asyncio.run(one_pass()) == [tmp_path.stat().st_uid] * 3


def test_outside_a_running_loop_a_check_keeps_nothing(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with fs.locate(str(tmp_path / "f"), check=True) as at:
        assert fs.read_if_regular(at)[0] == b"x"
    assert _open_fds(tmp_path) == 0


def _parent_to_swap(tmp_path: Path) -> tuple[Path, Callable[[], None]]:
    """``HOME/sub/f`` ("mine", its directories owned by nobody) and what nobody does to it
    (run it with run_as_nobody): ``sub`` moved away and replaced by a symlink to a
    directory holding root's ``f``."""
    home = lab(tmp_path) / "home"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "f").write_text("mine")
    _mine(home)
    _mine(home / "sub")
    target = tmp_path / "etc"
    target.mkdir()
    (target / "f").write_text("root's")

    def swap() -> None:
        os.rename(home / "sub", home / "old")
        os.symlink(str(target), home / "sub")

    return home, swap


@needs_root
def test_a_parent_swapped_for_a_symlink_between_two_checks_is_never_followed(
    tmp_path: Path,
) -> None:
    """Within one pass a check reads the directory found safely (the one moved away),
    never the symlink's target; once the loop turns, the path is refused."""
    import asyncio

    home, swap = _parent_to_swap(tmp_path)

    async def passes() -> bytes | None:
        with fs.locate(str(home / "sub" / "f"), check=True):
            pass
        run_as_nobody(swap)
        with fs.locate(str(home / "sub" / "f"), check=True) as at:
            same_pass = fs.read_if_regular(at)[0]
        await asyncio.sleep(0)
        with pytest.raises(fs.PathRefused, match="symlink"):
            fs.locate(str(home / "sub" / "f"), check=True)
        return same_pass

    assert asyncio.run(passes()) == b"mine"


def test_a_second_threads_loop_never_touches_the_directories_of_the_first(
    tmp_path: Path,
) -> None:
    """Each thread's loop keeps its own pass: a check in another thread neither uses nor
    closes the descriptors the first loop's pass holds."""
    import asyncio
    import threading

    (tmp_path / "a").write_text("a")
    other = tmp_path / "other"
    other.mkdir()
    (other / "b").write_text("b")

    async def second() -> bytes | None:
        with fs.locate(str(other / "b"), check=True) as at:
            return fs.read_if_regular(at)[0]

    async def first() -> tuple[list[bytes | None], bytes | None, int]:
        with fs.locate(str(tmp_path / "a"), check=True):
            pass  # this pass now holds tmp_path
        seen: list[bytes | None] = []
        thread = threading.Thread(target=lambda: seen.append(asyncio.run(second())))
        thread.start()
        thread.join(10)  # the loop does not turn meanwhile: still the same pass
        with fs.locate(str(tmp_path / "a"), check=True) as at:
            return seen, fs.read_if_regular(at)[0], _open_fds(tmp_path)

    seen, mine, held = asyncio.run(first())
    assert seen == [b"b"]
    assert mine == b"a"
    assert held == 2  # the pass's descriptor and this check's own
    assert _open_fds(tmp_path) == 0


def test_read_checked_reads_through_the_pass_directory_and_follows_nothing(
    tmp_path: Path,
) -> None:
    """``read_checked`` answers as ``read_if_regular(locate(..., check=True))`` would, but
    only within a pass that found the directory, through its descriptor (no new one);
    a symlink or FIFO at the final name is never followed or opened."""
    import asyncio

    (tmp_path / "f").write_text("x")
    (tmp_path / "elsewhere").write_text("secret")
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    assert fs.read_checked(str(tmp_path / "f")) is None  # no pass: locate it

    async def one_pass() -> tuple[list[object], int, int]:
        await asyncio.sleep(0)
        assert fs.read_checked(str(tmp_path / "f")) is None  # the pass has no directory yet
        with fs.locate(str(tmp_path / "f"), check=True):
            pass
        before = _open_fds(tmp_path)
        found = []
        for name in ("f", "link", "fifo", "missing"):
            result = fs.read_checked(str(tmp_path / name))
            assert result is not None
            data, st = result
            found.append((data, None if st is None else stat.S_IFMT(st.st_mode)))
        during = _open_fds(tmp_path)
        await asyncio.sleep(0)  # the loop turns: the pass is over
        found.append(fs.read_checked(str(tmp_path / "f")))
        return found, before, during

    found, before, during = asyncio.run(one_pass())
    assert found == [
        (b"x", stat.S_IFREG),
        (None, stat.S_IFLNK),
        (None, stat.S_IFIFO),
        (None, None),
        None,
    ]
    assert during == before  # read through the pass's own descriptor


@needs_root
def test_read_checked_after_a_parent_swap_reads_the_directory_found_safely(
    tmp_path: Path,
) -> None:
    """Within one pass ``read_checked`` reads the directory found safely (moved away),
    never the symlink's target; once the loop turns it finds nothing, and the path is
    refused."""
    import asyncio

    home, swap = _parent_to_swap(tmp_path)

    async def passes() -> object:
        with fs.locate(str(home / "sub" / "f"), check=True):
            pass
        run_as_nobody(swap)
        same_pass = fs.read_checked(str(home / "sub" / "f"))
        await asyncio.sleep(0)
        assert fs.read_checked(str(home / "sub" / "f")) is None
        with pytest.raises(fs.PathRefused, match="symlink"):
            fs.locate(str(home / "sub" / "f"), check=True)
        return same_pass and same_pass[0]

    assert asyncio.run(passes()) == b"mine"


@needs_root
def test_a_followed_final_name_is_judged_alike_with_its_directory_known_or_not(
    tmp_path: Path,
) -> None:
    """``locate(follow=True)`` steps into the final name: from a user's directory into
    root's it is refused, also once that directory was walked before (the shortcut
    through a known directory checks the last step as the walk does)."""
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "ok").mkdir()
    (evil / "R").mkdir()
    _mine(evil)
    _mine(evil / "ok")
    with fs.locate(str(evil / "ok"), follow=True):
        pass  # evil is known now
    with pytest.raises(fs.PathRefused, match=f"the directory {evil} is owned by nobody"):
        fs.locate(str(evil / "R"), follow=True)


@needs_root
def test_open_directory_checks_every_step_and_returns_what_it_checked(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    for path in (f"{real}", f"{real}/", f"{real}/.", f"{tmp_path}/link", f"{real}/../real"):
        fd = fs.open_directory(path)
        try:
            assert os.path.samestat(os.fstat(fd), real.stat()), path
        finally:
            os.close(fd)
    fd = fs.open_directory("/")
    os.close(fd)
    with pytest.raises(FileNotFoundError):
        fs.open_directory(f"{tmp_path}/missing/")
    (tmp_path / "plain").write_text("")
    with pytest.raises(NotADirectoryError):
        fs.open_directory(f"{tmp_path}/plain")
    hers = tmp_path / "hers"
    hers.mkdir()
    _mine(hers)
    (hers / "up").symlink_to(tmp_path)
    _mine(hers / "up")
    with pytest.raises(fs.PathRefused):
        fs.open_directory(f"{hers}/up/")
    with pytest.raises(fs.PathRefused):
        fs.open_directory(f"{hers}/..")  # from her directory into root's


@needs_root
def test_a_followed_name_swapped_after_its_walk_is_judged_on_what_is_opened(
    tmp_path: Path,
) -> None:
    """``source:`` and ``follow: true`` step into the final name: when she renames
    root's file over it after the walk judged hers, the open judges root's and refuses
    it (the walk's verdict was on another file)."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "src.txt").write_text("hers\n")
    (own / ".secret").write_text("ROOTSECRET\n")
    _mine(own)
    _mine(own / "src.txt")
    with fs.locate(str(own / "src.txt"), follow=True) as at:
        os.rename(own / ".secret", own / "src.txt")  # her rename, in her directory
        with pytest.raises(fs.PathRefused, match="is owned by nobody"):
            fs.read_regular(at)
        with pytest.raises(fs.PathRefused, match="is owned by nobody"):
            fs.read_if_regular(at)
