"""What a policy collects from other hosts: the ``collect:`` entries, and their allow-list.

Pure data, no I/O. A :class:`Collect` takes the exported resources of one kind from
every host; its :class:`Where` is the allow-list an export must pass before anything is
built from it (kinds, names as shell-style patterns, path prefixes). ``pattern`` is
mgmt's meaning: a collected file is placed in that directory under its own base name
(the allow-list is then that directory).

:func:`refusal` says why an export is refused (None: accepted); the engine reports it
with the exporting host's name and never applies the export.
"""

import posixpath

import msgspec

__all__ = ["Collect", "Where", "normal_path", "refusal"]


class Where(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The allow-list of a collect entry; every list given must match (empty: no limit).

    kinds: kinds accepted (the collect's own kind is always the first filter)
    names: shell-style patterns the resource name must match (``web-*``)
    paths: directories a resource's path (its ``path``, else its name) must be in
    """

    kinds: list[str] = []
    names: list[str] = []
    paths: list[str] = []


class Collect(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``collect: [{kind: file, where: {paths: [/srv/www/]}}]`` (native) or mgmt's
    ``collect: [{kind: file, pattern: /tmp/mgmtA/}]``.

    kind: the kind of exported resources to collect
    where: the allow-list (native policies need one: what may another host write here?)
    pattern: mgmt's directory; a collected file goes there under its own base name
    """

    kind: str
    where: Where | None = None
    pattern: str | None = None

    def allowed_paths(self) -> list[str]:
        """The path prefixes an export's path must be under (none: no path limit)."""
        if self.pattern is not None:
            return [self.pattern]
        return list(self.where.paths) if self.where is not None else []

    def describe(self) -> str:
        """``collect file where paths [/srv/www/]``: the entry, for messages."""
        if self.pattern is not None:
            return f"collect {self.kind} into {self.pattern}"
        where = self.where or Where()
        lists = (("kinds", where.kinds), ("names", where.names), ("paths", where.paths))
        parts = [f"{label} [{', '.join(items)}]" for label, items in lists if items]
        return f"collect {self.kind}" + (f" where {'; '.join(parts)}" if parts else "")


def normal_path(path: str) -> str | None:
    """``path`` made absolute and normal (``..`` resolved lexically); None if relative."""
    if not path.startswith("/"):
        return None
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def _inside(path: str, directory: str) -> bool:
    base = normal_path(directory)
    if base is None:
        return False
    return base == "/" or path == base or path.startswith(base.rstrip("/") + "/")


def _fnmatch(name: str, pattern: str) -> bool:
    import fnmatch  # only a policy that collects needs it

    return fnmatch.fnmatchcase(name, pattern)


def refusal(collect: Collect, kind: str, name: str, path: str | None) -> str | None:
    """Why the export ``kind[name]`` (whose path is ``path``, None for a kind without one)
    may not be collected by ``collect``; None when it may."""
    where = collect.where or Where()
    if where.kinds and kind not in where.kinds:
        return f"kind {kind} is not in the allowed kinds [{', '.join(where.kinds)}]"
    if where.names and not any(_fnmatch(name, p) for p in where.names):
        return f"name {name!r} matches none of the allowed names [{', '.join(where.names)}]"
    prefixes = collect.allowed_paths()
    if prefixes:
        if path is None:
            return "it has no path, and this collect allows only paths under " + ", ".join(prefixes)
        normal = normal_path(path)
        if normal is None:
            return f"its path {path!r} is not absolute"
        if not any(_inside(normal, p) for p in prefixes):
            return f"{path} is outside the allowed paths [{', '.join(prefixes)}]"
    return None
