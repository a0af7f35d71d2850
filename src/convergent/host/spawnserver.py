"""The spawner's own side: the small process that starts the agent's commands (see
``host/spawner.py`` for why and for the agent's side).

It runs in an interpreter of its own (``python -I -S``, started by the agent with its
end of a ``SOCK_SEQPACKET`` socket pair as a descriptor) and imports only C modules
that need nothing else (``_socket``, ``_signal``, ``select``, ``marshal``, ``struct``),
so it is ready ~10 ms after its start and holds none of the agent's memory.

Messages (``marshal``; descriptors as ``SCM_RIGHTS``, at most four):

- agent -> spawner: ``(START, argv, env, cwd, umask, given, by_fd)`` with the
  descriptors of the command's stdin/stdout/stderr that ``given`` says are passed
  (/dev/null for the others), then, when ``by_fd``, a descriptor of the directory
  ``cwd`` names, entered with ``fchdir`` (the directory the agent checked, whatever the
  name leads to now; without it ``cwd`` is entered by name); ``(RELEASE, pid)``: the
  agent is done with that command, which may be reaped. A start whose descriptors did
  not all arrive fails.
- spawner -> agent: ``(READY,)`` once; per start, in order, ``(STARTED, pid, start)``
  with a pidfd of the command (``start``: its start time in ``/proc``, -1 if unknown), or
  ``(FAILED, errno, strerror, filename)``; ``(EXITED, pid, code)`` when a command ends
  (negative code: killed by that signal).

A command is started with ``posix_spawn`` (glibc's ``vfork``) in a new session, with
SIGPIPE, SIGXFSZ and the signals the spawner catches at their defaults, the program
searched along the ``PATH`` of its environment as ``execvpe`` does. An ended command is
not reaped until the agent releases it (or the agent is gone), so its PID, which is its
process group's id, cannot be reused while the agent may still kill the group.

When the agent dies (its pidfd says so) or its end of the socket closes, the spawner
SIGKILLs the process group of every command the agent has not released and exits.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (signal would import enum: ~3 ms)
import _socket
import errno
import marshal
import os
import select
import struct

__all__ = ["EXITED", "FAILED", "READY", "RELEASE", "START", "STARTED", "main"]

START, RELEASE = 0, 1
READY, STARTED, FAILED, EXITED = 10, 11, 12, 13
BUFFER = 262144
_MAX_FD = 0x7FFFFFFF
# Signals that end a process by default and reach a whole process group (a Ctrl-C, a
# SIGTERM to the group): the spawner outlives them; its commands get them at default.
CAUGHT = (
    _signal.SIGHUP,
    _signal.SIGINT,
    _signal.SIGQUIT,
    _signal.SIGTERM,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
    _signal.SIGALRM,
)
_RIGHTS = (_socket.SOL_SOCKET, _socket.SCM_RIGHTS)


def _quiet(_sig: int, _frame: object) -> None:
    """The handler of the caught signals: nothing (only the agent's death ends it)."""


class _Command:
    __slots__ = ("ended", "pid", "pidfd", "released")

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.ended = False
        self.released = False


def main(agent: int, fd: int, policy: int = -1, priority: int = 0) -> None:
    """Serve agent ``agent`` on socket descriptor ``fd`` until it is gone; ``policy``
    and ``priority``: the agent's scheduling, taken back before saying it is ready (it
    was started at the idle priority)."""
    os.closerange(3, fd)  # whatever the agent left inheritable is no command's
    os.closerange(fd + 1, _MAX_FD)
    os.set_inheritable(fd, False)  # passed to this process only, never to a command
    sock = _socket.socket(fileno=fd)
    watch = os.pidfd_open(agent)
    if os.getppid() != agent:  # the agent died before the line above
        return
    defaults = [int(_signal.SIGPIPE), int(_signal.SIGXFSZ)]
    for sig in CAUGHT:
        if _signal.getsignal(sig) != _signal.SIG_IGN:  # an ignored one stays ignored
            _signal.signal(sig, _quiet)
            defaults.append(int(sig))
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if policy >= 0:  # an error here ends it: the agent forks its commands instead
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    commands: dict[int, _Command] = {}
    try:
        sock.sendmsg([marshal.dumps((READY,))])
        _serve(sock, watch, commands, home, defaults)
    finally:
        for command in commands.values():  # not reaped: the group id is still theirs
            try:  # noqa: SIM105 (contextlib would be one more import to start with)
                os.killpg(command.pid, _signal.SIGKILL)
            except OSError:
                pass


def _serve(
    sock: _socket.socket,
    watch: int,
    commands: dict[int, _Command],
    home: int,
    defaults: list[int],
) -> None:
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    poller.register(watch, select.EPOLLIN)
    by_pidfd: dict[int, _Command] = {}
    while True:
        for fd, _events in poller.poll():
            if fd == watch:
                return
            if fd != sock.fileno():
                command = by_pidfd.pop(fd)
                poller.unregister(fd)
                sock.sendmsg([marshal.dumps((EXITED, command.pid, _status(command.pid)))])
                command.ended = True
                if command.released:
                    _reap(commands.pop(command.pid))
                continue
            data, ancillary, flags, _addr = sock.recvmsg(
                BUFFER, _socket.CMSG_SPACE(4 * 4), _socket.MSG_CMSG_CLOEXEC
            )
            if not data:
                return
            request = marshal.loads(data)
            if request[0] == RELEASE:
                released = commands.get(request[1])
                if released is not None:
                    released.released = True
                    if released.ended:
                        _reap(commands.pop(released.pid))
                continue
            fds = _descriptors(ancillary)
            try:
                if flags & _socket.MSG_CTRUNC:
                    raise OSError(errno.EBADMSG, "the command's descriptors did not arrive")
                pid = _start(request, fds, home, defaults)
            except OSError as exc:
                sock.sendmsg([marshal.dumps((FAILED, exc.errno, exc.strerror, exc.filename))])
                continue
            except Exception as exc:  # a NUL in an argument, a bad variable name
                sock.sendmsg([marshal.dumps((FAILED, None, str(exc), type(exc).__name__))])
                continue
            finally:
                for passed in fds:
                    os.close(passed)
            pidfd = os.pidfd_open(pid)
            commands[pid] = by_pidfd[pidfd] = _Command(pid, pidfd)
            poller.register(pidfd, select.EPOLLIN)
            rights = [(*_RIGHTS, struct.pack("i", pidfd))]
            sock.sendmsg([marshal.dumps((STARTED, pid, _started(pid)))], rights)


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if (level, kind) == _RIGHTS:
            fds += struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4])
    return fds


def _start(request: tuple[object, ...], fds: list[int], home: int, defaults: list[int]) -> int:
    _kind, argv, env, cwd, umask, given, *more = request
    by_fd = bool(more and more[0])
    assert isinstance(argv, list) and isinstance(env, dict) and isinstance(given, list)
    if len(fds) != sum(1 for has in given if has) + (1 if by_fd else 0):
        raise OSError(errno.EBADMSG, "the command's descriptors did not arrive")
    actions: list[tuple[object, ...]] = []
    passed = iter(fds)
    for target, has in enumerate(given):
        if has:
            actions.append((os.POSIX_SPAWN_DUP2, next(passed), target))
        else:
            flags = os.O_RDONLY if target == 0 else os.O_WRONLY
            actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, flags, 0))
    program = str(argv[0])
    paths = [program] if "/" in program else [os.path.join(d, program) for d in _path(env)]
    if by_fd:
        try:
            os.fchdir(fds[-1])
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, cwd) from None
    elif isinstance(cwd, str):
        os.chdir(cwd)
    old = os.umask(umask) if isinstance(umask, int) else None
    try:
        return _first(paths, argv, env, actions, defaults, program)
    finally:
        if old is not None:
            os.umask(old)
        if cwd is not None:
            os.fchdir(home)


def _path(env: dict[str, str]) -> list[str]:
    """The directories ``execvpe`` searches: the environment's PATH, or the default."""
    path = env.get("PATH", os.defpath)
    return [d or "." for d in path.split(os.pathsep)]


def _first(
    paths: list[str],
    argv: list[str],
    env: dict[str, str],
    actions: list[tuple[object, ...]],
    defaults: list[int],
    program: str,
) -> int:
    """Spawn the first of ``paths`` that runs; fail as ``execvpe`` (and ``Popen``) fail:
    the first error other than a missing file, else the last, naming ``program``."""
    error: OSError | None = None
    last: OSError | None = None
    for path in paths:
        if len(paths) > 1:  # a search: a missing file is skipped without a vfork
            try:
                os.stat(path)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    last = exc
                    continue
        try:
            return os.posix_spawn(
                path, argv, env, file_actions=actions, setsid=True, setsigdef=defaults
            )
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and error is None:
                error = exc
            last = exc
    failed = error or last
    code = errno.ENOENT if failed is None or failed.errno is None else failed.errno
    raise OSError(code, os.strerror(code), program)


def _status(pid: int) -> int:
    """The ended command's exit status, read without reaping it."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    assert info is not None
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _reap(command: _Command) -> None:
    os.close(command.pidfd)
    try:  # noqa: SIM105 (contextlib would be one more import to start with)
        os.waitpid(command.pid, 0)
    except ChildProcessError:
        pass


def _started(pid: int) -> int:
    """The start time ``/proc`` gives the command (before it can have been reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return int(raw[raw.rfind(b")") + 2 :].split()[19])
    except (OSError, IndexError, ValueError):
        return -1
