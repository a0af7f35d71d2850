"""``pkg``: a package installed, absent, at the latest version or at a pinned version.

The resource's name is the package's (``sl``, ``nginx``, ``libc6:amd64``). Two backends
behind one small interface (:class:`Backend`): ``apt`` (:mod:`.pkg_apt`: dpkg's status
database and ``apt-get``) and ``packagekit`` (:mod:`.pkg_packagekit`: PackageKit over the
system D-Bus); ``auto`` picks PackageKit when its D-Bus name answers, else apt (decided
once per run).

- **One transaction for a group.** ``pkg`` is Groupable: ``pkg`` resources with the same
  ``backend`` and ``update_cache`` that do not reach each other become one vertex, checked
  with one query (``check_group``) and changed with ONE removal call, then ONE install
  call (``apply_group``). The report names each member (``pkg[sl]: installed 5.02-1+b1``).
- **The package lists are never refreshed by themselves.** ``update_cache: auto`` refreshes
  them (at most once per run, saying so) only when a wanted package or version is not in
  them; ``never`` fails that member with "not in the package lists".
- **An unknown package fails alone.** A package (or pinned version) that is not in the
  lists, even after a refresh, is left out of the transaction and fails, naming itself;
  the rest of the group is still installed. (apt refuses a whole ``apt-get install`` for
  one unknown name; leaving it out keeps one typo from blocking every other package.)
  A transaction that fails for another reason (a conflict, a download error, a lock held
  too long) fails every member in it, with the package manager's own message.
- **Watch**: inotify on dpkg's status file (its directory: dpkg replaces the file), so a
  package removed or installed by hand is checked again at once and repaired.
- **noop** reports what would be installed or removed, at which version (from the lists).
- **Automatic edges**: an installed package provides ``pkg:NAME`` and ``file:PATH`` for the
  paths it ships (dpkg's file list, read when the graph is prepared), less directories
  shared by many packages; a managed ``file`` at or under one of them comes after it, and
  so does a ``svc`` whose unit file it ships. Before its first install a package's file
  list is unknown: on a first run write ``require: pkg[NAME]`` where order matters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, Protocol

from convergent.errors import ParamError, ResourceError
from convergent.resources.abilities import Member
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.pkg_apt import ADMINDIR, Apt, Available, PackageError, file_list

__all__ = ["Backend", "Pkg", "PkgChange", "PkgParams"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]*(:[A-Za-z0-9][A-Za-z0-9-]*)?\Z")
_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:_-]*\Z")
_STATES = ("installed", "absent", "latest")
# Directories many packages ship into: never a reason for an edge to one of them.
_SHARED_DIRS = (
    r"/[^/]*\Z|/usr/(share|lib|lib64|libexec|bin|sbin|games|include|local)\Z"
    r"|/usr/share/(doc|man|man/[^/]+|info|locale|locale/[^/]+|locale/[^/]+/LC_MESSAGES"
    r"|applications|pixmaps|icons|lintian|lintian/overrides|bug|menu|doc-base|mime|bash-completion"
    r"|bash-completion/completions|zsh|zsh/vendor-completions|fonts|perl5|java|polkit-1)\Z"
    r"|/usr/lib/[^/]*-linux-gnu[^/]*\Z|/usr/lib/(systemd|systemd/system|python3|tmpfiles.d|sysusers.d)\Z"
    r"|/lib/(systemd|systemd/system|[^/]*-linux-gnu[^/]*)\Z"
    r"|/etc/(default|init\.d|logrotate\.d|cron\.[^/]+|systemd|systemd/system|profile\.d|apt"
    r"|apt/[^/]+|ld\.so\.conf\.d|pam\.d|security|sudoers\.d|rc[0-6S]\.d|X11|xdg|sysctl\.d"
    r"|modprobe\.d|dbus-1|dbus-1/system\.d|bash_completion\.d|alternatives|ssl|ssl/certs)\Z"
    r"|/var/(lib|log|cache|spool|backups|www|lib/dpkg|lib/systemd)\Z"
)
_shared: re.Pattern[str] | None = None  # compiled on first use: most runs never need it


class PkgParams(Params, frozen=True):
    """Parameters of ``pkg``; the resource's name is the package's (``nginx``, ``libc6:amd64``).

    state: installed, absent (removed, its config files kept), latest (upgraded whenever the
      package lists offer a newer version) or a version string ("5.02-1+b1"): exactly that
      version, up or down
    backend: auto (PackageKit when its D-Bus name answers on the system bus, else apt), apt or
      packagekit; resources with the same backend and update_cache share one transaction
    update_cache: auto: refresh the package lists (once, and say so) when a wanted package or
      version is not in them; never: fail with "not in the package lists"
    """

    state: str = "installed"
    backend: Literal["auto", "apt", "packagekit"] = "auto"
    update_cache: Literal["auto", "never"] = "auto"


class Backend(Protocol):
    """What ``pkg`` needs of a package manager; one instance per run."""

    label: str  # "apt", "PackageKit"
    lists_hint: str  # how to refresh the lists by hand
    refresher: str  # what refreshes them: "apt-get update"
    refreshed: bool  # they were refreshed during this run (at most once per run)

    async def installed(self, names: Sequence[str]) -> dict[str, str | None]: ...

    async def available(self, names: Sequence[str]) -> dict[str, Available | None]: ...

    async def refresh(self, log: Callable[[str], None]) -> None: ...

    async def remove(self, names: Sequence[str], log: Callable[[str], None]) -> None: ...

    async def install(self, specs: Sequence[str], log: Callable[[str], None]) -> None: ...


class PkgChange(Change):
    """What a ``pkg`` resource must do: ``action`` (install or remove), the ``version`` it
    will have (None: not known, because the package is not in the lists: ``missing`` says
    why), and the version installed now (``current``)."""

    def __init__(
        self,
        summary: str,
        action: Literal["install", "remove"],
        version: str | None,
        current: str | None,
        missing: str | None = None,
    ) -> None:
        super().__init__(summary)
        self.action = action
        self.version = version
        self.current = current
        self.missing = missing


class Pkg(Resource[PkgParams], kind="pkg"):
    """A package, through apt or PackageKit; see the module docstring."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = (
        "removed (its config files kept), only when the entry says `destroy: remove`"
    )
    destroy_default: ClassVar[str] = "keep"

    def absent(self, explicit: bool) -> Pkg | None:
        """Removed; None for ``state: absent``."""
        if self.params.state == "absent":
            return None
        p = self.params
        form = PkgParams(state="absent", backend=p.backend, update_cache=p.update_cache)
        return Pkg(self.name, form, meta=self.meta)

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ParamError(
                None,
                f"pkg: {self.name!r} is not a package name (letters, digits and + . _ -, "
                "starting with a letter or digit; an architecture may follow a colon)",
            )
        state = self.params.state
        if state not in _STATES and not _VERSION.match(state):
            raise ParamError(
                "state",
                f"{state!r}: give installed, absent, latest or a version (e.g. '5.02-1+b1', "
                "starting with a digit)",
            )

    @property
    def pinned(self) -> str | None:
        """The version ``state`` pins, or None."""
        state = self.params.state
        return None if state in _STATES else state

    def can_group(self, other: Resource[Any]) -> bool:
        """Packages share a transaction when they use the same backend and lists policy."""
        return (
            isinstance(other, Pkg)
            and other.params.backend == self.params.backend
            and other.params.update_cache == self.params.update_cache
        )

    # -- watch ----------------------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """An event whenever dpkg's status file is replaced or written."""
        from convergent.resources.fswatch import FsWatcher

        unsubscribe = ctx.shared(FsWatcher).watch(_watched(), ctx.event)
        ctx.ready()
        return unsubscribe

    # -- check and apply ------------------------------------------------------------------

    async def check(self, ctx: Context) -> Change | None:
        (found,) = await type(self).check_group([(self, ctx)])
        return found

    async def apply(self, ctx: Context, change: Change) -> str | None:
        (done,) = await type(self).apply_group([Member(self, ctx, change)])
        if isinstance(done, Exception):
            raise done
        return done

    @classmethod
    async def check_group(
        cls, members: Sequence[tuple[Resource[Any], Context]]
    ) -> Sequence[Change | None]:
        """One query of the installed versions for all members; one query of the package
        lists for those that may have to change."""
        pkgs = [_pkg(m) for m, _ in members]
        ctx = members[0][1]
        backend = await _backend(ctx, pkgs[0].params.backend)
        try:
            installed = await backend.installed([p.name for p in pkgs])
            asking = [p.name for p in pkgs if _needs_lists(p, installed[p.name])]
            offered = await backend.available(asking) if asking else {}
        except PackageError as exc:
            raise ResourceError(ctx.id, str(exc)) from exc
        return [_plan(p, installed[p.name], offered.get(p.name)) for p in pkgs]

    @classmethod
    async def apply_group(cls, members: Sequence[Member]) -> Sequence[str | Exception | None]:
        """Removals in one call, then installs in one call; each member's own result."""
        pkgs = [_pkg(m.resource) for m in members]
        ctx = members[0].ctx
        backend = await _backend(ctx, pkgs[0].params.backend)
        results: list[str | Exception | None] = [None] * len(members)
        changes: list[PkgChange | None] = []
        for m in members:
            changes.append(m.change if isinstance(m.change, PkgChange) else None)
        if any(c is None for c in changes):  # not planned by check_group here: plan again
            planned = await cls.check_group([(m.resource, m.ctx) for m in members])
            changes = [c if isinstance(c, PkgChange) else None for c in planned]
        await _find_missing(pkgs, changes, results, backend, ctx)
        removals = [i for i, c in enumerate(changes) if _todo(c, results[i], "remove")]
        installs = [i for i, c in enumerate(changes) if _todo(c, results[i], "install")]
        for indexes, action in ((removals, "remove"), (installs, "install")):
            if not indexes:
                continue
            try:
                if action == "remove":
                    await backend.remove([pkgs[i].name for i in indexes], ctx.log)
                else:
                    await backend.install([_spec(pkgs[i], changes[i]) for i in indexes], ctx.log)
            except PackageError as exc:
                for i in indexes:
                    results[i] = ResourceError(pkgs[i].id, str(exc))
        done = [i for i in (*removals, *installs) if results[i] is None]
        if done:
            after = await backend.installed([pkgs[i].name for i in done])
            for i in done:
                results[i] = _result(pkgs[i], changes[i], after[pkgs[i].name], backend)
        return results

    # -- automatic edges ------------------------------------------------------------------

    def provides(self) -> list[str]:
        """``pkg:NAME`` and, when installed and not meant absent, ``file:PATH`` for each
        path it ships but shared directories."""
        uids = [f"pkg:{self.name}"]
        if self.params.state == "absent":
            return uids
        global _shared
        if _shared is None:
            _shared = re.compile(_SHARED_DIRS)
        for path in file_list(self.name):
            if not _shared.match(path):
                uids.append(f"file:{path}")
        return uids

    def needs(self) -> tuple[()]:
        return ()


# -- planning -----------------------------------------------------------------------------


def _pkg(resource: Resource[Any]) -> Pkg:
    assert isinstance(resource, Pkg)
    return resource


def _watched() -> str:
    """The package database's file to watch: dpkg's status, else rpm's database."""
    status = os.path.join(ADMINDIR, "status")
    for path in (status, "/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages"):
        if os.path.exists(path):
            return path
    return status


def _needs_lists(p: Pkg, installed: str | None) -> bool:
    state = p.params.state
    if state == "absent":
        return False
    if state == "installed":
        return installed is None
    if state == "latest":
        return True
    return installed != state


def _plan(p: Pkg, installed: str | None, offer: Available | None) -> Change | None:
    state = p.params.state
    if state == "absent":
        if installed is None:
            return None
        return PkgChange(f"remove {installed}", "remove", None, installed)
    if state == "installed" and installed is not None:
        return None
    pinned = p.pinned
    if pinned is not None and installed == pinned:
        return None
    missing = _missing(p, offer)
    if missing is not None:
        if state == "latest" and installed is not None:
            return None  # installed, and the lists know nothing newer
        return PkgChange(f"install {p.name}: {missing}", "install", None, installed, missing)
    assert offer is not None
    target = pinned or offer.candidate
    if installed == target:
        return None
    return PkgChange(_verb(installed, target, pinned), "install", target, installed)


def _missing(p: Pkg, offer: Available | None) -> str | None:
    """Why the lists cannot give ``p`` what it wants, or None when they can."""
    pinned = p.pinned
    if offer is None:
        return "not in the package lists"
    if pinned is None and offer.candidate is None:
        return "in the package lists, but with no installable version (a virtual package?)"
    if pinned is not None and pinned not in offer.versions:
        known = ", ".join(offer.versions) or "none"
        return f"version {pinned} is not in the package lists (they have: {known})"
    return None


def _verb(installed: str | None, target: str | None, pinned: str | None) -> str:
    if installed is None:
        return f"install {target}"
    if pinned is not None:
        return f"change {installed} -> {target}"
    return f"upgrade {installed} -> {target}"


async def _find_missing(
    pkgs: list[Pkg],
    changes: list[PkgChange | None],
    results: list[str | Exception | None],
    backend: Backend,
    ctx: Context,
) -> None:
    """Refresh the lists once for the members whose package is not in them (when their
    ``update_cache`` allows), look again, and fail those still missing."""
    missing = [i for i, c in enumerate(changes) if c is not None and c.missing is not None]
    if not missing:
        return
    refreshing = [i for i in missing if pkgs[i].params.update_cache == "auto"]
    for i in missing:
        if pkgs[i].params.update_cache == "never":
            results[i] = ResourceError(
                pkgs[i].id,
                f"{pkgs[i].name}: {changes[i].missing}; {backend.lists_hint}",  # type: ignore[union-attr]
            )
    if not refreshing:
        return
    try:
        if not backend.refreshed:  # once per run: a package still missing stays missing
            names = ", ".join(pkgs[i].name for i in refreshing)
            ctx.log(f"{names}: not in the package lists; refreshing them ({backend.refresher})")
            await backend.refresh(ctx.log)
            backend.refreshed = True
        offered = await backend.available([pkgs[i].name for i in refreshing])
    except PackageError as exc:
        for i in refreshing:
            results[i] = ResourceError(pkgs[i].id, str(exc))
        return
    for i in refreshing:
        p = pkgs[i]
        offer = offered.get(p.name)
        why = _missing(p, offer)
        if why is not None:
            unknown = "unknown package: " if offer is None else ""
            results[i] = ResourceError(
                p.id, f"{unknown}{p.name}: {why}, even after {backend.refresher}"
            )
            continue
        assert offer is not None
        current = changes[i].current  # type: ignore[union-attr]
        target = p.pinned or offer.candidate
        if current == target:
            results[i] = f"already {target}"
            changes[i] = None
            continue
        changes[i] = PkgChange(_verb(current, target, p.pinned), "install", target, current)


def _todo(change: PkgChange | None, result: str | Exception | None, action: str) -> bool:
    return change is not None and result is None and change.action == action


def _spec(p: Pkg, change: PkgChange | None) -> str:
    """``name`` or ``name=version`` (a pinned version)."""
    if p.pinned is not None:
        return f"{p.name}={p.pinned}"
    if change is not None and p.params.state == "latest" and change.version is not None:
        return f"{p.name}={change.version}"
    return p.name


def _result(p: Pkg, change: PkgChange | None, now: str | None, backend: Backend) -> str | Exception:
    """What the member did, checked against the database after the transaction."""
    assert change is not None
    if change.action == "remove":
        if now is not None:
            return ResourceError(
                p.id, f"{backend.label} reported success, but {p.name} {now} is still installed"
            )
        return f"removed {change.current}"
    if now is None or (p.pinned is not None and now != p.pinned):
        return ResourceError(
            p.id,
            f"{backend.label} reported success, but {p.name} is "
            f"{now or 'not installed'} (wanted {change.version or p.params.state})",
        )
    if change.current is None:
        return f"installed {now}"
    return f"{'upgraded' if p.pinned is None else 'changed'} {change.current} -> {now}"


# -- backends -----------------------------------------------------------------------------


class _Choice:
    """The backend ``auto`` picked for this run (asked once)."""

    def __init__(self) -> None:
        self.backend: Backend | None = None


async def _backend(ctx: Context, choice: str) -> Backend:
    if choice == "apt":
        return ctx.shared(Apt)
    if choice == "packagekit":
        return _packagekit(ctx)
    picked = ctx.shared(_Choice)
    if picked.backend is None:
        from convergent.host.dbus import BusError, SystemBus
        from convergent.resources.pkg_packagekit import ANSWER_WAIT, NAME

        try:
            answers = await ctx.shared(SystemBus).answers(NAME, time_limit=ANSWER_WAIT)
        except BusError:
            answers = False
        picked.backend = _packagekit(ctx) if answers else ctx.shared(Apt)
    return picked.backend


def _packagekit(ctx: Context) -> Backend:
    from convergent.host.dbus import SystemBus
    from convergent.resources.pkg_packagekit import PackageKit

    backend = ctx.shared(PackageKit)
    backend.bus = ctx.shared(SystemBus)  # the run's one connection, closed by the engine
    return backend
