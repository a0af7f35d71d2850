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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

__all__ = ["exited", "fork"]

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
    descriptor of ``cwd``, entered instead of its name (without a user switch)."""
    import subprocess

    stdin, stdout, stderr = (subprocess.DEVNULL if fd is None else fd for fd in stdio)
    dies = _die_with(os.getpid()) if death_signal else None
    preexec, cwd_now = dies, cwd
    switched = cwd is not None and ("user" in extra or "group" in extra)
    if cwd_fd is not None and not switched:
        preexec, cwd_now = _enter_by_descriptor(cwd_fd, dies), None
    elif switched and cwd is not None:
        # The child's chdir comes before its user switch: made as root, a user would
        # run in (and read) a directory she may not enter. preexec_fn runs after it.
        preexec, cwd_now = _enter_as_switched(cwd, dies), None
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
        if switched:  # the switched child could not enter cwd
            raise PermissionError(
                errno.EACCES, "the user may not enter the working directory", cwd
            ) from None
        raise


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
