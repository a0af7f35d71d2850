"""``svc``: a systemd unit (the resource's name; ``.service`` implied) kept running or
stopped, enabled or disabled, over systemd's D-Bus API; needs systemd as PID 1.

Everything goes through ``org.freedesktop.systemd1`` on the system bus (the run's one
connection, ``convergent.host.dbus.SystemBus``), never through ``systemctl``:

- ``watch``: ``Manager.Subscribe`` (once per bus connection), then a match on the unit object's
  ``PropertiesChanged`` (and the manager's ``UnitFilesChanged``) before ``ready()``, so a
  unit stopped by hand (``systemctl stop``, a crash) is an event at once and is started
  again, with no polling. ``Subscribe`` is per connection: when the bus connection is
  lost, the watch connects again, subscribes again and reports an event (what changed
  meanwhile was signalled to nobody).
- ``check``: the unit's ``ActiveState`` and ``LoadState`` (``Properties.Get``) and
  ``Manager.GetUnitFileState``.
- ``apply``: ``EnableUnitFiles``/``DisableUnitFiles`` (then ``Reload``, as ``systemctl
  enable`` does), then ``StartUnit``/``StopUnit`` in mode ``replace``, waiting (bounded by
  ``JOB_WAIT``) for the job's ``JobRemoved`` and failing with its result unless ``done``.
- ``refresh``: ``RestartUnit``, ``ReloadUnit`` or ``ReloadOrRestartUnit`` (``refresh:``),
  when the unit is meant to run.

systemd must be PID 1. That is checked when the watch starts, before the first check,
not when the policy is loaded: loading does no I/O by contract, and ``convergent check``
of a policy written for servers must pass on a machine without systemd. The failure
reads ``svc needs systemd (PID 1 is NAME)``. The probe is :data:`probe_init` (replaced by
tests that run against a stand-in of systemd's interface).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from convergent.errors import ParamError, ResourceError
from convergent.resources.base import Change, Context, Params, Resource

if TYPE_CHECKING:
    from convergent.resources.predicted import Effects, View

__all__ = ["JOB_WAIT", "Svc", "SvcParams", "init_name", "probe_init", "unit_name"]

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
JOB_WAIT = 300.0  # seconds a start/stop/restart/reload job may take before we give up
RECONNECT_TRIES = 10  # after losing the bus: tries ~15 s in all, then the watch fails
_SUFFIXES = (
    ".service",
    ".socket",
    ".target",
    ".timer",
    ".mount",
    ".path",
    ".slice",
    ".scope",
    ".device",
    ".swap",
    ".automount",
)
_RUNNING = frozenset({"active", "reloading", "activating", "refreshing"})
_ENABLED = frozenset({"enabled", "enabled-runtime", "linked", "linked-runtime", "alias"})


class SvcParams(Params, frozen=True):
    """Parameters of ``svc``: the resource's name is the systemd unit (``.service`` implied).

    state: "running" (started again at once when it stops) or "stopped"
    startup: "enabled" (started at boot) or "disabled"; null: left as it is
    refresh: what a notification does: "restart", "reload" or "reload-or-restart"
    """

    state: Literal["running", "stopped"] = "running"
    startup: Literal["enabled", "disabled"] | None = None
    refresh: Literal["restart", "reload", "reload-or-restart"] = "restart"


def unit_name(name: str) -> str:
    """``nginx`` -> ``nginx.service``; a name with a unit suffix is kept."""
    return name if name.endswith(_SUFFIXES) else name + ".service"


def init_name() -> str | None:
    """None when systemd is PID 1 (``/run/systemd/system`` exists, as ``sd_booted()``
    checks), else the name of PID 1 (``/proc/1/comm``) for the error message."""
    if os.path.isdir("/run/systemd/system"):
        return None
    try:
        with open("/proc/1/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


# The probe svc uses; a test that runs against a stand-in of systemd's D-Bus interface
# replaces it with one that returns None.
probe_init: Callable[[], str | None] = init_name


class _Jobs:
    """JobRemoved results by job path, shared by the run's svc resources: one match."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.done: dict[str, str] = {}  # results that came before anyone waited (bounded)
        self.stop: Callable[[], None] | None = None
        self.lock = asyncio.Lock()
        self.generation = 0  # the bus connection systemd's Subscribe was made on

    def on_signal(self, sig: Any) -> None:
        if sig.member != "JobRemoved" or len(sig.body) < 4:
            return
        path, result = str(sig.body[1]), str(sig.body[3])
        future = self.waiting.pop(path, None)
        if future is not None and not future.done():
            future.set_result(result)
            return
        self.done[path] = result
        while len(self.done) > 256:
            del self.done[next(iter(self.done))]

    def close(self) -> None:
        if self.stop is not None:
            self.stop()
            self.stop = None


class _Plan(Change):
    """What check found: the unit file to enable or disable (or not), the job to queue."""

    startup: str | None = None  # "EnableUnitFiles" or "DisableUnitFiles"
    job: str | None = None  # "StartUnit" or "StopUnit"


_UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")


class Svc(Resource[SvcParams], kind="svc"):
    """A systemd unit, kept running or stopped, enabled or disabled."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = "stopped, and disabled when the policy enabled it"
    destroy_default: ClassVar[str] = "remove"

    def absent(self, explicit: bool) -> Svc | None:
        """Stopped (and disabled if enabled); None when already stopped and not enabled."""
        p = self.params
        if p.state == "stopped" and p.startup != "enabled":
            return None
        disabled = p.startup == "enabled"
        return Svc(
            self.name,
            SvcParams(state="stopped", startup="disabled" if disabled else None),
            meta=self.meta,
        )

    _path: str | None = None  # the unit's object path

    def validate(self) -> None:
        name = self.name
        if "/" in name or name.startswith(".") or not name.strip() or " " in name:
            raise ParamError(None, f"{name!r} is not a unit name; give e.g. nginx or nginx.service")

    @property
    def unit(self) -> str:
        return unit_name(self.name)

    def provides(self) -> tuple[str, ...]:
        """``svc:UNIT``, for what must come after the service."""
        return (f"svc:{self.unit}",)

    def needs(self) -> list[tuple[str]]:
        """Autoedges: whatever provides the unit file in one of systemd's unit directories
        comes first (a managed ``file`` writing it, a ``pkg`` shipping it)."""
        return [(f"file:{d}/{self.unit}",) for d in _UNIT_DIRS]

    # -- the bus ----------------------------------------------------------------------

    def _bus(self, ctx: Context) -> Any:
        from convergent.host.dbus import SystemBus

        return ctx.shared(SystemBus)

    async def _manager(self, ctx: Context, member: str, signature: str = "", *body: Any) -> Any:
        from convergent.host.dbus import BusError

        try:
            return await self._bus(ctx).call(
                SYSTEMD, MANAGER_PATH, MANAGER, member, signature, body
            )
        except BusError as exc:
            raise ResourceError(ctx.id, f"{self.unit}: {exc}") from exc

    async def _unit_path(self, ctx: Context) -> str:
        if self._path is None:
            (path,) = await self._manager(ctx, "LoadUnit", "s", self.unit)
            self._path = str(path)
        return self._path

    async def _property(self, ctx: Context, name: str) -> str:
        from convergent.host.dbus import BusError

        path = await self._unit_path(ctx)
        try:
            (value,) = await self._bus(ctx).call(
                SYSTEMD, path, PROPERTIES, "Get", "ss", [UNIT, name]
            )
        except BusError as exc:
            raise ResourceError(ctx.id, f"{self.unit}: {exc}") from exc
        return str(value)

    async def _jobs(self, ctx: Context) -> _Jobs:
        """The run's JobRemoved results; asks systemd for its signals (``Subscribe``) once
        per bus connection: systemd refuses a second one, and forgets the subscription of
        a connection that is gone (it then sends its signals to nobody)."""
        from convergent.host.dbus import BusError

        jobs: _Jobs = ctx.shared(_Jobs)
        bus = self._bus(ctx)
        async with jobs.lock:
            if jobs.stop is None:
                jobs.stop = await bus.subscribe(
                    jobs.on_signal, sender=SYSTEMD, path=MANAGER_PATH, interface=MANAGER
                )
            try:
                await bus.connection()
                if jobs.generation != bus.generation:
                    await bus.call(SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")
                    jobs.generation = bus.generation
            except BusError as exc:
                if exc.name == "org.freedesktop.systemd1.AlreadySubscribed":
                    jobs.generation = bus.generation
                else:
                    raise ResourceError(ctx.id, f"{self.unit}: {exc}") from exc
        return jobs

    # -- the contract -----------------------------------------------------------------

    async def watch(self, ctx: Context) -> None:
        init = probe_init()
        if init is not None:
            raise ResourceError(
                ctx.id,
                f"svc needs systemd (PID 1 is {init}); manage this host's services another "
                "way (a process resource keeps a command running without systemd)",
            )
        bus = self._bus(ctx)
        await self._jobs(ctx)
        path = await self._unit_path(ctx)

        def changed(sig: Any) -> None:
            ctx.event()

        stops = [
            await bus.subscribe(
                changed,
                sender=SYSTEMD,
                path=path,
                interface=PROPERTIES,
                member="PropertiesChanged",
            ),
            await bus.subscribe(
                changed,
                sender=SYSTEMD,
                path=MANAGER_PATH,
                interface=MANAGER,
                member="UnitFilesChanged",
            ),
        ]
        try:
            ctx.ready()
            while True:
                await bus.lost()
                await self._reconnect(ctx)
                ctx.event()  # what changed while the bus was down was never signalled
        finally:
            for stop in stops:
                stop()

    async def _reconnect(self, ctx: Context) -> None:
        """After the bus connection was lost: connect again and re-``Subscribe`` (the
        matches come back with the connection), retrying for about 15 s before the watch
        fails (then ``retry``/``rewatch`` decide)."""
        from convergent.host.dbus import BusError

        delay = 0.05
        for attempt in range(RECONNECT_TRIES):
            try:
                await self._jobs(ctx)
                ctx.log("the system bus connection was lost: connected again")
                return
            except (BusError, ResourceError) as exc:
                if attempt == RECONNECT_TRIES - 1:
                    raise ResourceError(
                        ctx.id,
                        f"{self.unit}: lost the system bus and could not connect again: "
                        f"{getattr(exc, 'message', exc)}",
                    ) from exc
            await asyncio.sleep(delay)  # a retry delay, not a synchronisation
            delay = min(delay * 2, 5.0)

    async def check(self, ctx: Context) -> Change | None:
        p = self.params
        todo: list[str] = []
        startup = job = None
        if p.startup is not None:
            (file_state,) = await self._manager(ctx, "GetUnitFileState", "s", self.unit)
            file_state = str(file_state)
            if p.startup == "enabled" and file_state == "masked":
                raise ResourceError(
                    ctx.id, f"{self.unit} is masked; unmask it (systemctl unmask {self.unit})"
                )
            if p.startup == "enabled" and file_state == "disabled":
                todo.append("enable")
                startup = "EnableUnitFiles"
            elif p.startup == "disabled" and file_state in _ENABLED:
                todo.append("disable")
                startup = "DisableUnitFiles"
        load = await self._property(ctx, "LoadState")
        if load != "loaded":
            hint = "is its package installed?" if load == "not-found" else "see its unit file"
            raise ResourceError(ctx.id, f"{self.unit} is {load} ({hint})")
        active = await self._property(ctx, "ActiveState")
        if p.state == "running" and active not in _RUNNING:
            todo.append(f"start (it is {active})")
            job = "StartUnit"
        elif p.state == "stopped" and active in _RUNNING:
            todo.append(f"stop (it is {active})")
            job = "StopUnit"
        if not todo:
            return None
        plan = _Plan(", ".join(todo))
        plan.startup, plan.job = startup, job
        return plan

    async def apply(self, ctx: Context, change: Change) -> str | None:
        assert isinstance(change, _Plan)
        done: list[str] = []
        if change.startup == "EnableUnitFiles":
            await self._manager(ctx, "EnableUnitFiles", "asbb", [self.unit], False, False)
            done.append("enabled")
        elif change.startup == "DisableUnitFiles":
            await self._manager(ctx, "DisableUnitFiles", "asb", [self.unit], False)
            done.append("disabled")
        if change.startup is not None:
            await self._manager(ctx, "Reload")  # as systemctl enable/disable does
        if change.job is not None:
            await self._job(ctx, change.job)
            done.append("started" if change.job == "StartUnit" else "stopped")
        return ", ".join(done)

    async def refresh(self, ctx: Context) -> str | None:
        """A changed upstream notified us: restart, reload or reload-or-restart (``refresh``)."""
        p = self.params
        if p.state != "running":
            return None
        member = {
            "restart": "RestartUnit",
            "reload": "ReloadUnit",
            "reload-or-restart": "ReloadOrRestartUnit",
        }[p.refresh]
        await self._job(ctx, member)
        return {"restart": "restarted", "reload": "reloaded"}.get(
            p.refresh, "reloaded or restarted"
        )

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: running or stopped, enabled or not, which is systemd's and no other
        kind reads: no paths, so what reads the host downstream is not made *may* by it."""
        from convergent.resources.predicted import Effects

        return Effects()

    async def predict_refresh(self, ctx: Context, view: View) -> str | None:
        """What a refresh would do: restart, reload or either, when running."""
        p = self.params
        if p.state != "running":
            return None
        verb = {"restart": "restart", "reload": "reload"}.get(p.refresh, "reload or restart")
        return f"would {verb} on refresh"

    async def _job(self, ctx: Context, member: str) -> None:
        """Queue ``member`` (mode replace) and wait for its job to end; fail unless done."""
        jobs = await self._jobs(ctx)
        (job,) = await self._manager(ctx, member, "ss", self.unit, "replace")
        job = str(job)
        result = jobs.done.pop(job, None)
        if result is None:
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            jobs.waiting[job] = future
            try:
                async with asyncio.timeout(JOB_WAIT):
                    result = await future
            except TimeoutError:
                raise ResourceError(
                    ctx.id, f"{member} {self.unit}: the job did not end within {JOB_WAIT:g} s"
                ) from None
            finally:
                jobs.waiting.pop(job, None)
        if result != "done":
            raise ResourceError(
                ctx.id,
                f"{member} {self.unit}: the job ended with '{result}' "
                f"(journalctl -u {self.unit} says why)",
            )
