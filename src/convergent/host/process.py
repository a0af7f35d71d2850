"""Running commands for every kind: in their own session, dying with the agent, killed as a
whole group, their output kept within bounds.

``run(argv, ...)`` starts a command in a new session (its session and process group ids
are its PID) that dies with the agent, and returns a :class:`Finished`: the exit status
(negative: killed by that signal) and a :class:`Capture` of stdout and of stderr. The
command is started by the agent's spawner (``host/spawner.py``: an interpreter of its
own, started at the first command, the parent of the agent's commands, which SIGKILLs
their process groups the moment the agent dies); a command that switches user or group,
a ``finish`` command, a command line too large for the spawner, a command run from
another thread than the main one, and the commands before the spawner is ready are
forked from the agent as before (``host/forked.py``), with ``PR_SET_PDEATHSIG(SIGKILL)``
set in the child before ``exec`` (``finish``: without it).

- The command's own exit ends the run. Output still open ``DRAIN`` seconds after it (a
  process it left in the background holds the pipe) is left to whatever holds it: our ends
  of the pipes are closed (a later write there gets SIGPIPE) and nothing is waited for,
  at the end of the run or at interpreter exit.
- A timeout or a cancellation kills the whole process group (:func:`kill_group`): SIGTERM,
  ``GRACE`` seconds, SIGKILL, then a wait of at most ``KILL_WAIT`` seconds until no
  process of the group is left.
- Capture is bounded: the last ``CAPTURE`` bytes of each stream are kept and the rest is
  only counted; the lines given to ``log`` are bounded too (the first ``SHOWN`` bytes of
  each stream), followed by one line saying how much was not shown.
- With ``children`` (``children_dir(STATE_DIR)``) the running command is recorded there
  (a file of mode 0600, in a directory of mode 0700; it outlives the agent) right after the
  spawn and the record is removed when the run is over; :func:`reap_orphans`, run by the
  next agent on that state directory, kills whatever a killed agent left running.
- ``stdin`` (bytes) is fed to the command through a pipe, written without blocking the
  loop; a command that exits (or closes its stdin) before reading it all is not an error.
  Without it the command reads /dev/null.
- ``user``/``group``/``groups`` (numeric ids) switch the child's credentials before
  ``exec``: ``setgroups(groups)`` (none when not given: the agent's own supplementary
  groups, root's, are never inherited), ``setgid(group)``, ``setuid(user)``; a ``group``
  without ``user`` keeps the uid. Only root may switch (anything else raises
  PermissionError before the spawn). The death signal is set after the switch (the kernel
  clears it when credentials change). ``umask`` is the child's umask.

What is guaranteed and what is not: when the agent dies (kill -9 included), the spawner
kills the process group of every command still running; a command forked from the agent
gets the death signal, which reaches the direct child only (and is dropped by the kernel
when it executes a set-user-ID program). What is left (a process of a command that ended,
or one of a forked command's children) outlives a killed agent until the next agent opens
the state directory and reaps it (under systemd, the unit's cgroup is killed at once). A
process that leaves the session (``setsid``, a daemon) is no longer the command's and is
never killed. The death signal follows the thread that spawned the child: call
:func:`run` from the event loop's thread, which lives as long as the agent.

``spawn_detached(argv, ...)`` is the other way to start a command: in its own session too,
but *without* the death signal and unrecorded, so it outlives the agent (the ``process``
kind keeps such a command running and finds it again through its own pidfile).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import Callable, Mapping, Sequence

from convergent.host import forked, spawner
from convergent.host.children import (
    KILL_WAIT,
    TOKEN,
    children_dir,
    kill_session,
    reap_orphans,
    remove_record,
    write_record,
)
from convergent.host.sessions import GRACE, group_alive, kill_group, spawn_detached

__all__ = [
    "CAPTURE",
    "CUT",
    "DRAIN",
    "FINISH",
    "GRACE",
    "KILL_WAIT",
    "SHOWN",
    "Capture",
    "Credentials",
    "Finished",
    "RecordError",
    "children_dir",
    "group_alive",
    "kill_group",
    "reap_orphans",
    "run",
    "spawn_detached",
    "summary",
]

CAPTURE = 65536  # bytes kept at the end of stdout and of stderr
SHOWN = 65536  # bytes of each stream logged line by line
DRAIN = 0.5  # seconds to read output left in the pipes after the command exited
FINISH = 10.0  # seconds a cancelled ``finish`` command is given to end by itself
TAIL = 10  # lines of stderr in an error's tail
TAIL_CHARS = 4096  # at most this many characters of them
#: Marks where output was cut short (a tail's first line, a line past ``SHOWN``): the
#: engine drops what such a cut may leave of a secret beside it (engine/redact.py).
CUT = "[...]"

_CHUNK = 65536


class RecordError(Exception):
    """The running command could not be recorded in the children directory (it was killed)."""


class Capture:
    """The last ``limit`` bytes of a stream; ``total`` counts every byte it had."""

    __slots__ = ("data", "limit", "total")

    def __init__(self, limit: int = CAPTURE) -> None:
        self.data = bytearray()
        self.limit = limit
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(chunk) >= self.limit:
            self.data = bytearray(chunk[-self.limit :])
            return
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    @property
    def cut(self) -> bool:
        """True when bytes were dropped from the front."""
        return self.total > len(self.data)

    def text(self) -> str:
        data = bytes(self.data)
        if self.cut:  # do not start in the middle of a UTF-8 character
            data = data.lstrip(bytes(range(0x80, 0xC0)))
        return data.decode("utf-8", "replace")

    def tail(self, count: int = TAIL, chars: int = TAIL_CHARS) -> list[str]:
        """The last ``count`` lines kept (at most ``chars`` characters in all)."""
        lines = self.text().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if self.cut and lines:
            lines.pop(0)  # begins somewhere inside a line
        lines = lines[-count:]
        while lines and sum(len(line) + 1 for line in lines) > chars:
            if len(lines) == 1:
                lines[0] = CUT + lines[0][-(chars - len(CUT)) :]
                break
            lines.pop(0)
        return lines


class Finished:
    """A command that ended by itself: ``code`` (negative: killed by that signal) and the
    captured ``stdout`` and ``stderr`` (empty when the output went to /dev/null)."""

    __slots__ = ("code", "stderr", "stdout")

    def __init__(self, code: int, stdout: Capture, stderr: Capture) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


def size(count: int) -> str:
    """``count`` bytes, for people: ``512 bytes``, ``64 KiB``, ``190.7 MiB``."""
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}".replace(".0 ", " ")


# What shlex.quote leaves unquoted (its pattern: not [\w@%+=:,./-] in ASCII).
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")


def summary(cmd: Sequence[str] | str, limit: int = 60) -> str:
    """A command on one line for reports, at most ``limit`` characters (cut with
    ``...``; a limit under 3 counts as 3): an argv as ``shlex.join`` writes it (without
    importing shlex, whose import compiles a pattern), a shell string with its runs of
    white space made one space."""
    limit = max(limit, 3)
    words = cmd.split() if isinstance(cmd, str) else map(_quote, cmd)
    text = " ".join(words)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(word: str) -> str:
    if not word:
        return "''"
    if _PLAIN.issuperset(word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


class _Pipe:
    """One output pipe, read without blocking: captured, and logged within ``SHOWN`` bytes."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        name: str,
        capture: Capture,
        log: Callable[[str], None] | None,
    ) -> None:
        self.loop = loop
        self.fd = fd
        self.prefix = name + ": "
        self.capture = capture
        self.log = log
        self.pending = b""
        self.shown = 0
        self.eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.loop.remove_reader(self.fd)
            if not self.eof.done():
                self.eof.set_result(None)
            return
        self.capture.add(chunk)
        if self.log is not None and self.shown < SHOWN:
            self._lines(chunk[: SHOWN - self.shown])

    def _lines(self, part: bytes) -> None:
        self.shown += len(part)
        *lines, self.pending = (self.pending + part).split(b"\n")
        for line in lines:
            self._emit(line)
        if self.shown >= SHOWN:  # (so a line never grows past SHOWN bytes in pending)
            if self.pending:
                self._emit(self.pending, cut=True)
                self.pending = b""
            self._say(f"... (only the first {size(SHOWN)} are shown)")

    def _emit(self, raw: bytes, *, cut: bool = False) -> None:
        """Log one line; one cut short at ``SHOWN`` ends with :data:`CUT` (the engine
        drops what a cut may leave of a secret)."""
        assert self.log is not None
        self.log(self.prefix + raw.decode("utf-8", "replace") + (CUT if cut else ""))

    def _say(self, text: str) -> None:
        assert self.log is not None
        self.log(self.prefix + text)

    def close(self) -> None:
        """Stop reading (what is in the pipe now is read first) and close our end."""
        if not self.eof.done():
            self.loop.remove_reader(self.fd)
            with contextlib.suppress(OSError):
                for _ in range(16):  # bounded: a writer left behind may never stop
                    chunk = os.read(self.fd, _CHUNK)
                    if not chunk:
                        break
                    self.capture.add(chunk)
                    if self.log is not None and self.shown < SHOWN:
                        self._lines(chunk[: SHOWN - self.shown])
            self.eof.cancel()
        os.close(self.fd)
        if self.log is None:
            return
        if self.pending:
            self._emit(self.pending)
            self.pending = b""
        hidden = self.capture.total - self.shown
        if hidden > 0:
            self._say(f"... {size(hidden)} more not shown")


class Credentials:
    """Who a command runs as: ``user`` (uid), ``group`` (gid), supplementary ``groups``
    (None: none at all), and its ``umask``; None for a field: the agent's own."""

    __slots__ = ("group", "groups", "umask", "user")

    def __init__(
        self,
        user: int | None = None,
        group: int | None = None,
        groups: Sequence[int] | None = None,
        umask: int | None = None,
    ) -> None:
        self.user = user
        self.group = group
        self.groups = groups
        self.umask = umask

    @property
    def switches(self) -> bool:
        return self.user is not None or self.group is not None

    def popen_args(self) -> dict[str, object]:
        """The ``subprocess.Popen`` arguments that make the switch in the child (the
        interpreter's child code calls setgroups, setregid, setreuid, then preexec_fn)."""
        args: dict[str, object] = {}
        if self.umask is not None:
            args["umask"] = self.umask
        if not self.switches:
            return args
        if os.geteuid() != 0:
            raise PermissionError(
                errno.EPERM,
                f"running a command as another user or group needs root "
                f"(the agent runs as uid {os.geteuid()})",
            )
        args["extra_groups"] = list(self.groups or ())
        if self.group is not None:
            args["group"] = self.group
        if self.user is not None:
            args["user"] = self.user
        return args


async def _spawn(
    argv: Sequence[str],
    cwd: str | None,
    env: dict[str, str] | None,
    output: bool,
    feed: bool = False,
    creds: Credentials | None = None,
    finish: bool = False,
    cwd_fd: int | None = None,
) -> tuple[int, int | None, asyncio.Future[int], int | None, int | None, int | None]:
    """Start ``argv`` in a new session; return its PID, its start time when known (None:
    read it from /proc, it is not reaped yet), the future of its exit status, the read
    ends of its stdout/stderr and (with ``feed``) the write end of its stdin.

    Through the spawner (``host/spawner.py``) when it takes the command; forked from the
    agent with the death signal set before ``exec`` otherwise (a user or group switch, a
    ``finish`` command without the death signal, a spawner that cannot run)."""
    ends: list[int] = []
    stdin_ends: list[int] = []
    try:
        if output:
            ends += os.pipe2(os.O_CLOEXEC)
            ends += os.pipe2(os.O_CLOEXEC)
        if feed:
            stdin_ends += os.pipe2(os.O_CLOEXEC)
        stdio = (
            stdin_ends[0] if feed else None,
            ends[1] if output else None,
            ends[3] if output else None,
        )
        started = None
        if not finish and (creds is None or not creds.switches):
            umask = creds.umask if creds is not None else None
            started = await spawner.spawn(argv, env, cwd, umask, stdio, cwd_fd)
        start = None
        if started is not None:
            pid, start, exited = started.pid, started.start, started.exited
        else:
            extra = creds.popen_args() if creds is not None else {}
            popen = forked.fork(
                argv, cwd, env, stdio, extra, death_signal=not finish, cwd_fd=cwd_fd
            )
            pid, exited = popen.pid, forked.exited(asyncio.get_running_loop(), popen)
    except BaseException:
        for fd in ends + stdin_ends:
            os.close(fd)
        raise
    writer = None
    if feed:
        os.close(stdin_ends[0])
        writer = stdin_ends[1]
    if not output:
        return pid, start, exited, None, None, writer
    os.close(ends[1])
    os.close(ends[3])
    return pid, start, exited, ends[0], ends[2], writer


class _Feed:
    """Writes ``data`` to a command's stdin without blocking the loop, then closes it; a
    reader that went away (EPIPE) ends the feed quietly."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
        self.loop = loop
        self.fd: int | None = fd
        self.data = memoryview(data)
        os.set_blocking(fd, False)
        if self.data:
            loop.add_writer(fd, self._write)
            self._write()
        else:
            self.close()

    def _write(self) -> None:
        if self.fd is None:
            return
        try:
            written = os.write(self.fd, self.data[:_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the command does not read any more
            written = len(self.data)
        self.data = self.data[written:]
        if not self.data:
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            self.loop.remove_writer(self.fd)
            os.close(self.fd)
            self.fd = None


async def run(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    time_limit: float | None = None,
    output: bool = True,
    log: Callable[[str], None] | None = None,
    children: str | None = None,
    owner: str = "",
    stdin: bytes | None = None,
    user: int | None = None,
    group: int | None = None,
    groups: Sequence[int] | None = None,
    umask: int | None = None,
    finish: bool = False,
    cwd_fd: int | None = None,
) -> Finished:
    """Run ``argv`` in a new session until it exits; return its status and output.

    ``env`` is added to the agent's environment, and ``CONVERGENT_RUN`` (a random token of
    its own: how the agent finds the command again). ``output`` False sends stdout and stderr
    to /dev/null; otherwise both are captured and, with ``log``, logged line by line as
    they arrive (``stdout: ...``, ``stderr: ...``). ``children``: the directory where the
    running command is recorded for :func:`reap_orphans` (``owner`` names who ran it).
    ``stdin`` is fed to the command (else it reads /dev/null). ``user``, ``group``,
    ``groups`` (numeric) and ``umask``: who the command runs as (see the module's text);
    switching needs root (PermissionError otherwise). ``finish``: a short command whose
    interruption would leave the host inconsistent (a shadow tool between two account
    files): it gets no death signal, and a cancellation waits up to ``FINISH`` seconds
    for it to end before killing it (no ``children`` record with it). ``cwd_fd``: a
    descriptor of ``cwd`` (``O_PATH`` will do; the caller keeps it), entered instead of
    the name, so a command not switching users runs in the directory its caller checked
    even if the path was swapped since (``cwd`` still names it in messages).

    Raises OSError when it cannot be started (``filename`` says what was missing),
    TimeoutError after ``time_limit`` seconds (the group is killed first), RecordError when
    it cannot be recorded (it is killed first); a cancellation kills the group too.
    """
    loop = asyncio.get_running_loop()
    token = os.urandom(8).hex()  # in its environment: how a start never answered, or a
    full = {**os.environ, **(env or {}), TOKEN: token}  # record's command, is found
    creds = None
    if user is not None or group is not None or groups is not None or umask is not None:
        creds = Credentials(user, group, groups, umask)
    pid, start, exited, out_fd, err_fd, in_fd = await _spawn(
        argv, cwd, full, output, stdin is not None, creds, finish, cwd_fd
    )
    record = None
    if children is not None:
        try:
            record = write_record(children, pid, token, owner, start)
        except OSError as exc:
            try:
                await _kill_now(pid, exited)
            finally:
                for fd in (out_fd, err_fd, in_fd):
                    if fd is not None:
                        os.close(fd)
                spawner.release(pid)
            raise RecordError(
                f"cannot record the running command in {children}: {exc.strerror or exc}; "
                "check that the state directory is writable"
            ) from exc
    feed = _Feed(loop, in_fd, stdin or b"") if in_fd is not None else None
    gone = False
    pipes: list[_Pipe] = []
    try:
        if out_fd is not None and err_fd is not None:
            stdout, stderr = Capture(), Capture()
            pipes.append(_Pipe(loop, out_fd, "stdout", stdout, log))
            pipes.append(_Pipe(loop, err_fd, "stderr", stderr, log))
            out_fd = err_fd = None
        else:
            stdout, stderr = Capture(0), Capture(0)
        try:
            async with asyncio.timeout(time_limit):
                code = await asyncio.shield(exited)
        except BaseException as exc:  # a timeout or a cancellation (or worse): kill the group
            if finish and isinstance(exc, asyncio.CancelledError):  # unless it may finish
                await asyncio.wait([exited], timeout=min(time_limit or FINISH, FINISH))
                gone = _ended(exited) or await _stop(pid, exited)
            else:
                gone = await _stop(pid, exited)
            if not finish:  # a child that made a group of its own is still in the session
                rest = asyncio.ensure_future(asyncio.to_thread(kill_session, pid, start, token))
                with contextlib.suppress(asyncio.CancelledError):  # a second cancellation
                    await asyncio.shield(rest)
                told = rest.done() and not rest.cancelled() and rest.exception() is None
                gone = gone and told and rest.result()
            raise
        gone = True  # the leader ended by itself: what it left running is its business
        if pipes:
            await asyncio.wait([p.eof for p in pipes], timeout=DRAIN)
    finally:
        if feed is not None:
            feed.close()
        for fd in (out_fd, err_fd):
            if fd is not None:
                os.close(fd)
        for pipe in pipes:
            pipe.close()
        if gone:
            if record is not None:
                remove_record(children, record)
            spawner.release(pid)  # its group's id may be another's once it is reaped
    return Finished(code, stdout, stderr)


async def _stop(pid: int, exited: asyncio.Future[int]) -> bool:
    """Kill the group of ``pid`` and wait for its exit; True once no process of it is left."""
    gone = await kill_group(pid)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        async with asyncio.timeout(KILL_WAIT):
            await asyncio.shield(exited)
    return gone and _ended(exited)


async def _kill_now(pid: int, exited: asyncio.Future[int]) -> None:
    """SIGKILL the group of ``pid`` at once and wait (bounded) for its exit."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(KILL_WAIT):
            await asyncio.shield(exited)


def _ended(exited: asyncio.Future[int]) -> bool:
    """Whether the command's exit status is known."""
    return exited.done() and not exited.cancelled() and exited.exception() is None
