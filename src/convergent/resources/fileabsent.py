"""The absent form of ``file`` (and ``download``) for ``convergent destroy``.

:class:`RemovedPath` is what ``File.absent()`` returns: the vertex ``file[NAME]`` that
removes the path, with rules stricter than ``state: absent``:

- Nothing is followed, not even a symlink a parent directory leads through (``fs.locate``
  would follow a root-owned one): a path whose parents lead elsewhere is refused with an
  error naming where it leads. A symlink at the path itself is removed, never what it
  points to.
- A directory is removed when empty; one that holds something destroy does not remove
  is left, with a log line saying so (not a failure), unless the policy said
  ``destroy: remove`` on it: then it goes with everything in it (``shutil.rmtree`` on the
  directory's descriptor, which removes symlinks below and never follows them). Under
  noop the entries the run would remove first count as gone.

It is not a registered kind (like ``autogroup``): its identity is the resource's own,
``file[NAME]``, so reports and edges name what the policy wrote.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from convergent.errors import ResourceError
from convergent.host import fs
from convergent.resources.base import Change, Context, Meta, Resource
from convergent.resources.filechange import absolute
from convergent.resources.fileparams import FileParams
from convergent.resources.filetree import ManagedPaths
from convergent.resources.fswatch import FsWatcher

if TYPE_CHECKING:
    from convergent.resources.predicted import Effects, View

__all__ = ["RemovedPath", "form"]


def form(resource: Resource[Any], explicit: bool) -> RemovedPath | None:
    """The absent form of a ``file`` resource; None for ``state: absent``.

    ``explicit``: the policy said ``destroy: remove`` (a directory goes whole).
    """
    params: FileParams = resource.params
    if params.state == "absent":
        return None
    tree = explicit and params.state == "directory"
    path = params.path if params.path is not None else resource.name
    return RemovedPath(resource.name, path, tree=tree, meta=resource.meta)


class RemovedPath(Resource[FileParams]):
    """``file[NAME]`` in its absent form: see the module docstring."""

    kind: ClassVar[str] = "file"

    __slots__ = ("_path",)

    _path: str

    def __init__(self, name: str, path: str, *, tree: bool, meta: Meta | None = None) -> None:
        super().__init__(name, FileParams(path=path, state="absent", force=tree), meta=meta)

    def validate(self) -> None:
        self._path = absolute("path", self.params.path or self.name)
        if self._path == "/":
            raise ResourceError(self.id, "/ is never removed")

    @property
    def path(self) -> str:
        return self._path

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: the path would be gone (and with it what is below it)."""
        from convergent.resources.predicted import Effects, Node

        return Effects(paths={self._path: Node("absent", by=self.id)})

    async def check_predicted(self, ctx: Context, view: View) -> Change | None:
        """Its check, after resources upstream (those under it, in a teardown) would
        have gone: a path they would remove is no change of its own."""
        node = view.node(self._path)
        if node is not None and node.kind == "absent":
            return None
        return await self.check(ctx)

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch the path; register it as managed (a directory above it counts it gone)."""
        managed = ctx.shared(ManagedPaths)
        stop = ctx.shared(FsWatcher).watch(self._path, ctx.event)
        managed.add(self._path)
        ctx.ready()

        def unsubscribe() -> None:
            managed.discard(self._path)
            stop()

        return unsubscribe

    def _locate(self) -> fs.At | None:
        try:
            at = fs.locate(self._path)
        except (FileNotFoundError, NotADirectoryError):
            return None  # a parent is gone: so is the path
        except fs.PathRefused as exc:
            raise ResourceError(self.id, exc.message) from None
        if at.path != self._path:
            at.close()
            raise ResourceError(
                self.id,
                f"not removed: {self._path} leads to {at.path} through a symlink, and destroy "
                "removes only what the policy names; name the real path in the policy",
            )
        return at

    async def check(self, ctx: Context) -> Change | None:
        at = self._locate()
        if at is None:
            return None
        with at:
            st = fs.lstat(at)
            if st is None:
                return None
            if stat.S_ISDIR(st.st_mode) and not self.params.force and self._holds_more(at, ctx):
                ctx.log(
                    f"left: {self._path} is a directory holding what destroy does not "
                    "remove; `destroy: remove` on it removes it with everything in it"
                )
                return None
            return Change("removed")

    def _holds_more(self, at: fs.At, ctx: Context) -> bool:
        """Whether the directory holds an entry no resource of the run removes."""
        managed = ctx.shared(ManagedPaths)
        prefix = self._path.rstrip("/") + "/"
        fd, _ = fs.open_node(at, directory=True)
        try:
            with os.scandir(fd) as entries:
                return any(not managed.covers(prefix + entry.name) for entry in entries)
        finally:
            os.close(fd)

    async def apply(self, ctx: Context, change: Change) -> str | None:
        at = self._locate()
        if at is None:
            return "already gone"
        with at:
            try:
                fs.remove(at, tree=self.params.force)
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise
                raise ResourceError(
                    self.id,
                    f"not removed: {self._path} is no longer empty; run destroy again, or "
                    "say destroy: remove on it to remove it with everything in it",
                ) from exc
        return None
