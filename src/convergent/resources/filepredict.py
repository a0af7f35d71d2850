"""The ``file`` kind under noop: its check through the predicted state, and what it would
leave behind (the ``Predicts`` ability; :mod:`convergent.resources.predicted`).

A file reads its own path, its parent directories and its ``source``. When none of them
would be changed by a resource upstream, its predicted check is its check. Otherwise:

- a ``source`` that would change: the file compares itself with the predicted content
  (content a command writes is not known: the file *may* change);
- a parent directory that would be created: the file is planned as if it existed (empty);
  one that would be removed: as if the file were gone;
- its own path predicted (a command's ``creates``): compared with the predicted node.
- an ``owner``/``group`` naming an account a ``user``/``group`` upstream would create or
  change: its predicted uid/gid (not known: the file *may* change).

Trees (``recurse``, ``purge``, a directory ``source``), hard links and ``follow`` reading
something predicted *may* change: their predicted check is not exact.
"""

from __future__ import annotations

import copy
import os
import stat
from typing import Any

from convergent.errors import ResourceError
from convergent.host import fs
from convergent.resources.base import Change, Context
from convergent.resources.filechange import FileChange
from convergent.resources.predicted import Effects, Node, NodeKind, Uncertain, View

# ``File`` (convergent.resources.file) is its base's subclass: typed Any here, because
# file.py imports this module.
File = Any

__all__ = ["check_predicted", "predict"]


def check_predicted(file: File, ctx: Context, view: View) -> FileChange | Change | None:
    """``file``'s check with what resources upstream would leave behind (read only)."""
    file = _accounts(file, view)
    p = file.params
    path = file.path
    own = view.node(path)
    source = view.node(file._source) if file._source is not None else None
    parent = _parent(view, path)
    if own is None and source is None and parent is None:
        return _change(file.plan(ctx))
    if p.recurse or p.purge or p.follow or p.state == "hard" or (p.state == "directory" and source):
        raise Uncertain(f"it reads what upstream would change ({_by(own, source, parent)})")
    clone = copy.copy(file)
    clone._trees = None
    if source is not None:
        assert file._source is not None
        data = view.content(file._source)
        if data is None:
            raise ResourceError(
                file.id, f"source {file._source} would not exist (removed by {source.by})"
            )
        clone._data, clone._source = data, None
    if own is None and parent is None:
        return _change(clone.plan(ctx))
    if own is None:
        assert parent is not None
        return _missing(clone, parent)
    return _against(clone, own)


def _accounts(file: File, view: View) -> File:
    """``file`` with the uid and gid of an ``owner``/``group`` that a ``user``/``group``
    upstream would create or change (a copy; ``file`` itself when none would)."""
    p = file.params
    ids: dict[str, int] = {}
    for attr, key, value in (("_uid", "user", p.owner), ("_gid", "group", p.group)):
        if value is None or (value.isascii() and value.isdigit()):
            continue
        account = view.account(f"{key}:{value}")
        if account is None:
            continue
        if not account.exists:
            raise Uncertain(f"upstream {account.by} would remove the {key} {value}")
        if account.id is None:
            what = "uid" if key == "user" else "gid"
            raise Uncertain(f"the {what} upstream {account.by} would give {value} is not known")
        ids[attr] = account.id
    if not ids:
        return file
    clone = copy.copy(file)
    for attr, number in ids.items():
        setattr(clone, attr, number)
    return clone


def _change(change: Any) -> FileChange | None:
    """A change ``File`` planned (typed: ``File`` is Any here)."""
    assert change is None or isinstance(change, FileChange)
    return change


def _parent(view: View, path: str) -> Node | None:
    """The nearest predicted ancestor of ``path`` that decides whether it can exist."""
    parent = os.path.dirname(path)
    if parent == path:
        return None
    node = view.node(parent)
    if node is None or node.kind == "unknown":
        return node
    if node.kind in ("directory", "exists"):
        return node if _missing_dir(parent) else None
    return node


def _missing_dir(path: str) -> bool:
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return True


def _by(*nodes: Node | None) -> str:
    return ", ".join(sorted({n.by for n in nodes if n is not None}))


def _missing(file: File, parent: Node) -> FileChange | None:
    """The plan of ``file`` when its parent would be created (or removed) upstream."""
    if parent.kind == "unknown":
        raise Uncertain(f"upstream {parent.by} may change the directory of {file.path}")
    if file.params.state == "absent":
        return None
    if parent.kind in ("directory", "exists"):
        if parent.kind == "exists":
            raise Uncertain(f"upstream {parent.by} makes the directory of {file.path} by a command")
        return _change(file._plan_missing(None))
    return _change(file._plan_missing(os.path.dirname(file.path)))


def _against(file: File, node: Node) -> FileChange | Change | None:
    """``file`` compared with the predicted ``node`` at its path."""
    state = file.params.state
    if node.kind == "unknown":
        raise Uncertain(f"upstream {node.by} may change {file.path}")
    if node.kind == "absent":
        return None if state == "absent" else file._plan_missing(None)
    if state == "absent":
        return FileChange("removed", None, "remove", clear=True)
    if node.kind == "exists" or state not in ("exists", "directory", "link"):
        raise Uncertain(
            f"{file.path} would be made by {node.by}'s command: what it holds is not known"
        )
    want = {"exists": "file", "directory": "directory", "link": "link"}[state]
    if node.kind != want:
        raise Uncertain(f"{file.path} would be a {node.kind} made by {node.by}")
    parts: list[str] = []
    if state == "link" and node.target != file._target:
        return _change(
            file._link_change(f"link target {node.target} -> {file._target}", clear=True)
        )
    if state == "exists" and (file._data is not None or file._source is not None):
        wanted = file._wanted()
        if node.content is None:
            raise Uncertain(f"{file.path} would be written by {node.by}, content not known")
        if node.content != wanted:
            parts.append("content changed")
    _meta(file, node, parts)
    if not parts:
        return None
    return Change(", ".join(parts))


def _meta(file: File, node: Node, parts: list[str]) -> None:
    if file._mode is not None:
        if node.mode is None:
            raise Uncertain(f"the mode {node.by} leaves on {file.path} is not known")
        mode = file._mode.apply(node.mode, directory=node.kind == "directory")
        if mode != node.mode:
            parts.append(f"mode {node.mode:04o} -> {mode:04o}")
    uid, gid = file.owner_ids()
    for field, want, have in (("owner", uid, node.uid), ("group", gid, node.gid)):
        if want == -1:
            continue
        if have is None:
            raise Uncertain(f"the {field} {node.by} leaves on {file.path} is not known")
        if want != have:
            parts.append(f"{field} {have} -> {want}")


def predict(file: File, change: Change | None, view: View) -> Effects:
    """What ``file`` leaves at its path once ``change`` is applied (None: it may change)."""
    path = file.path
    if change is None or not isinstance(change, FileChange) or file.params.recurse:
        gone = change is not None and file.params.state == "absent"
        return Effects({path: Node("absent" if gone else "unknown", file.id)})
    action = change.action
    if action == "refuse":
        return Effects()
    if action == "remove":
        return Effects({path: Node("absent", file.id)})
    now = _now(path, view)
    uid = change.uid if change.uid != -1 else (now.st_uid if now else os.geteuid())
    gid = change.gid if change.gid != -1 else (now.st_gid if now else None)
    if action == "write":
        mode = change.mode if change.mode is not None else fs.default_mode()
        secret = view.is_new_secret(change.data.decode(errors="replace"))
        node = Node("file", file.id, change.data, False, mode, uid, gid, secret=secret)
        return Effects({path: node})
    if action in ("mkdir", "tree"):
        mode = change.mode if change.mode is not None else fs.default_mode(True)
        if action == "tree":
            return Effects({path: Node("unknown", file.id)})
        return Effects({path: Node("directory", file.id, None, False, mode, uid, gid)})
    if action in ("link", "hard"):
        if action == "hard":
            return Effects({path: Node("unknown", file.id)})
        return Effects({path: Node("link", file.id, target=file._target, uid=uid, gid=gid)})
    # meta: mode and owner change, content and time stay
    kind: NodeKind = "directory" if file.params.state == "directory" else "file"
    old_mode = stat.S_IMODE(now.st_mode) if now else None
    kept = change.mode if change.mode is not None else old_mode
    return Effects({path: Node(kind, file.id, None, True, kept, uid, gid)})


def _now(path: str, view: View) -> os.stat_result | None:
    if view.node(path) is not None:
        return None
    try:
        return os.lstat(path)
    except OSError:
        return None
