"""Commands forked from the agent itself, with the death signal set in the child before
``exec``: the way :func:`convergent.host.process.run` starts the commands the spawner
(``host/spawner.py``) does not take (a user or group switch, a ``finish`` command, a
command line larger than a request to the spawner).

``PR_SET_PDEATHSIG(SIGKILL)`` is set by a ``preexec_fn`` (so the interpreter forks
instead of using ``vfork``: the agent's memory is copied, ~2 ms at 30 MiB), after the
credentials switch (the kernel clears it on a change of credentials), followed by a
check that the parent is still the agent. :func:`exited` is the future of the exit
status, seen on a pidfd.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import signal
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

__all__ = ["entering", "exited", "fork", "not_entered"]

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int]:
    from convergent.host import libc

    args = (libc.c_int, libc.c_ulong, libc.c_ulong, libc.c_ulong, libc.c_ulong)
    return libc.function("prctl", libc.c_int, *args)


def _die_with(parent: int) -> Callable[[], None]:
    """What the child runs before exec: SIGKILL when the parent dies (already dead: exit)."""
    prctl = _prctl()
    kill = int(signal.SIGKILL)

    def child() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the agent died before the line above
            os._exit(1)

    return child


def fork(
    argv: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    stdio: Sequence[int | None],
    extra: Mapping[str, object],
    death_signal: bool = True,
    cwd_fd: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, forked from this process; ``stdio``: stdin,
    stdout, stderr (None: /dev/null); ``extra``: more ``Popen`` arguments (a user or group
    switch, a umask); ``death_signal``: SIGKILL when this process dies; ``cwd_fd``: a
    descriptor of ``cwd``, entered instead of its name (a command that stays root)."""
    import subprocess

    stdin, stdout, stderr = (subprocess.DEVNULL if fd is None else fd for fd in stdio)
    dies = _die_with(os.getpid()) if death_signal else None
    switched = "user" in extra or "group" in extra
    preexec, cwd_now = entering(cwd, cwd_fd, switched, dies)
    try:
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd_now,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
            **extra,
        )
    except subprocess.SubprocessError:
        if cwd is not None and cwd_now is None:  # the child could not enter cwd
            raise not_entered(cwd) from None
        raise


def entering(
    cwd: str | None, cwd_fd: int | None, switched: bool, then: Callable[[], None] | None
) -> tuple[Callable[[], None] | None, str | None]:
    """The ``preexec_fn`` (running ``then`` last) and the ``cwd`` for ``Popen``: given
    ``cwd_fd`` (a command that runs as root, its group switched or not), that directory
    is entered (the one its caller checked, whatever the name leads to now); else a
    command switching users enters ``cwd`` as that user (``Popen``'s own ``chdir`` comes
    before the switch: as root, she would run in, and read, a directory she may not
    enter); else ``Popen`` enters ``cwd``."""
    if cwd_fd is not None:
        return _enter_by_descriptor(cwd_fd, then), None
    if cwd is not None and switched:
        return _enter_as_switched(cwd, then), None
    return then, cwd


def not_entered(cwd: str) -> OSError:
    """Why a child could not enter ``cwd`` (its ``preexec_fn`` says only that it
    failed): missing, not a directory, a symlink loop, or not to be entered."""
    try:
        st = os.stat(cwd)
    except OSError as exc:
        return type(exc)(exc.errno, exc.strerror, cwd)
    if not stat.S_ISDIR(st.st_mode):
        return NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), cwd)
    return PermissionError(errno.EACCES, "the working directory cannot be entered", cwd)


def _enter_by_descriptor(fd: int, then: Callable[[], None] | None) -> Callable[[], None]:
    def child() -> None:
        os.fchdir(fd)  # the directory checked, whatever its path names now
        if then is not None:
            then()

    return child


def _enter_as_switched(cwd: str, then: Callable[[], None] | None) -> Callable[[], None]:
    def child() -> None:
        os.chdir(cwd)  # as the user now: her permissions, her view of symlinks
        if then is not None:
            then()

    return child


def exited(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """A future of the exit status of ``popen``, set (and the child reaped) when it exits."""
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:  # no pidfd (Linux before 5.3): a thread waits
        return asyncio.ensure_future(loop.run_in_executor(None, popen.wait))
    done: asyncio.Future[int] = loop.create_future()

    def ready() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        code = popen.wait()
        if not done.done():
            done.set_result(code)

    loop.add_reader(pidfd, ready)

    def cancelled(future: asyncio.Future[int]) -> None:
        if future.cancelled():
            loop.remove_reader(pidfd)
            os.close(pidfd)

    done.add_done_callback(cancelled)
    return done
