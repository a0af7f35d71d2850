"""The agent's spawner: a small process of the agent's that starts its commands with
``posix_spawn`` and kills the ones still running when the agent dies.

A command must die with the agent, kill -9 included. The kernel's way, the death signal
(``PR_SET_PDEATHSIG``), has to be set in the child between ``fork`` and ``exec``, so
every command forked the whole agent: 2 ms at 30 MiB, 7-9 ms at 250 MiB, with the event
loop stopped. The spawner carries that guarantee instead: an interpreter of its own
(``python -I -S``, ``host/spawnserver.py``, ~10 MiB, ready ~10 ms after its start),
started at the agent's first command and from then on the parent of every command
:func:`convergent.host.process.run` starts without a user switch, each made with
``vfork`` (~0.3 ms, the loop never stopped). It watches the agent (a pidfd) and its end of
a socket pair; when the agent dies, it SIGKILLs the process group of every command the
agent has not released, and exits. A command that left its group (a new session, a
daemon) is left, as the death signal left it.

From the agent's side (:func:`spawn`, :func:`release`):

- A command is started as ``Popen(..., start_new_session=True)`` would start it from the
  agent: its own session, stdin/stdout/stderr the descriptors given (/dev/null
  otherwise) and no other, the environment given, the program searched along that
  environment's ``PATH``, SIGPIPE, SIGXFSZ and the signals that reach a process group at
  their defaults and the ones the agent ignores ignored, in ``cwd`` with ``umask`` if
  given; otherwise in the directory and with the umask, limits, niceness and OOM score
  the agent had when it started the spawner (the agent changes none of them later).
  glibc's ``posix_spawn`` leaves its two internal signals (32, 33) ignored, which no
  program can use through the C library. A start that fails raises the ``OSError``
  ``Popen`` would raise (``filename``: the program, or ``cwd``).
- The start is awaited (the loop keeps running); the exit status is a future set by the
  loop's reader of the socket. A command stays unreaped (a zombie after its exit) until
  :func:`release`, so its process group's id stays its own while the agent may kill it.
- If the spawner dies (a root user, the OOM killer), the agent SIGKILLs the commands it
  was running through pidfds that name them exactly, fails their runs with
  ``ChildProcessError``, and starts a new spawner at the next command; a command being
  started at that moment is found by the token in its environment (``CONVERGENT_RUN``,
  ``host/children.py``) and killed.
- Not for commands that switch user or group (``posix_spawn`` cannot), ``finish``
  commands (no death signal), a command line larger than one message, nor calls from a
  thread other than the main one, nor while the spawner is starting: :func:`spawn`
  returns None, and the caller forks as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import marshal
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from convergent.host import spawnserver as wire
from convergent.host.children import DEAD, TOKEN, ended, pids, stat

__all__ = ["ANSWER", "READY_WAIT", "Started", "release", "spawn", "started"]

ANSWER = 30.0  # seconds a command may take to start (exec on a hung file system)
READY_WAIT = 10.0  # seconds :func:`started` waits for a new spawner
_CHRT = "/usr/bin/chrt"  # util-linux: starts the spawner at the idle priority
_REQUEST = 196608  # bytes: a larger request (a huge argv or environment) is forked
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from convergent.host.spawnserver import main; main(*map(int, sys.argv[2:]))"
)


class Started:
    """A command the spawner started: its PID, its start time (``/proc``'s; None when
    unknown) and the future of its exit status (negative: killed by that signal)."""

    __slots__ = ("exited", "pid", "start")

    def __init__(self, pid: int, start: int | None, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self.start = start
        self.exited = exited


class _Spawner:
    """The agent's side: the spawner process, its socket, the starts awaited in order,
    the commands it runs."""

    def __init__(self) -> None:
        self.pid = 0  # the spawner's; 0: none
        self.sock: socket.socket | None = None
        self.ready = False
        self.waiters: list[asyncio.Future[None]] = []  # of the spawner being ready
        self.loop: asyncio.AbstractEventLoop | None = None  # where the reader is
        self.pending: collections.deque[tuple[asyncio.Future[Started], str | None]] = (
            collections.deque()
        )
        self.running: dict[int, tuple[asyncio.Future[int], int]] = {}  # pid -> exit, pidfd
        self.abandoned: set[int] = set()  # released as soon as they end
        self.usable = _usable()
        self.later: asyncio.AbstractEventLoop | None = None  # where a start is scheduled
        self.since = 0  # the spawner's start time (clock ticks): its commands start later

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the spawner (not waited for) if there is none. It starts at the idle
        priority (``chrt --idle``: its ~10 ms of start-up never slows the agent nor the
        commands forked meanwhile) and takes the agent's back before it says it is ready."""
        if self.pid or not self.usable:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = os.path.dirname(os.path.dirname(os.path.dirname(wire.__file__ or "")))
        policy, priority = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
        argv = [sys.executable, "-I", "-S", "-c", _BOOT, root, str(os.getpid())]
        argv += [str(theirs.fileno()), str(policy), str(priority)]
        if os.geteuid() == 0 and os.access(_CHRT, os.X_OK):  # only root takes it back
            argv = [_CHRT, "--idle", "0", *argv]  # glibc's posix_spawn refuses SCHED_IDLE
        null = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        try:
            os.set_inheritable(theirs.fileno(), True)  # this descriptor and no other
            self.pid = os.posix_spawn(argv[0], argv, {}, file_actions=null)
            began = stat(self.pid)
            self.since = 0 if began is None else began.start
        except OSError:
            ours.close()
            self.usable = False
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.ready = False
        self._listen(loop)

    async def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: str | None,
        umask: int | None,
        stdio: Sequence[int | None],
        cwd_fd: int | None = None,
    ) -> Started | None:
        """Start ``argv`` through the spawner (see the module's text); None when it does
        not take the request (then fork as before). ``stdio``: the descriptors of the
        command's stdin, stdout and stderr (None: /dev/null); ``cwd_fd``: a descriptor
        of ``cwd``, entered instead of its name. Raises what ``Popen`` would raise."""
        if threading.current_thread() is not threading.main_thread() or not argv:
            return None
        loop = asyncio.get_running_loop()
        if self.sock is None or not self.ready:
            self._later(loop)
            return None
        self._listen(loop)
        whole = os.environ if env is None else env
        try:
            request = marshal.dumps(
                (
                    wire.START,
                    [os.fsdecode(a) for a in argv],
                    {os.fsdecode(k): os.fsdecode(v) for k, v in whole.items()},
                    None if cwd is None else os.fsdecode(cwd),
                    umask,
                    [fd is not None for fd in stdio],
                    cwd_fd is not None,
                )
            )
        except (TypeError, ValueError):  # not what Popen takes either: it says so
            return None
        if len(request) > _REQUEST:
            return None
        fds = [fd for fd in stdio if fd is not None]
        if cwd_fd is not None:
            fds.append(cwd_fd)
        try:
            socket.send_fds(self.sock, [request], fds, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return None
            self.lost("was gone")
            self._later(loop)  # for the next command; this one is forked
            return None
        answer: asyncio.Future[Started] = loop.create_future()
        self.pending.append((answer, whole.get(TOKEN)))
        try:
            async with asyncio.timeout(ANSWER):
                return await asyncio.shield(answer)
        except BaseException as exc:
            answer.add_done_callback(self._abandon)
            if isinstance(exc, TimeoutError):
                raise OSError(
                    errno.ETIMEDOUT,
                    f"the command did not start within {ANSWER:g} s (its program or "
                    "directory on a file system that does not answer?); it is killed "
                    "if it starts later",
                    os.fsdecode(argv[0]),
                ) from None
            raise

    def release(self, pid: int) -> None:
        """The run of ``pid`` is over: the spawner may reap it once it ended."""
        entry = self.running.get(pid)
        if entry is None or self.sock is None:
            return
        exited, pidfd = entry
        if pid not in self.abandoned:  # the first release: the spawner is told
            with contextlib.suppress(OSError):
                self.sock.send(marshal.dumps((wire.RELEASE, pid)), socket.MSG_NOSIGNAL)
        if exited.done() or exited.get_loop().is_closed():
            del self.running[pid]
            self.abandoned.discard(pid)
            if pidfd >= 0:
                os.close(pidfd)
        else:
            self.abandoned.add(pid)  # forgotten when its exit comes

    def _later(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the spawner once what runs now has run: after the fork of the command
        that asked, and of the others started in the same pass."""
        if not self.pid and self.usable and self.later is not loop:
            self.later = loop  # another loop's start, closed before it ran, is forgotten
            loop.call_soon(self._start_later, loop)

    def _start_later(self, loop: asyncio.AbstractEventLoop) -> None:
        self.later = None
        self.start(loop)

    def check(self) -> None:
        """Forget a spawner that ended while nobody read its socket (between loops)."""
        if self.pid and os.waitpid(self.pid, os.WNOHANG)[0]:
            self.pid = 0  # reaped just now
            self.lost("was gone")

    def _abandon(self, answer: asyncio.Future[Started]) -> None:
        """A start nobody waits for any more: kill what it started, let it be reaped."""
        if answer.cancelled() or answer.exception() is not None:
            return
        pid = answer.result().pid
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # not released: the group id is still its own
        self.release(pid)

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop or self.sock is None:
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.sock.fileno())
        loop.add_reader(self.sock.fileno(), self._read, loop)
        self.loop = loop

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        while self.sock is not None:
            try:
                data, fds, _flags, _addr = socket.recv_fds(
                    self.sock, wire.BUFFER, 1, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self.lost("ended")
                return
            self._message(loop, marshal.loads(data), fds)

    def _message(
        self, loop: asyncio.AbstractEventLoop, message: tuple[object, ...], fds: list[int]
    ) -> None:
        kind = message[0]
        if kind == wire.READY:
            self.ready = True
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                _settle(waiter, None)
        elif kind == wire.EXITED:
            pid, code = message[1], message[2]
            assert isinstance(pid, int) and isinstance(code, int)
            entry = self.running.get(pid)
            if entry is not None and not entry[0].done() and not entry[0].get_loop().is_closed():
                entry[0].set_result(code)
            if pid in self.abandoned:
                self.release(pid)
        elif kind == wire.STARTED:
            answer, _token = self.pending.popleft()
            pid, start = message[1], message[2]
            assert isinstance(pid, int) and isinstance(start, int)
            self.running[pid] = (loop.create_future(), fds[0] if fds else -1)
            if not fds:  # no room for its pidfd here: kill it, it started in vain
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                self.release(pid)
                _settle(answer, OSError(errno.EMFILE, os.strerror(errno.EMFILE)))
                return
            _settle(answer, Started(pid, None if start < 0 else start, self.running[pid][0]))
        elif kind == wire.FAILED:
            answer, _token = self.pending.popleft()
            _settle(answer, _error(message))

    def lost(self, why: str) -> None:
        """The spawner is gone: kill what it ran, fail what waits on it, forget it."""
        sock, self.sock = self.sock, None
        if sock is not None:
            if self.loop is not None and not self.loop.is_closed():
                self.loop.remove_reader(sock.fileno())
            sock.close()
        self.loop = None
        pid, self.pid = self.pid, 0
        if pid:
            _end(pid)
            if not self.ready:
                self.usable = False  # it could not even start: fork from now on
        self.ready = False
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            _settle(waiter, None)
        name = f"convergent's spawner (pid {pid or '?'}) {why}"
        pending, self.pending = self.pending, collections.deque()
        tokens = {token for _answer, token in pending if token is not None}
        if tokens:
            _kill_strays(tokens, self.since)
        for answer, _token in pending:
            _settle(
                answer,
                ChildProcessError(
                    errno.ECHILD,
                    f"{name} while starting the command; if it had started, it was killed",
                ),
            )
        running, self.running = self.running, {}
        self.abandoned.clear()
        for pid, (exited, pidfd) in running.items():
            if pidfd >= 0:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
            _settle(
                exited,
                ChildProcessError(
                    errno.ECHILD,
                    f"{name}; the command (pid {pid}) was killed and its exit status is unknown",
                ),
            )


def _end(pid: int) -> None:
    """SIGKILL the spawner ``pid`` if it still runs and reap it (waiting 1 s at most)."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        pidfd = os.pidfd_open(pid)
        try:
            ended(pidfd, 1.0)
        finally:
            os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _settle(future: asyncio.Future[Any], value: object) -> None:
    if future.done() or future.get_loop().is_closed():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


def _kill_strays(tokens: set[str], since: int) -> None:
    """SIGKILL the sessions of the processes whose environment holds one of ``tokens``:
    commands started by a spawner that died before it could say so. Only session leaders
    started since the spawner (``since``, clock ticks) are read (``/proc/PID/stat``), and
    only their environment then. The socket's end held by a command between ``vfork`` and
    its ``exec`` (close-on-exec) keeps the spawner's death unseen until the command is
    there to be found."""
    marks = [f"{TOKEN}={token}\0".encode() for token in tokens]
    for pid in pids():
        seen = stat(pid)
        if seen is None or seen.session != pid or seen.start < since or seen.state in DEAD:
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
            if not any(mark in environ for mark in marks):
                continue
            if ended(pidfd):
                continue  # it ended: what was read may be a newer process's of that PID
            with contextlib.suppress(OSError):  # alive: its PID is its group's id
                os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(pidfd)


def _usable() -> bool:
    """Whether the spawner can run here: pidfds (Linux 5.3), ``posix_spawn``, an
    interpreter to start it with."""
    if not sys.executable or not hasattr(os, "posix_spawn"):
        return False
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


_SPAWNER = _Spawner()


spawn = _SPAWNER.spawn
release = _SPAWNER.release


async def started(bound: float = READY_WAIT) -> bool:
    """Start the spawner if there is none and wait (at most ``bound`` seconds) until it
    takes commands; False when it cannot run here."""
    loop = asyncio.get_running_loop()
    _SPAWNER.check()
    _SPAWNER.start(loop)
    if _SPAWNER.sock is None:
        return False
    _SPAWNER._listen(loop)
    if not _SPAWNER.ready:
        waiter: asyncio.Future[None] = loop.create_future()
        _SPAWNER.waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await waiter
    return _SPAWNER.ready
