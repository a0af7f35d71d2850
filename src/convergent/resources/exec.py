"""``exec``: run a command, guarded so that it runs only when it is needed.

Without a guard the command runs every time the resource is checked (once per agent
start). Guards make it idempotent: ``creates`` (skip when a path exists), ``removes``
(skip when a path does not exist), ``ifnewer``
(make-style: skip while a target is newer than its sources), ``onlyif`` and ``unless``
(skip depending on another command's exit status). ``refresh_only`` runs it only when a
changed upstream notifies it.

Commands run through ``convergent.host.process``: in their own session (process group),
dying with the agent. ``timeout`` (300 s unless set; ``null``: none), or the agent
shutting down while it runs, kills the whole group: SIGTERM, then SIGKILL after a short
grace. The command's own exit ends the run: output a process it left in the background
still holds open is read for at most half a second more, then left alone.

Output is bounded: the first 64 KiB of stdout and of stderr are logged line by line (then
one line says how much more was not shown); the last 64 KiB of each are kept. It sends
``stdout``, ``stderr`` (those last 64 KiB) and ``exit_code`` (negative: killed by that
signal) of the last run of the command that ended by itself (a timeout or a shutdown
leaves the previous values); guards' output is not kept.

Run controls: ``returns`` lists the exit codes that count as success (``[0]``); ``stdin``
is fed to the command (guards read nothing); ``umask`` applies to the command and its
guards. ``user``/``group`` run the command and its guards as that user (its primary
group unless ``group`` is given, and its supplementary groups, looked up through NSS as
``su`` does; ``HOME``, ``USER`` and ``LOGNAME`` are set to the user's unless ``env`` sets
them); switching needs an agent running as root (a clear error otherwise, before anything
runs). The switch is made in the child before ``exec`` (``host.process.run``): the agent's
own supplementary groups are never inherited.

No ``from __future__ import annotations`` here: the annotations of ExecParams and IfNewer
are types when the classes are made, which msgspec reads as they are (as strings it
compiles each one at the first ``exec`` of a run, and the first ``compile()`` in a
process costs ~1 ms); the names only imported for type checking are quoted.
"""

import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from convergent.errors import CommandError, ParamError, ResourceError
from convergent.host import posix, process
from convergent.resources import runas
from convergent.resources.abilities import Output
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.params import check_env

if TYPE_CHECKING:
    from convergent.resources.predicted import Effects, View

__all__ = ["Exec", "ExecParams", "IfNewer"]

_OCTAL = frozenset("01234567")


class IfNewer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A make-style guard: run only when ``target`` is missing or older than a source.

    target: absolute path of the file the command produces
    sources: absolute paths of the files it is made from; a missing source is an error
    """

    target: str
    sources: list[str]


class ExecParams(Params, frozen=True):
    """Parameters of ``exec``. Guards (creates, ifnewer, onlyif, unless) must be read only.

    cmd: the command: an argv list, or a string run by /bin/sh -c when ``shell`` is true;
      of its output, the first 64 KiB of stdout and of stderr are logged, the last 64 KiB kept
    shell: run ``cmd`` (a string) with /bin/sh -c
    cwd: absolute working directory for the command and its guards (entered as ``user``
      when given; for root, never through another user's symlink)
    env: variables added to the agent's environment for the command and its guards (which
      also get CONVERGENT_RUN, a random token of their own: env may not set it)
    timeout: seconds after which the command's (or a guard's) process group is killed; null: never
    creates: absolute path; skip the command when it exists
    unless: a guard command (string: /bin/sh -c; list: argv); skip when it exits 0
    onlyif: a guard command (string: /bin/sh -c; list: argv); skip when it exits non-zero
    ifnewer: ``{target, sources}``; run only when target is missing or older than a source
    refresh_only: run only when notified by a changed upstream (guards still apply)
    removes: absolute path; run only when it exists
    stdin: text fed to the command's standard input (default: none, it reads /dev/null)
    returns: exit codes that count as success, 0-255
    user: run the command and its guards as this user, a name or a uid (the agent must be root)
    group: run them with this group, a name or a gid (default with user: the user's primary one)
    umask: the umask of the command and its guards, an octal string like "022" or "0027"
    """

    cmd: list[str] | str
    shell: bool = False
    cwd: str | None = None
    env: dict[str, str] | None = None
    timeout: float | None = 300
    creates: str | None = None
    unless: list[str] | str | None = None
    onlyif: list[str] | str | None = None
    ifnewer: IfNewer | None = None
    refresh_only: bool = False
    removes: str | None = None
    stdin: str | None = None
    returns: list[int] = msgspec.field(default_factory=lambda: [0])
    user: str | int | None = None
    group: str | int | None = None
    umask: str | None = None


class Exec(Resource[ExecParams], kind="exec"):
    """Runs a command when its guards say it is needed, or when notified."""

    sends: ClassVar[Mapping[str, Output]] = {
        "stdout": Output(str),
        "stderr": Output(str),
        "exit_code": Output(int),
    }

    _last_run: dict[str, Any] | None = None  # outputs of the last run that ended by itself

    def validate(self) -> None:
        p = self.params
        if isinstance(p.cmd, str):
            if not p.shell:
                raise ParamError(
                    "cmd",
                    "a string command needs `shell: true`; "
                    "otherwise give an argv list, e.g. [make, -C, /src]",
                )
            if not p.cmd.strip():
                raise ParamError("cmd", "the command is empty")
        else:
            if p.shell:
                raise ParamError(
                    "cmd", "with `shell: true` give the command as one string, not a list"
                )
            if not p.cmd or not p.cmd[0]:
                raise ParamError("cmd", "the command is empty; give at least the program")
        _check_absolute("cwd", p.cwd)
        _check_absolute("creates", p.creates)
        _check_absolute("removes", p.removes)
        if not p.returns:
            raise ParamError("returns", "give at least one exit code that counts as success")
        for i, code in enumerate(p.returns):
            if not 0 <= code <= 255:
                raise ParamError(f"returns[{i}]", f"an exit code is 0 to 255, not {code}")
        for name in ("user", "group"):
            value = getattr(p, name)
            if isinstance(value, int) and not 0 <= value <= posix.MAX_ID:
                raise ParamError(name, f"{value} is out of range: an id is 0 to {posix.MAX_ID}")
            if isinstance(value, str):
                posix.parse_id(name, value)
        if p.umask is not None and not (
            len(p.umask) in (3, 4) and set(p.umask) <= _OCTAL and int(p.umask, 8) <= 0o777
        ):
            raise ParamError(
                "umask", f'{p.umask!r}: give 3 or 4 octal digits up to 0777, like "022" or "0027"'
            )
        if p.ifnewer is not None:
            _check_absolute("ifnewer.target", p.ifnewer.target)
            for i, source in enumerate(p.ifnewer.sources):
                _check_absolute(f"ifnewer.sources[{i}]", source)
        if p.timeout is not None and not p.timeout > 0:
            raise ParamError("timeout", f"must be a number of seconds > 0, not {p.timeout}")
        for name in ("unless", "onlyif"):
            guard = getattr(p, name)
            if guard is None:
                continue
            if not (guard.strip() if isinstance(guard, str) else guard and guard[0]):
                raise ParamError(name, "the guard command is empty")
        check_env(p.env)

    # -- the contract -----------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch the paths of ``creates`` and ``ifnewer``, so removing them runs the command
        (the ``Subscribes`` ability: no task)."""
        p = self.params
        paths = [path for path in (p.creates, p.removes) if path]
        if p.ifnewer is not None:
            paths += [p.ifnewer.target, *p.ifnewer.sources]
        stops: list[Callable[[], None]] = []

        def unsubscribe() -> None:
            for stop in stops:
                stop()

        if paths:
            from convergent.resources.fswatch import FsWatcher

            watcher = ctx.shared(FsWatcher)
            try:
                for path in paths:
                    stops.append(watcher.watch(path, ctx.event))
            except BaseException:
                unsubscribe()
                raise
        ctx.ready()
        return unsubscribe

    async def check(self, ctx: Context) -> Change | None:
        """Run the guards (assumed read only: they run under noop too); None when one says skip."""
        if self.params.refresh_only or await self._skip_reason(ctx) is not None:
            return None
        return Change(f"would run: {process.summary(self.params.cmd)}")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        seconds = await self._run(ctx)
        return f"ran ({seconds:.2f} s)"

    async def refresh(self, ctx: Context) -> str | None:
        """A changed upstream notified us: run again unless a guard says skip."""
        reason = await self._skip_reason(ctx)
        if reason is not None:
            ctx.log(f"refresh skipped: {reason}")
            return None
        seconds = await self._run(ctx)
        return f"ran ({seconds:.2f} s) on refresh"

    def outputs(self) -> Mapping[str, Any]:
        """stdout, stderr and exit_code of the last run (nothing before the first one)."""
        return dict(self._last_run or {})

    # -- under noop (the Predicts ability) ---------------------------------------------

    async def check_predicted(self, ctx: Context, view: "View") -> Change | None:
        """The guards through the predicted state: ``creates``, ``removes`` and
        ``ifnewer`` see predicted existence and order; a guard command cannot (it may run)."""
        if self.params.refresh_only or await self._skip_reason(ctx, view) is not None:
            return None
        return Change(f"would run: {process.summary(self.params.cmd)}")

    async def predict_refresh(self, ctx: Context, view: "View") -> str | None:
        """What a refresh would do: run, unless a guard says skip."""
        if await self._skip_reason(ctx, view) is not None:
            return None
        return f"would run on refresh: {process.summary(self.params.cmd)}"

    def predict(self, ctx: Context, change: Change | None, view: "View") -> "Effects":
        """What the command leaves behind, as its guards declare it: ``creates`` exists,
        ``removes`` is gone, ``ifnewer.target`` is newer than its sources; its outputs
        are known once it ran. Without such a guard, its effect is described by nothing."""
        from convergent.resources.predicted import UNKNOWN, Effects, Node

        p = self.params
        paths: dict[str, Node] = {}
        if p.removes is not None:
            paths[self._normal(p.removes)] = Node("absent", self.id)
        for made in (p.creates, p.ifnewer.target if p.ifnewer is not None else None):
            if made is not None:
                paths[self._normal(made)] = Node("exists", self.id)
        outputs = {name: UNKNOWN for name in self.sends}
        return Effects(paths, outputs, command=not paths)

    # -- helpers ----------------------------------------------------------------------

    async def _skip_reason(self, ctx: Context, view: "View | None" = None) -> str | None:
        """Why the guards say not to run (None: run). Guards run in the documented order.
        ``view``: under noop, the predicted state the path guards read."""
        p = self.params
        exists = _exists if view is None else lambda path: view.exists(self._normal(path))
        if p.creates is not None and exists(p.creates):
            return f"creates: {p.creates} exists"
        if p.removes is not None and not exists(p.removes):
            return f"removes: {p.removes} does not exist"
        if p.ifnewer is not None and _up_to_date(ctx, p.ifnewer, view):
            return f"ifnewer: {p.ifnewer.target} is newer than its sources"
        guarded = p.onlyif is not None or p.unless is not None
        if view is not None and guarded and view.changed_above:
            from convergent.resources.predicted import Uncertain

            raise Uncertain(f"its guard runs a command; {view.describe()}", "may run")
        if p.onlyif is not None:
            code = await self._guard(ctx, "onlyif", p.onlyif)
            if code != 0:
                return f"onlyif: {process.summary(p.onlyif)} exited with code {code}"
        if p.unless is not None and await self._guard(ctx, "unless", p.unless) == 0:
            return f"unless: {process.summary(p.unless)} exited with code 0"
        return None

    async def _guard(self, ctx: Context, name: str, guard: list[str] | str) -> int:
        argv = ["/bin/sh", "-c", guard] if isinstance(guard, str) else guard
        finished = await self._execute(ctx, argv, f"{name}: ", output=False)
        return finished.code

    async def _run(self, ctx: Context) -> float:
        """Run the command, streaming its output to ``ctx.log``; raise CommandError on failure."""
        cmd = self.params.cmd
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else cmd
        start = time.perf_counter()
        stdin = self.params.stdin
        finished = await self._execute(
            ctx, argv, "", output=True, stdin=None if stdin is None else stdin.encode()
        )
        code = finished.code
        self._last_run = {
            "stdout": finished.stdout.text(),
            "stderr": finished.stderr.text(),
            "exit_code": code,
        }
        if code not in self.params.returns:
            tail = finished.stderr.tail()
            if code < 0:
                message = f"was killed by signal {_signal_name(-code)}"
            else:
                message = f"exited with code {code}"
            message += (": " + "\n".join(tail)) if tail else " (nothing on stderr)"
            raise CommandError(ctx.id, message, code, "\n".join(tail))
        return time.perf_counter() - start

    async def _execute(
        self,
        ctx: Context,
        argv: list[str],
        prefix: str,
        *,
        output: bool,
        stdin: bytes | None = None,
    ) -> process.Finished:
        """Run ``argv`` (recorded for the reaper when the run has a writable state database);
        with ``output`` its lines go to ``ctx.log``. Failures to start and timeouts raise
        CommandError; a cancellation kills the process group."""
        p = self.params
        state = ctx.state
        children = None
        if state is not None and not state.readonly:
            children = process.children_dir(os.path.dirname(state.path))
        env, creds = runas.credentials(ctx.id, prefix, p.user, p.group, p.env)
        cwd_fd = None
        if p.cwd is not None and creds.user in (None, 0):  # root's (a group switch too)
            cwd_fd = runas.root_cwd(ctx.id, prefix, p.cwd)
        try:
            return await process.run(
                argv,
                cwd=p.cwd,
                cwd_fd=cwd_fd,
                env=env,
                time_limit=p.timeout,
                output=output,
                log=ctx.log if output else None,
                children=children,
                owner=ctx.id,
                stdin=stdin,
                user=creds.user,
                group=creds.group,
                groups=creds.groups,
                umask=None if p.umask is None else int(p.umask, 8),
            )
        except TimeoutError:
            raise CommandError(
                ctx.id,
                f"{prefix}timed out after {p.timeout:g} s; the process group was killed "
                "(raise `timeout:` if the command needs longer; `timeout: null` for none)",
                None,
            ) from None
        except OSError as exc:
            message = _spawn_error(exc, argv[0], p.cwd, cwd_fd is None)
            raise CommandError(ctx.id, prefix + message, None) from exc
        except process.RecordError as exc:
            raise CommandError(ctx.id, prefix + str(exc), None) from exc
        finally:
            if cwd_fd is not None:
                os.close(cwd_fd)

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[str, ...]:
        """The path of ``creates``, as ``file:<path>``: a file resource managing that path,
        or anything below it, comes after the command that creates it."""
        creates = self.params.creates
        return (f"file:{self._normal(creates)}",) if creates is not None else ()

    def needs(self) -> list[list[str]]:
        """The nearest managed directory at or above ``cwd``, the nearest managed one
        above ``creates`` (the path itself is provided, not needed: see ``provides``), the
        path of ``removes`` (or its nearest managed ancestor), and the managed ``user`` and
        ``group`` it runs as."""
        from convergent.graph.autoedge import path_uids

        p = self.params
        groups: list[list[str]] = [[uid] for uid in runas.needs(p.user, p.group)]
        if p.removes is not None:
            groups.append(list(path_uids("file:", self._normal(p.removes), inclusive=True)))
        if p.cwd is not None:
            groups.append(list(path_uids("file:", self._normal(p.cwd), inclusive=True)))
        if p.creates is not None:
            groups.append(list(path_uids("file:", self._normal(p.creates))))
        return groups

    @staticmethod
    def _normal(path: str) -> str:
        """An absolute path normalised the way ``file`` does (``/a//b/`` -> ``/a/b``)."""
        return "/" + os.path.normpath(path).lstrip("/")


def _check_absolute(field: str, path: str | None) -> None:
    if path is not None and not path.startswith("/"):
        raise ParamError(field, f"{path!r} is not an absolute path; write it from /")


def _exists(path: str) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _stat_mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _up_to_date(ctx: Context, ifnewer: IfNewer, view: "View | None" = None) -> bool:
    """True when the target exists and is at least as new as every source.

    A missing target means "run" before any source is looked at, so a noop preview of a
    fresh host (where the sources are not made yet) says "would run" instead of failing.
    ``view``: under noop, modification times through the predicted state (a predicted
    write is newer than anything on disk). Two writes predicted in this run, the target's
    before a source's, may get one time stamp (the clock's resolution): uncertain.
    """
    mtime_of = _stat_mtime if view is None else lambda path: view.mtime(Exec._normal(path))
    target = mtime_of(ifnewer.target)
    if target is None:
        return False
    newest = None
    for source in ifnewer.sources:
        mtime = mtime_of(source)
        if mtime is None:
            raise ResourceError(
                ctx.id,
                f"ifnewer: source {source} does not exist; create it first "
                "(require the resource that makes it) or remove it from ifnewer.sources",
            ) from None
        newest = mtime if newest is None else max(newest, mtime)
    if view is not None and newest is not None and target < newest:
        node = view.node(Exec._normal(ifnewer.target))
        if node is not None and node.order is not None:
            from convergent.resources.predicted import Uncertain

            raise Uncertain(
                f"ifnewer: {ifnewer.target} and a source would both be written in this run, "
                "the source later, within the clock's resolution or not",
                "may run",
            )
    return newest is None or target >= newest


def _spawn_error(exc: OSError, program: str, cwd: str | None, switched: bool) -> str:
    if cwd is not None and exc.filename == cwd:
        return runas.cwd_error(exc, cwd, switched)
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {program} (is it installed and on PATH?)"
    if isinstance(exc, PermissionError):
        return f"cannot run {program}: permission denied (is it executable?)"
    return f"cannot run {program}: {exc.strerror or exc}"
