"""The predicted state a noop run reads through: what each resource would leave behind.

Under ``--noop`` nothing is applied, so a resource downstream of one that would change
would read the world as it is, not as the real run will leave it. The engine
(``engine/predict.py``) keeps, for that one run, what every resource that would (or may)
change would leave behind, and the kinds that read what others manage read through it
(the ``Predicts`` ability in :mod:`convergent.resources.abilities`):

- :class:`Node`: what a path would be (exists or not, content, mode, owner, link target,
  modification order); ``None`` in a field: not known (a command made it).
- :class:`Effects`: what one resource would leave behind: paths, accounts, outputs, and
  whether it runs a command whose effect no kind describes.
- :class:`Account`: what a user or group account would be (exists with an id, or not).
- :class:`View`: what a kind reads through under noop.
- :class:`Uncertain`: raised by a predicted check when exactness is impossible (a guard
  command, content a command writes): the resource *may* change, for that reason.

Nothing here is written anywhere: it is data held in memory for one noop run.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "NO_PREDICTION",
    "PREDICTS",
    "UNKNOWN",
    "Account",
    "Effects",
    "Node",
    "NodeKind",
    "Uncertain",
    "View",
    "predicts",
]

NodeKind = Literal["file", "directory", "link", "absent", "exists", "unknown"]


class _Unknown:
    """An output whose value is known only once the resource ran (a command's stdout)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


class Node(msgspec.Struct, frozen=True):
    """What a path would be once the resources upstream applied.

    ``kind``: a regular ``file``, a ``directory``, a symlink (``link``), ``absent``,
    ``exists`` (something, made by a command: its kind is not known) or ``unknown``
    (a resource may change it). ``content``: the bytes of a file (None: not known, or
    ``keeps``). ``keeps``: content and modification time are as they are on disk now
    (only mode or owner change). ``mode``, ``uid``, ``gid``: None when not known.
    ``target``: a link's. ``order``: the modification order of a write in this run (later
    writes are higher; every one is newer than anything on disk); None: as on disk.
    ``secret``: the content holds a new secret. ``by``: the resource that predicts it.
    """

    kind: NodeKind
    by: str
    content: bytes | None = None
    keeps: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    target: str | None = None
    order: int | None = None
    secret: bool = False


class Account(msgspec.Struct, frozen=True):
    """What a user or group account would be once the resources upstream applied:
    ``exists`` or not, with ``id`` (its uid or gid; None: not known, the tools pick it).
    ``by``: the resource that predicts it (filled in by the engine)."""

    exists: bool
    id: int | None = None
    by: str = ""


class Effects(msgspec.Struct):
    """What one resource would leave behind: ``paths`` (path -> :class:`Node`; the
    ``order`` of a write is filled in by the engine), ``accounts`` (``user:NAME`` or
    ``group:NAME`` -> :class:`Account`), ``outputs`` (None: the kind's current outputs;
    values may be :data:`UNKNOWN`) and ``command``: it runs a command whose effect on
    other resources no parameter describes."""

    paths: dict[str, Node] = msgspec.field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    command: bool = False
    accounts: dict[str, Account] = msgspec.field(default_factory=dict)


class Uncertain(Exception):
    """Exactness is impossible here: the resource *may* change. ``reason`` says why
    (``its guard runs a command; upstream file[/etc/y] would change``); ``summary`` is
    what it may do (``may run``, ``may change``)."""

    def __init__(self, reason: str, summary: str = "may change") -> None:
        super().__init__(reason)
        self.reason = reason
        self.summary = summary


class View(Protocol):
    """The predicted state as one resource reads it under noop (only what resources
    upstream of it would leave behind; the rest is read from the host as it is).

    ``changed_above``: the resources upstream that would or may change; ``describe()``
    says so for a reason (``upstream file[/etc/y] would change``). ``node(path)``:
    the predicted node at ``path`` (an ancestor predicted absent or not a directory makes
    it ``absent``), None when nothing upstream changes it. ``exists``, ``mtime`` and
    ``content`` read a path through the prediction, from the host when nothing is
    predicted (``mtime``: None when it does not exist; a predicted write is newer than
    anything on disk); they raise :class:`Uncertain` where the prediction does not know.
    ``new_secret(resource)``: the stand-in for the new secret ``resource`` would make (a
    random text, hidden from every report like a secret). ``account(key)``: the predicted
    account ``user:NAME`` or ``group:NAME``, None when nothing upstream changes it (it
    raises :class:`Uncertain` when a resource upstream may change it).
    """

    changed_above: tuple[str, ...]

    def describe(self) -> str: ...
    def node(self, path: str) -> Node | None: ...
    def exists(self, path: str) -> bool: ...
    def mtime(self, path: str) -> int | None: ...
    def content(self, path: str) -> bytes | None: ...
    def new_secret(self, resource: str) -> str: ...
    def is_new_secret(self, value: object) -> bool: ...
    def account(self, key: str) -> Account | None: ...


# What each built-in kind predicts under --noop (the policy reference shows it).
PREDICTS: dict[str, str] = {
    "file": "predicts its path as it would leave it: exists or not, content, mode, owner, link "
    "target, written when; it reads a predicted `source` and parent directory. A tree "
    "(`recurse`, a directory `source`, `purge`), a hard link or `follow` reading "
    "something predicted: may",
    "exec": "predicts what its guards declare: `creates` exists, `removes` is gone, `ifnewer`'s "
    "target is newer than its sources (its guards read those predicted); its outputs are "
    "known once it ran (receivers: may). Without such a guard, what reads the host "
    "downstream may change; a guard command (`onlyif`, `unless`) after a predicted "
    "change: may run",
    "kv": "predicts its value, sent to its receivers",
    "value": "predicts its content, sent to its receivers",
    "password": "predicts a new secret: its receivers would change (secret); a refresh would "
    "regenerate it",
    "line": "predicts the file's content after its edit; it edits a predicted file's content",
    "noop": "nothing changes (a refresh only logs)",
    "timer": "predicts nothing other resources read",
    "pkg": "predicts its own change exactly: the version it would install, upgrade or change "
    "to (from the package lists), or remove. The files a package ships are not known before "
    "it is installed: what reads the host downstream of a change may change",
    "process": "predicts running or stopped, which no other kind reads (what reads the host "
    "downstream stays exact); a refresh would restart it when running and "
    "`restart_on_refresh`",
    "svc": "predicts running or stopped, enabled or not, which no other kind reads (what "
    "reads the host downstream stays exact); a refresh would restart, reload or either "
    "(`refresh`) when running",
    "download": "predicts its path: a file whose content is known only once fetched (a copy "
    "of it downstream may change; what reads other paths stays exact), or the same content "
    "with a new mode or owner",
    "cron": "predicts its file in `cron_dir`: the entry it writes (0644, root:root), or gone; "
    "a `file` copying it downstream is exact",
    "user": "predicts its account: present with the uid it gives or keeps, or absent; a `file` "
    "owned by it downstream is exact, and may change when a new account's uid is left to "
    "useradd; a new `home` it gives is a directory",
    "group": "predicts its account: present with the gid it gives or keeps, or absent; a `file` "
    "of that group downstream is exact, and may change when a new group's gid is left to "
    "groupadd",
}
NO_PREDICTION = "no prediction: downstream readers get may"


def predicts(kind: str, cls: type) -> str:
    """What ``kind`` predicts under noop, for the reference."""
    text = PREDICTS.get(kind)
    if text is not None:
        return text
    if callable(getattr(cls, "predict", None)):
        return "predicts what its own `predict` describes"
    return NO_PREDICTION
