"""``process``: keep a command running. It is desired state, not a child of one run: it
outlives the agent, and the next agent finds it again (the resource's name only names it).

The command is started in a session of its own *without* the death signal that ``exec``
commands get (``convergent.host.process.spawn_detached``), so it outlives the agent: a
run-once agent (``--converged-timeout 0``) leaves it running, and the next agent finds it
again through its record under the state directory (``procfiles``: PID plus the start
time from ``/proc/PID/stat``, so a reused PID is never taken for it) instead of starting
a second one.

- While an agent runs, the process is watched with a pidfd: when it exits (or is killed)
  the agent hears it at once and starts it again, within milliseconds. A crash loop is
  paced by the meta parameters ``limit``/``burst`` (each restart is one pass); a command
  that cannot be started at all fails, paced by ``retry``/``delay``/``backoff``.
- Its stdout and stderr go to a pipe whose keeper (``convergent.host.logkeeper``, started
  with it, outliving the agent as it does) writes ``STATE_DIR/processes/KEY.log`` (0600;
  ``convergent`` prints the path in the first start's summary), agent or no agent: when
  the log reaches ``procfiles.LOG_LIMIT`` (1 MiB), it becomes ``KEY.log.1`` (the older
  part replaced) and a new one begins, cut at a line end when the output has one. While
  an agent runs it holds a writing end of that pipe (``proclog``), so a restart's process
  writes to the same keeper; the keeper ends when the pipe's last writer does (the
  process, any child that kept its output, the agent once it stops or the process is
  stopped). With ``user``/``group`` the pipe is theirs (a server logging to /dev/stderr
  opens it again); the log and its keeper stay the agent's. A keeper that ends while the
  agent that started it holds it gets the process restarted with a new one; one killed
  while no agent runs is not noticed (the process gets EPIPE or SIGPIPE at its next
  write). A process an older convergent started, with the log file itself as its output
  (which no keeper caps), is restarted once.
- ``state: stopped``: the stop signal to its process group, at most ``stop_timeout``
  seconds of waiting, then SIGKILL of the group.
- A notification restarts it (``restart_on_refresh``), as does a change of ``cmd``,
  ``cwd``, ``env``, ``user`` or ``group`` (the record keeps their fingerprint).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import msgspec

from convergent.errors import ParamError, ResourceError
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.params import check_env

if TYPE_CHECKING:
    import subprocess

    from convergent.resources.predicted import Effects, View
    from convergent.resources.proclog import Keeper

__all__ = ["Process", "ProcessParams"]

# The processes this agent started, by PID: whichever resource instance finds one later
# (after a policy reload) can still reap it. Entries leave when reaped.
_OURS: dict[int, subprocess.Popen[bytes]] = {}


class ProcessParams(Params, frozen=True):
    """Parameters of ``process``: a command kept running, which outlives the agent.

    cmd: the command, an argv list (no shell: [sh, -c, "..."] for one); it must stay in
      the foreground. stdout and stderr go to a log under the state directory (rotated at
      1 MiB, also when no agent runs)
    cwd: absolute working directory of the command
    env: variables added to the agent's environment for the command (which also gets
      CONVERGENT_RUN, a random token of its own: env may not set it)
    user: user name or uid to run it as (the agent must be root); its groups come with it
    group: group name or gid to run it as (default: the user's primary group)
    state: "running" (started again within milliseconds whenever it exits) or "stopped"
    restart_on_refresh: restart it when a changed upstream notifies it
    stop_signal: the signal that asks it to stop, by name (TERM, INT, HUP, QUIT...)
    stop_timeout: seconds to wait after the stop signal before SIGKILL of its process group
    """

    cmd: list[str]
    cwd: str = "/"
    env: dict[str, str] | None = None
    user: str | int | None = None
    group: str | int | None = None
    state: Literal["running", "stopped"] = "running"
    restart_on_refresh: bool = True
    stop_signal: str = "TERM"
    stop_timeout: float = 10.0


class _Live:
    """The process a resource watches: identity, pidfd, its Popen when we started it, and
    the keeper of its log we started it with (None: not started by this resource in this
    run)."""

    __slots__ = ("fingerprint", "keeper", "pid", "pidfd", "popen", "start")

    def __init__(
        self,
        pid: int,
        start: int,
        pidfd: int,
        popen: subprocess.Popen[bytes] | None,
        fingerprint: str,
    ) -> None:
        self.pid = pid
        self.start = start
        self.pidfd = pidfd
        self.popen = popen
        self.fingerprint = fingerprint
        self.keeper: Keeper | None = None


class Process(Resource[ProcessParams], kind="process"):
    """Keeps a command running across agents."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = (
        "stopped (stop_signal, then SIGKILL of its group after stop_timeout)"
    )
    destroy_default: ClassVar[str] = "remove"

    def absent(self, explicit: bool) -> Process | None:
        """Stopped; None for ``state: stopped``."""
        if self.params.state == "stopped":
            return None
        return Process(
            self.name, msgspec.structs.replace(self.params, state="stopped"), meta=self.meta
        )

    _live: _Live | None = None
    _event: Callable[[], None] | None = None
    _exit: str | None = None  # how the last process we knew of ended (for the summary)

    def validate(self) -> None:
        p = self.params
        if not p.cmd or not p.cmd[0]:
            raise ParamError("cmd", "the command is empty; give at least the program")
        if not p.cwd.startswith("/"):
            raise ParamError("cwd", f"{p.cwd!r} is not an absolute path; write it from /")
        check_env(p.env)
        for field in ("user", "group"):
            value = getattr(p, field)
            if (isinstance(value, int) and value < 0) or value == "":
                raise ParamError(field, f"give a name or a number >= 0, not {value!r}")
        _signal(p.stop_signal)
        if not 0 < p.stop_timeout < float("inf"):
            raise ParamError(
                "stop_timeout", f"must be a number of seconds > 0, not {p.stop_timeout}"
            )

    # -- watching ---------------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch the process's pidfd (registered when it is found or started)."""
        self._event = ctx.event
        ctx.ready()

        def unsubscribe() -> None:
            self._event = None
            _release(ctx)
            live, self._live = self._live, None
            if live is not None:  # the process runs on: only our watch of it ends
                _unwatch(live)

        return unsubscribe

    def _on_exit(self) -> None:
        """The pidfd is readable: the process ended. Reap it if it is ours; check again."""
        live, self._live = self._live, None
        if live is None:
            return
        _unwatch(live)
        code = _reap(live)
        self._exit = f"pid {live.pid} {_how(code)}"
        if self._event is not None:
            self._event()

    def _watch(self, live: _Live) -> None:
        """Know ``live`` as the process; watch its pidfd when subscribed (a ``process``
        polled with ``meta.poll`` is never subscribed: its checks find an exit through
        ``/proc``, and no pidfd outlives its run)."""
        self._live = live
        if self._event is None:
            _unwatch(live)
            return
        asyncio.get_running_loop().add_reader(live.pidfd, self._on_exit)

    # -- finding it -------------------------------------------------------------------

    def _find(self, ctx: Context) -> _Live | None:
        """The process, watched: the one we know of, else the recorded one if it still
        runs (same PID, same start time)."""
        from convergent.resources.procfiles import find_by_token, live

        known = self._live
        if known is not None:
            if live(known.pid, known.start) is not None:
                return known
            self._on_exit()  # its pidfd reader has not run yet
        state = ctx.state
        if state is None:
            return None
        from convergent.resources.procfiles import Store

        record = Store(os.path.dirname(state.path)).read(ctx.id)
        if record is None:
            return None
        pid, start = record.pid, record.start
        if pid == 0:  # an agent died between the spawn and recording its PID
            found = find_by_token(record.token)
            if found is None:
                return None
            pid, start = found[0], found[1].start
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        if pidfd < 0 or live(pid, start) is None:  # checked once the pidfd pins it
            if pidfd >= 0:
                os.close(pidfd)
            if self._exit is None:
                from convergent.host.children import stat

                again = stat(pid)
                reused = again is not None and (again.start != start or again.session != pid)
                self._exit = f"the recorded pid {pid} " + (
                    "is now another process" if reused else "is gone"
                )
            return None
        found_live = _Live(pid, start, pidfd, _OURS.get(pid), record.fingerprint)
        self._watch(found_live)
        return found_live

    def _fingerprint(self) -> str:
        p = self.params
        what = msgspec.json.encode([p.cmd, p.cwd, p.env, p.user, p.group])
        return hashlib.sha256(what).hexdigest()[:16]

    # -- the contract -----------------------------------------------------------------

    async def check(self, ctx: Context) -> Change | None:
        live = self._find(ctx)
        if self.params.state == "stopped":
            return Change(f"stop pid {live.pid}") if live is not None else None
        if live is None:
            from convergent.host.process import summary

            was = f" ({self._exit})" if self._exit else ""
            return Change(f"start: {summary(self.params.cmd)}{was}")
        why = self._restart_why(ctx, live)
        return Change(f"restart pid {live.pid}: {why}") if why else None

    def _restart_why(self, ctx: Context, live: _Live) -> str | None:
        """Why the running process ``live`` must be started again (None: it need not)."""
        if live.fingerprint != self._fingerprint():
            return "its command or settings changed"
        if live.keeper is not None:
            if live.keeper.lost:
                return (
                    f"the keeper of its log {_how(live.keeper.code)} (its output had nowhere to go)"
                )
        elif ctx.state is not None and _writes_straight_to(live.pid, ctx):
            return "it writes straight to its log (an older convergent started it)"
        return None

    def _keeper_gone(self) -> None:
        if self._event is not None:
            self._event()

    async def apply(self, ctx: Context, change: Change) -> str | None:
        live = self._find(ctx)
        if self.params.state == "stopped":
            _release(ctx)
            if live is None:
                return "already stopped"
            await self._stop(ctx, live)
            return f"stopped (pid {live.pid})"
        why = self._exit
        if live is not None:
            # None: the check saw no process, and one runs now (started meanwhile)
            why = self._restart_why(ctx, live) or "found running after the check"
            await self._stop(ctx, live)
        first = why is None
        new = self._start(ctx)
        if first:
            from convergent.resources.procfiles import Store

            assert ctx.state is not None
            log = Store(os.path.dirname(ctx.state.path)).log_path(ctx.id)
            return f"started (pid {new.pid}; output to {log})"
        return f"restarted (pid {new.pid}): {why}"

    async def refresh(self, ctx: Context) -> str | None:
        """A changed upstream notified us: restart (when running and restart_on_refresh)."""
        p = self.params
        if p.state != "running" or not p.restart_on_refresh:
            return None
        live = self._find(ctx)
        if live is not None:
            await self._stop(ctx, live)
        new = self._start(ctx)
        return f"restarted on refresh (pid {new.pid})"

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: running (or stopped), which no other kind reads: no paths, so what
        reads the host downstream is not made *may* by it."""
        from convergent.resources.predicted import Effects

        return Effects()

    async def predict_refresh(self, ctx: Context, view: View) -> str | None:
        """What a refresh would do: restart it, when running and ``restart_on_refresh``."""
        p = self.params
        if p.state != "running" or not p.restart_on_refresh:
            return None
        return "would restart on refresh"

    async def reverse(self, ctx: Context) -> str | None:
        """Removed from the policy with ``meta: {reverse: true}``: stop it."""
        _release(ctx)
        live = self._find(ctx)
        if live is None:
            return None
        await self._stop(ctx, live)
        return f"stopped (pid {live.pid})"

    def plan_reverse(self, ctx: Context) -> str | None:
        """What ``reverse`` would do (read only, nothing adopted)."""
        from convergent.resources.procfiles import Store, live

        if self._live is not None:
            return f"stop pid {self._live.pid}"
        if ctx.state is None:
            return None
        record = Store(os.path.dirname(ctx.state.path)).read(ctx.id)
        if record is None or live(record.pid, record.start) is None:
            return None
        return f"stop pid {record.pid}"

    def provides(self) -> tuple[str, ...]:
        """Nothing another resource would need (the autoedge protocol asks for both)."""
        return ()

    def needs(self) -> list[Sequence[str]]:
        """Autoedges: the nearest managed directory at or above ``cwd``, and the managed
        ``user`` and ``group`` it runs as (``user:NAME``, ``gid:N``...)."""
        from convergent.graph.autoedge import path_uids
        from convergent.resources.runas import needs

        p = self.params
        cwd = path_uids("file:", p.cwd, inclusive=True)
        return [cwd, *([uid] for uid in needs(p.user, p.group))]

    # -- starting and stopping --------------------------------------------------------

    def _start(self, ctx: Context) -> _Live:
        from convergent.host import process
        from convergent.host.children import stat
        from convergent.resources.procfiles import TOKEN, Record, Store, boot_id
        from convergent.resources.proclog import Keepers
        from convergent.resources.runas import root_cwd

        p = self.params
        state = ctx.state
        if state is None or state.readonly:
            raise ResourceError(
                ctx.id,
                "needs a state directory to record the process (convergent run has one: "
                "--state-dir; the Python API: run(graph, state_dir=...))",
            )
        uid, gid, groups = _credentials(ctx.id, p.user, p.group)
        store = Store(os.path.dirname(state.path))
        token = os.urandom(16).hex()
        fingerprint = self._fingerprint()
        try:
            # The intent first: if we die between the spawn and the record of its PID,
            # the next agent finds the process by this token instead of starting another.
            store.write(Record(ctx.id, boot_id(), token, fingerprint))
        except OSError as exc:
            raise ResourceError(
                ctx.id, f"cannot write its record in {store.path}: {exc.strerror or exc}"
            ) from exc
        try:
            log, keeper = ctx.shared(Keepers).output_for(ctx.id, store, self._keeper_gone)
        except OSError as exc:
            store.remove(ctx.id)
            raise ResourceError(
                ctx.id,
                f"cannot start the keeper of its log {store.log_path(ctx.id)}: "
                f"{exc.strerror or exc} (the log must be a regular file the agent can open: "
                "remove anything else there)",
            ) from exc
        env = {**os.environ, **(p.env or {}), TOKEN: token}
        cwd_fd = None
        try:
            if uid in (None, 0):  # root's (a group switch too): entered as checked
                cwd_fd = root_cwd(ctx.id, "", p.cwd)
            if uid is not None or gid is not None:
                # The pipe is the user's, as its stdout would be under a shell: a command
                # that opens /dev/stdout or /dev/stderr again (a server's "log to
                # /dev/stderr") may. The keeper's end stays out of its reach.
                os.fchown(log, -1 if uid is None else uid, -1 if gid is None else gid)
            popen = process.spawn_detached(
                p.cmd,
                cwd=p.cwd,
                env=env,
                output=log,
                user=uid,
                group=gid,
                groups=groups,
                cwd_fd=cwd_fd,
            )
        except OSError as exc:
            store.remove(ctx.id)
            who = None if cwd_fd is not None else p.user
            raise ResourceError(ctx.id, _spawn_error(exc, p.cmd[0], p.cwd, who)) from exc
        except ResourceError:
            store.remove(ctx.id)
            raise
        finally:
            os.close(log)
            if cwd_fd is not None:
                os.close(cwd_fd)
        pidfd = os.pidfd_open(popen.pid)
        seen = stat(popen.pid)  # our unreaped child: /proc has it even if it exited
        start = seen.start if seen is not None else 0
        try:
            store.write(Record(ctx.id, boot_id(), token, fingerprint, popen.pid, start))
        except OSError as exc:
            os.close(pidfd)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise ResourceError(
                ctx.id,
                f"cannot record pid {popen.pid} in {store.path}: {exc.strerror or exc}; "
                "it was killed",
            ) from exc
        self._exit = None
        _OURS[popen.pid] = popen
        new = _Live(popen.pid, start, pidfd, popen, fingerprint)
        new.keeper = keeper
        self._watch(new)
        return new

    async def _stop(self, ctx: Context, live: _Live) -> None:
        """Stop signal to its group, ``stop_timeout`` seconds, SIGKILL; then reap it."""
        from convergent.host import process

        p = self.params
        if self._live is live:  # this exit is ours, not one to restart after
            self._live = None
            _unwatch(live)
        gone = await process.kill_group(live.pid, grace=p.stop_timeout, sig=_signal(p.stop_signal))
        if live.popen is not None:
            with contextlib.suppress(Exception):
                live.popen.wait(timeout=process.KILL_WAIT)
            _reap(live)
        if not gone:
            raise ResourceError(
                ctx.id,
                f"pid {live.pid} or a process of its group is still there after SIGKILL "
                "(stuck in the kernel, e.g. on a hung mount?)",
            )
        self._exit = None
        state = ctx.state
        if state is not None and not state.readonly:
            from convergent.resources.procfiles import Store

            Store(os.path.dirname(state.path)).remove(ctx.id)  # stopped on purpose: no record


def _reap(live: _Live) -> int | None:
    """The exit status of our child ``live`` once it ended (reaped); None if not ours."""
    popen = live.popen
    if popen is None:
        return None
    code = popen.poll()
    if code is not None:
        _OURS.pop(popen.pid, None)
    return code


def _release(ctx: Context) -> None:
    from convergent.resources.proclog import Keepers

    ctx.shared(Keepers).release(ctx.id)


def _writes_straight_to(pid: int, ctx: Context) -> bool:
    """Whether process ``pid``'s stdout is the log file itself (started by an older
    convergent, which gave it the log file itself: no keeper caps it): the same file, by
    inode (the state directory may be reached through a symlink)."""
    import stat

    from convergent.resources.procfiles import Store

    assert ctx.state is not None
    log = Store(os.path.dirname(ctx.state.path)).log_path(ctx.id)
    try:
        out, ours = os.stat(f"/proc/{pid}/fd/1"), os.stat(log, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(out.st_mode) and (out.st_dev, out.st_ino) == (ours.st_dev, ours.st_ino)


def _unwatch(live: _Live) -> None:
    if live.pidfd >= 0:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(live.pidfd)
        os.close(live.pidfd)
        live.pidfd = -1


def _signal(name: str) -> signal.Signals:
    text = name.strip().upper()
    try:
        return signal.Signals[text if text.startswith("SIG") else "SIG" + text]
    except KeyError:
        raise ParamError(
            "stop_signal", f"{name!r} is not a signal; give its name: TERM, INT, HUP, QUIT..."
        ) from None


def _how(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _credentials(
    rid: str, user: str | int | None, group: str | int | None
) -> tuple[int | None, int | None, list[int] | None]:
    """uid, gid and supplementary gids to run as (None: the agent's own)."""
    import grp
    import pwd

    uid = gid = None
    groups: list[int] | None = None
    if user is not None:
        try:
            entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
        except KeyError:
            if isinstance(user, str):
                raise ResourceError(
                    rid, f"user {user!r} does not exist; create it first or fix `user:`"
                ) from None
            uid = user
        else:
            uid, gid = entry.pw_uid, entry.pw_gid
            groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    if group is not None:
        if isinstance(group, int):
            gid = group
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ResourceError(
                    rid, f"group {group!r} does not exist; create it first or fix `group:`"
                ) from None
    if uid is not None and groups is None:
        groups = []
    return uid, gid, groups


def _spawn_error(exc: OSError, program: str, cwd: str, user: str | int | None) -> str:
    if exc.filename == cwd:
        from convergent.resources import runas

        return runas.cwd_error(exc, cwd, user is not None)
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {program} (is it installed and on PATH?)"
    if isinstance(exc, PermissionError):
        if user is not None and os.geteuid() != 0:
            return f"cannot run {program} as {user!r}: the agent must run as root for `user:`"
        return f"cannot run {program}: permission denied (is it executable?)"
    return f"cannot run {program}: {exc.strerror or exc}"
