"""Records of the commands an agent runs, and the reaper of what a killed agent left.

``convergent.host.process.run`` writes a record in ``children_dir(STATE_DIR)`` (a
directory of mode 0700) right after it starts a command: a file of mode 0600,
naming the boot, the agent (PID and start time), the command's session (its PID and start
time), a random token put in the command's environment, and the resource that ran it. The
record is removed when the run is over. ``reap_orphans`` kills what the records of a dead
agent still name.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import time

import msgspec

__all__ = [
    "DEAD",
    "KILL_WAIT",
    "TOKEN",
    "Stat",
    "boot_id",
    "carries",
    "children_dir",
    "ended",
    "kill_session",
    "pids",
    "reap_orphans",
    "remove_record",
    "stat",
    "write_record",
]

KILL_WAIT = 5.0  # seconds to wait for killed processes to be gone
TOKEN = "CONVERGENT_RUN"  # in every command's environment, its own: proves it is ours
DEAD = (b"Z", b"X")
_POLL = 0.02


def ended(pidfd: int, timeout: float = 0.0) -> bool:
    """Whether the process of ``pidfd`` has ended (waiting ``timeout`` seconds at most).
    ``poll``, not ``select``: a descriptor past 1,024, which ``select`` refuses, is common
    in an agent."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


class Stat(msgspec.Struct, frozen=True):
    state: bytes
    pgrp: int
    session: int
    start: int  # clock ticks after boot


def stat(pid: int | str) -> Stat | None:
    """What /proc says of a process; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return Stat(fields[0], int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def pids() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


class _Record(msgspec.Struct, frozen=True):
    boot: str  # /proc/sys/kernel/random/boot_id: start times count from this boot
    agent: int  # the agent's PID and start time
    agent_start: int
    session: int  # the command's session id (its PID) and start time
    start: int
    token: str  # the value of CONVERGENT_RUN in its environment
    owner: str  # kind[name] of the resource that ran it


def children_dir(state_dir: str) -> str:
    """Where the commands running for the agent of ``state_dir`` are recorded."""
    return os.path.join(state_dir, "children")


@functools.cache
def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``; empty when unreadable): a
    PID recorded under another boot is not the same process."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:  # bytes: no codec to load
            return f.read().strip().decode()
    except (OSError, UnicodeDecodeError):
        return ""


def _open_children(path: str) -> int:
    """The children directory (made 0700), opened without following a symlink."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise PermissionError(1, "is owned by another user; remove it", path)
        if st.st_mode & 0o7777 != 0o700:
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_record(path: str, pid: int, token: str, owner: str, start: int | None = None) -> str:
    """Record the running command ``pid`` durably; return the record's name. ``start``:
    its start time, when its parent read it (the spawner, which may have reaped it
    since: what it left in its session is still to be reaped after a kill)."""
    me = stat("self")
    if start is None:
        child = stat(pid)
        start = None if child is None else child.start
    if me is None or start is None:  # /proc is not mounted: nothing can be reaped
        return ""
    record = _Record(boot_id(), os.getpid(), me.start, pid, start, token, owner)
    name = f"{pid}-{start}.json"
    dfd = _open_children(path)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dfd)
        try:
            # Not fsynced: the record must outlive the agent, not the machine. A killed
            # agent's writes are in the page cache for the next agent to read, and after
            # a crash of the machine no command runs any more (and the boot id differs).
            os.write(fd, msgspec.json.encode(record))
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
    return name


def remove_record(path: str | None, name: str) -> None:
    if path is not None and name:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(path, name))


def _read_record(dfd: int, name: str) -> _Record | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return None
    try:
        return msgspec.json.decode(os.read(fd, 65536), type=_Record)
    except (OSError, msgspec.DecodeError):
        return None
    finally:
        os.close(fd)


def carries(pid: int, token: str, variable: str = TOKEN) -> bool:
    """True when the environment of ``pid`` holds ``variable=token`` (a run's token)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False
    return f"{variable}={token}".encode() in environ.split(b"\0")


def _members(record: _Record) -> list[tuple[int, Stat]]:
    """The live processes of the recorded session, proven ours.

    The kernel never reuses a PID while it is the id of a live session, so: when a process
    with the session's id runs with the recorded start time, every process of that session
    is ours; when one runs with another start time, the PID was reused after our session
    ended and nothing is ours; when none runs, a process of that session is ours only if
    it started after the command and carries the command's token in its environment.
    """
    leader = stat(record.session)
    if leader is not None and leader.start != record.start:
        return []
    found = []
    for pid in pids():
        st = stat(pid)
        if st is None or st.session != record.session or st.state in DEAD:
            continue
        if st.start < record.start:
            continue
        if leader is None and not carries(pid, record.token):
            continue
        found.append((pid, st))
    return found


def _kill_verified(pid: int, seen: Stat) -> int | None:
    """SIGKILL ``pid`` if it is still the process ``seen``; its pidfd to wait on (or -1)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except OSError:
        pidfd = -1
    now = stat(pid)  # checked after the pidfd is held: it names this very process
    if now is None or (now.session, now.start) != (seen.session, seen.start):
        if pidfd >= 0:
            os.close(pidfd)
        return None
    with contextlib.suppress(ProcessLookupError):
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    return pidfd


def _reap(record: _Record, deadline: float) -> tuple[list[int], bool]:
    """Kill every process of the record's session; (the PIDs killed, whether all are gone)."""
    killed: list[int] = []
    while members := _members(record):
        if time.monotonic() >= deadline:
            return killed, False
        poller = select.poll()
        waiting: list[int] = []
        for pid, seen in members:
            pidfd = _kill_verified(pid, seen)
            if pidfd is None:
                continue
            killed.append(pid)
            if pidfd >= 0:
                poller.register(pidfd, select.POLLIN)
                waiting.append(pidfd)
        try:
            left = set(waiting)
            while left and time.monotonic() < deadline:
                for fd, _ in poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                    poller.unregister(fd)
                    left.discard(fd)
            if not waiting:
                time.sleep(_POLL)  # no pidfd to wait on (Linux before 5.3)
        finally:
            for fd in waiting:
                os.close(fd)
    return killed, True


def kill_session(session: int, start: int | None, token: str, bound: float = KILL_WAIT) -> bool:
    """Kill what is left of a command's session once its group was killed (a child that
    made a group of its own, still in the session): its processes started with it or
    after, or carrying its ``token`` once its leader is gone. Whether none is left."""
    if start is None:
        leader = stat(session)
        start = leader.start if leader is not None else 0
    record = _Record(boot_id(), 0, 0, session, start, token, "")
    return _reap(record, time.monotonic() + bound)[1]


def reap_orphans(state_dir: str) -> list[int]:
    """Kill what commands of a previous, dead agent of ``state_dir`` left running.

    Every record in ``children_dir(state_dir)`` whose agent is gone names a session: each of
    its processes that is proven to be the recorded command's (start times from /proc; a
    process that reused a PID is never killed) gets SIGKILL, and the record is removed once
    they are gone (at most ``KILL_WAIT`` seconds per record; a record whose processes
    outlive that is kept for the next time). A record of a live agent is left alone.
    Returns the PIDs killed. Call it while holding the state directory.
    """
    try:
        dfd = os.open(
            children_dir(state_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        )
    except (FileNotFoundError, NotADirectoryError):
        return []
    killed: list[int] = []
    try:
        for name in os.listdir(dfd):
            record = _read_record(dfd, name)
            if record is not None and record.boot == boot_id():
                agent = stat(record.agent)
                alive = agent is not None and agent.state not in DEAD
                if alive and agent is not None and agent.start == record.agent_start:
                    continue  # its agent still runs: not an orphan
                pids, gone = _reap(record, time.monotonic() + KILL_WAIT)
                killed += pids
                if not gone:
                    continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)
    return killed
