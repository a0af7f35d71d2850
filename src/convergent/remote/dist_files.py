"""What goes into ``convergent.pyz``: convergent and the distributions it depends on, as
installed for the running interpreter.

- convergent: every module of the package that is imported (``convergent.__file__``'s
  directory), sources and bytecode.
- Its dependencies (``Requires-Dist`` of the installed distribution, followed to the
  end, extras left out), less :data:`SKIP_DISTS`: what a run never imports.
- Of each distribution: its modules and data files; not its tests, type stubs, C and
  Cython sources, scripts or ``RECORD``; of its ``.dist-info`` only ``METADATA`` (what
  ``importlib.metadata`` reads).
- A distribution with a shared library (msgspec, PyYAML, grpcio, protobuf,
  cryptography, cffi, dbus-fast) is *native*: it goes whole into the member that is
  extracted once per host (zipimport cannot load a shared library); so does certifi,
  whose CA bundle must be a real file. The rest is imported from the file itself.
- Bytecode: every module is compiled here, for this interpreter, as an unchecked
  hash-based ``.pyc`` (PEP 552: valid whatever the time stamps, so the file is the same
  when its sources are); zipimport reads ``name.pyc`` beside ``name.py``, an extracted
  package ``__pycache__/name.TAG.pyc``. The sources stay, for tracebacks.
- Shared libraries are stripped of their debugging sections (``strip --strip-debug``,
  when binutils is there): PyYAML's is 2.7 MB with them, 0.4 MB without.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from convergent.remote.dist_boot import DistError

__all__ = [
    "EXTRACT_ALSO",
    "SKIP_DISTS",
    "Parts",
    "Source",
    "collect",
    "compiled",
    "fingerprint",
    "glibc_needed",
    "stripped",
    "version",
]

#: Dependencies a run never imports, and why.
SKIP_DISTS = {
    "pygments": "rich's syntax highlighting; convergent colours diffs with rich.text only",
    "markdown-it-py": "rich's Markdown rendering, never used",
    "mdurl": "markdown-it-py's",
    "pycparser": "cffi's C parser, for building bindings; loading cryptography's needs none",
}
#: Pure-Python distributions extracted with the native ones: they read files by path.
EXTRACT_ALSO = frozenset({"certifi"})
_SKIP_SUFFIXES = (".pyi", ".pxd", ".pyx", ".c", ".cc", ".h", ".pyc", ".pyo", "py.typed")
_SKIP_DIRS = frozenset({"__pycache__", "tests", "test"})
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_|manylinux(2014|2010|1)_")
_LEGACY = {"2014": (2, 17), "2010": (2, 12), "1": (2, 5)}
PACKAGE = Path(__file__).resolve().parents[1]  # the convergent package this module is in
FORMAT = "convergent.pyz 1"  # changes when the layout of the file does


@dataclass(frozen=True)
class Source:
    """One file to put in: its name inside the archive and where it is on this host."""

    name: str
    path: Path


@dataclass
class Parts:
    """The files of a build: imported from the file (``pure``) or extracted (``native``),
    the native distributions' names and the glibc their wheels need."""

    pure: list[Source] = field(default_factory=list)
    native: list[Source] = field(default_factory=list)
    native_dists: list[str] = field(default_factory=list)
    glibc: tuple[int, int] | None = None


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: metadata.Distribution) -> list[tuple[str, bool]]:
    """The names ``dist`` requires outside any extra, each with whether a marker made it
    conditional (then it may well be missing)."""
    names = []
    for line in dist.requires or []:
        spec, _, marker = line.partition(";")
        if "extra" in marker:
            continue
        if marker.strip() and not _marker_holds(marker):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if match:
            names.append((match.group(1), bool(marker.strip())))
    return names


def _marker_holds(marker: str) -> bool:
    """An environment marker, for this interpreter: python_version and sys_platform are
    what the dependencies here use; an unknown marker counts as true (put it in)."""
    try:
        from packaging.markers import Marker
    except ImportError:
        return True
    return bool(Marker(marker).evaluate())


def _dependencies() -> list[metadata.Distribution]:
    try:
        top = metadata.distribution("convergent")
    except metadata.PackageNotFoundError:
        raise DistError(
            "convergent is not installed for this Python (no distribution metadata): "
            "pip install -e . (make run does), then build again"
        ) from None
    seen: dict[str, metadata.Distribution] = {}
    todo = _requirements(top)
    while todo:
        name, conditional = todo.pop()
        key = _key(name)
        if key in seen or key in SKIP_DISTS:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if conditional:
                continue
            raise DistError(
                f"{name}, which convergent requires, is not installed for {sys.executable}: "
                "pip install -e . and build again"
            ) from None
        seen[key] = dist
        todo.extend(_requirements(dist))
    return [seen[k] for k in sorted(seen)]


def _wanted(rel: str) -> bool:
    parts = rel.split("/")
    if parts[0] == ".." or not rel:
        return False
    if parts[0].endswith(".dist-info"):
        return len(parts) == 2 and parts[1] == "METADATA"
    if any(p in _SKIP_DIRS for p in parts[:-1]):
        return False
    return not rel.endswith(_SKIP_SUFFIXES)


def glibc_needed(dist: metadata.Distribution) -> tuple[int, int] | None:
    """The oldest glibc one of the wheel's tags accepts (None: not a manylinux wheel)."""
    best: tuple[int, int] | None = None
    for line in (dist.read_text("WHEEL") or "").splitlines():
        if not line.startswith("Tag:"):
            continue
        match = _MANYLINUX.search(line)
        if match is None:
            continue
        if match.group(3):
            version = _LEGACY[match.group(3)]
        else:
            version = (int(match.group(1)), int(match.group(2)))
        best = version if best is None else min(best, version)
    return best


def collect() -> Parts:
    """The files of convergent and its dependencies, sorted by name; raises
    :class:`DistError` when convergent or a dependency is not installed."""
    parts = Parts()
    package = PACKAGE
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).as_posix()
        if _wanted(rel):
            parts.pure.append(Source(rel, path))
    for dist in _dependencies():
        root = Path(str(dist.locate_file("")))
        files = [str(f) for f in dist.files or []]
        chosen = [Source(f, root / f) for f in files if _wanted(f) and (root / f).is_file()]
        native = any(f.endswith(".so") for f in files) or _key(dist.name) in EXTRACT_ALSO
        if native:
            parts.native.extend(chosen)
            parts.native_dists.append(dist.name)
            if any(f.endswith(".so") for f in files):
                need = glibc_needed(dist) or _host_glibc()
                if need is not None and (parts.glibc is None or need > parts.glibc):
                    parts.glibc = need
        else:
            parts.pure.extend(chosen)
    parts.pure.sort(key=lambda s: s.name)
    parts.native.sort(key=lambda s: s.name)
    return parts


def version() -> str:
    """convergent's version, read from its ``__init__.py`` as the build backend reads it."""
    text = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    return match.group(1) if match else "unknown"


def _host_glibc() -> tuple[int, int] | None:
    """For a shared library built here (not a manylinux wheel): this host's glibc."""
    text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    match = re.match(r"glibc (\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def compiled(source: bytes, name: str) -> bytes:
    """``source`` as an unchecked hash-based ``.pyc`` for this interpreter; ``name`` is
    the file name tracebacks show."""
    code = compile(source, name, "exec", dont_inherit=True)
    flags = (1).to_bytes(4, "little")  # hash-based, not checked against the source
    head = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source)
    return head + marshal.dumps(code)


def stripped(path: Path) -> bytes:
    """The shared library at ``path`` without its debugging sections (as it is when
    ``strip`` is not installed, or fails)."""
    strip = shutil.which("strip")
    if strip is None:
        return path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="convergent-dist-") as tmp:
        out = Path(tmp, path.name)
        done = subprocess.run(
            [strip, "--strip-debug", "-o", str(out), str(path)],
            capture_output=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0 or not out.is_file():
            return path.read_bytes()
        return out.read_bytes()


def fingerprint(parts: Parts) -> str:
    """A hash of what a build reads (names, sizes, modification times; the interpreter;
    the layout): the same fingerprint, the same file."""
    h = hashlib.sha256()
    h.update(f"{FORMAT}\0{sys.version}\0{sys.executable}\0{shutil.which('strip')}\0".encode())
    for group in (parts.pure, parts.native):
        h.update(b"\1")
        for src in group:
            st = src.path.stat()
            h.update(f"{src.name}\0{src.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()
