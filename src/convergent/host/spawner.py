"""The spawner: a small process of the agent's that starts its commands with
``posix_spawn`` and kills the ones still running when the agent dies.

A command must die with the agent, kill -9 included. The kernel's way, the death signal
(``PR_SET_PDEATHSIG``), has to be set in the child between ``fork`` and ``exec``, so
every command forked the whole agent: 2 ms at 30 MiB, 7-9 ms at 250 MiB, with the event
loop stopped. The spawner carries that guarantee instead. It is forked from the agent
once, at the first command, and from then on is the parent of every command
:func:`convergent.host.process.run` starts without a user switch: ``posix_spawn`` makes
them with ``vfork`` (no copy of anyone's memory, ~0.3 ms a command here). Its end of a
socket pair is the one it reads; the other end is the agent's alone. When that end closes
(the agent exited, or was killed), the spawner SIGKILLs the process group of every
command it started that is still running and exits; a command that left its group (a
new session, a daemon) is left, as the death signal left it.

The contract, from the agent's side (:func:`spawn`):

- A command is started exactly as ``subprocess.Popen(..., start_new_session=True)``
  would start it from the agent: its own session, stdin/stdout/stderr the descriptors
  given (/dev/null otherwise), no other descriptor, the environment given, the program
  searched in that environment's ``PATH``, SIGPIPE and SIGXFSZ at their defaults, the
  signals the agent handles in Python at their defaults, the ones it ignores ignored, the
  agent's working directory and umask unless ``cwd``/``umask`` say otherwise. A start that
  fails raises the ``OSError`` ``Popen`` would raise (``filename``: the program, or
  ``cwd``).
- Each start answers at once with the PID; the exit status comes later, as the result of
  the returned future, set by the event loop's reader of the socket.
- If the spawner dies (a root user or the OOM killer), the commands it was running are
  SIGKILLed by the agent (through descriptors that name them exactly) and their futures
  fail with ``ChildProcessError``; the next command starts a new spawner.
- Not for commands that switch user or group (``posix_spawn`` cannot) nor for ``finish``
  commands (no death signal): :func:`spawn` returns None for a request it does not take,
  and the caller forks as before.

Every call comes from the thread of the running event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import gc
import marshal
import os
import select
import signal
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

from convergent.host.children import stat

if TYPE_CHECKING:
    import subprocess

__all__ = ["ANSWER", "Started", "spawn"]

ANSWER = 30.0  # seconds the spawner may take to say a command started
_REQUEST = 196608  # bytes: a larger request (a huge argv) is forked as before
_BUFFER = 262144
_START, _FAILED, _EXIT = 0, 1, 2
_SURVIVES = {
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
}


class Started:
    """A command the spawner started: its PID, its start time (``/proc``'s, read before
    the spawner could reap it; None without ``/proc``) and the future of its exit status
    (negative: killed by that signal)."""

    __slots__ = ("exited", "pid", "start")

    def __init__(self, pid: int, start: int | None, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self.start = start
        self.exited = exited


class _Spawner:
    """The agent's side: the socket, the spawner's PID, the commands it runs."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.pid = 0
        self.running: dict[int, tuple[asyncio.Future[int], int]] = {}  # pid -> exit, pidfd
        self.loop: asyncio.AbstractEventLoop | None = None  # where the reader is
        self.gone: list[int] = []  # spawners not reaped yet
        self.usable = _pidfds()
        self.hooked = False

    def open(self) -> socket.socket | None:
        if self.sock is not None:
            return self.sock
        if not self.usable:
            return None
        import subprocess  # noqa: F401  (the spawner's Popen, imported once for both)

        self._reap()
        handled = _handled()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            ours.close()
            theirs.close()
            self.usable = False
            return None
        if pid == 0:
            _serve(theirs, handled, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        theirs.close()
        ours.setblocking(False)
        self.sock, self.pid = ours, pid
        if not self.hooked:
            atexit.register(self.close)
            self.hooked = True
        return ours

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: str | None,
        umask: int | None,
        stdio: Sequence[int | None],
    ) -> Started | None:
        loop = asyncio.get_running_loop()
        request = marshal.dumps(
            (
                [os.fsdecode(a) for a in argv],
                dict(os.environ if env is None else env),
                None if cwd is None else os.fsdecode(cwd),
                umask,
                [fd is not None for fd in stdio],
            )
        )
        if len(request) > _REQUEST:
            return None
        sock = self._send(request, [fd for fd in stdio if fd is not None])
        if sock is None:
            return None
        answer, passed = self._answer(sock)
        if answer[0] == _FAILED:
            raise _error(answer)
        _kind, pid, start = answer
        exited: asyncio.Future[int] = loop.create_future()
        self.running[pid] = (exited, passed[0])
        self._listen(loop)
        return Started(pid, None if start < 0 else start, exited)

    def _send(self, request: bytes, fds: list[int]) -> socket.socket | None:
        """Send the request (to a new spawner if the last one died while idle); the
        socket it went to, or None when no spawner can be had."""
        for attempt in (0, 1):
            sock = self.open()
            if sock is None:
                return None
            try:
                socket.send_fds(sock, [request], fds, socket.MSG_NOSIGNAL)
            except (BrokenPipeError, ConnectionResetError):
                self.lost("it was gone")
                if attempt:
                    return None
                continue
            return sock
        return None

    def _answer(self, sock: socket.socket) -> tuple[tuple[int, ...], list[int]]:
        """The answer to the request just sent; exits read on the way are handed out."""
        deadline = time.monotonic() + ANSWER
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(
                    sock, _BUFFER, 1, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not poll.poll(left * 1000):
                    self.lost(f"it did not answer in {ANSWER:g} s")
                    raise ChildProcessError(
                        errno.ETIMEDOUT,
                        f"convergent's spawner did not say in {ANSWER:g} s whether the "
                        "command started; it was stopped",
                    ) from None
                continue
            except OSError:
                data, fds = b"", []
            if not data:
                self.lost("it died")
                raise ChildProcessError(
                    errno.ECHILD,
                    "convergent's spawner died while starting the command (it may have "
                    "started and been killed); the next command starts a new spawner",
                )
            message: tuple[int, ...] = marshal.loads(data)
            if message[0] == _EXIT:
                self._exit(message)
                continue
            return message, fds

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop or self.sock is None:
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.sock.fileno())
        loop.add_reader(self.sock.fileno(), self._read)
        self.loop = loop

    def _read(self) -> None:
        sock = self.sock
        while sock is not None:
            try:
                data, fds, _flags, _addr = socket.recv_fds(
                    sock, _BUFFER, 1, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            for fd in fds:  # only a start's answer carries one, and none is awaited here
                os.close(fd)
            if not data:
                self.lost("it died")
                return
            message = marshal.loads(data)
            if message[0] == _EXIT:
                self._exit(message)

    def _exit(self, message: tuple[int, ...]) -> None:
        entry = self.running.pop(message[1], None)
        if entry is None:
            return
        exited, pidfd = entry
        os.close(pidfd)
        if not exited.done() and not exited.get_loop().is_closed():
            exited.set_result(message[2])

    def lost(self, why: str) -> None:
        """The spawner is gone or stuck: kill it and what it ran, fail their waits."""
        sock, self.sock = self.sock, None
        if sock is not None:
            if self.loop is not None and not self.loop.is_closed():
                self.loop.remove_reader(sock.fileno())
            sock.close()
        self.loop = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.gone.append(self.pid)
        self._reap()
        running, self.running = self.running, {}
        for pid, (exited, pidfd) in running.items():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
            if not exited.done() and not exited.get_loop().is_closed():
                exited.set_exception(
                    ChildProcessError(
                        errno.ECHILD,
                        f"convergent's spawner (pid {self.pid}) was lost ({why}); the "
                        f"command (pid {pid}) was killed and its exit status is unknown",
                    )
                )

    def _reap(self) -> None:
        for pid in list(self.gone):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.gone.remove(pid)

    def close(self) -> None:
        """End the spawner: it kills what it still runs and exits (not waited for)."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(sock.fileno())
        self.loop = None
        sock.close()
        self.gone.append(self.pid)


def _pidfds() -> bool:
    """Whether this kernel gives pidfds (Linux 5.3): the spawner waits on them."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _error(answer: tuple[object, ...]) -> Exception:
    _kind, code, text, filename = answer
    if not isinstance(code, int):
        return (TypeError if filename == "TypeError" else ValueError)(text)
    if filename is None:
        return OSError(code, text)
    return OSError(code, text, filename)


def _handled() -> list[int]:
    """The signals the spawner catches (with a handler that does nothing): those the
    agent handles in Python (the agent's code never runs there) and those that end a
    process by default and reach a whole process group (a Ctrl-C, a SIGTERM to the
    group), unless the agent ignores them. A command gets a caught signal at its
    default, as ``exec`` gives a command forked from the agent; an ignored one stays
    ignored, as it would."""
    handled = []
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(ValueError, OSError):
            now = signal.getsignal(sig)
            if callable(now) or (sig in _SURVIVES and now == signal.SIG_DFL):
                handled.append(int(sig))
    return handled


def _quiet(_sig: int, _frame: object) -> None:
    """The spawner's handler of the signals the agent handles: it lives until its socket
    says the agent is gone, not until a Ctrl-C or a SIGTERM meant for the agent."""


def _serve(sock: socket.socket, handled: list[int], mask: Iterable[int]) -> NoReturn:
    """The spawner's life, in the forked child; never returns into the agent's code."""
    status = 70
    try:
        gc.disable()  # a collection could finalize the agent's objects here
        with contextlib.suppress(ValueError):  # only a loop outside the main thread
            signal.set_wakeup_fd(-1)
            for sig in handled:
                signal.signal(sig, _quiet)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # the agent's output is not held open by the spawner
        mine = sock.fileno()
        os.closerange(3, mine)
        os.closerange(mine + 1, 0x7FFFFFFF)
        status = _loop(sock)
    finally:
        os._exit(status)


def _loop(sock: socket.socket) -> int:
    """Serve the agent until its end of the socket closes (or anything fails here): then
    SIGKILL the group of every command still running, and end."""
    running: dict[int, subprocess.Popen[bytes]] = {}  # pid -> the command
    try:
        _requests(sock, running)
    finally:
        for pid in running:  # not reaped: the group's id is still theirs
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    return 0


def _requests(sock: socket.socket, running: dict[int, subprocess.Popen[bytes]]) -> None:
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    pidfds: dict[int, int] = {}  # pidfd -> pid
    while True:
        for fd, _events in poller.poll():
            if fd != sock.fileno():
                child = running.pop(pidfds.pop(fd))
                poller.unregister(fd)
                os.close(fd)
                sock.send(marshal.dumps((_EXIT, child.pid, child.wait())))
                continue
            data, fds, _flags, _addr = socket.recv_fds(sock, _BUFFER, 3, socket.MSG_CMSG_CLOEXEC)
            if not data:  # the agent is gone
                return
            try:
                child = _start(marshal.loads(data), fds)
            except Exception as exc:  # told to the agent, which raises it
                sock.send(marshal.dumps(_failure(exc)))
                continue
            finally:
                for passed in fds:
                    os.close(passed)
            running[child.pid] = child
            pidfd = os.pidfd_open(child.pid)
            pidfds[pidfd] = child.pid
            poller.register(pidfd, select.EPOLLIN)
            started = stat(child.pid)  # not reaped yet: always there
            start = -1 if started is None else started.start
            socket.send_fds(sock, [marshal.dumps((_START, child.pid, start))], [pidfd])


def _start(request: tuple[object, ...], fds: list[int]) -> subprocess.Popen[bytes]:
    """``Popen`` in the spawner: no ``preexec_fn``, so the interpreter starts it with
    ``vfork``; the command is then what the agent's own ``Popen`` would have made."""
    import subprocess  # imported by the agent before the fork

    argv, env, cwd, umask, given = request
    assert isinstance(argv, list) and isinstance(env, dict) and isinstance(given, list)
    passed = iter(fds)
    stdin, stdout, stderr = (next(passed) if has else subprocess.DEVNULL for has in given)
    return subprocess.Popen(
        [str(a) for a in argv],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd if isinstance(cwd, str) else None,
        env={str(k): str(v) for k, v in env.items()},
        start_new_session=True,
        umask=umask if isinstance(umask, int) else -1,
    )


def _failure(exc: Exception) -> tuple[int, int | None, str | None, str | None]:
    if isinstance(exc, OSError):
        filename = None if exc.filename is None else os.fsdecode(exc.filename)
        return (_FAILED, exc.errno, exc.strerror, filename)
    return (_FAILED, None, str(exc), type(exc).__name__)


_SPAWNER = _Spawner()


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    umask: int | None,
    stdio: Sequence[int | None],
) -> Started | None:
    """Start ``argv`` through the spawner (see the module's text); None when it cannot
    take the request (then fork as before). ``stdio``: the descriptors for the command's
    stdin, stdout and stderr (None: /dev/null). Raises what ``Popen`` would raise."""
    return _SPAWNER.spawn(argv, env, cwd, umask, stdio)
