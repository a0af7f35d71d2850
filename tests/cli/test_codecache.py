"""The ``convergent`` command takes the modules it imports from its start-up cache file
(``__pycache__/startup.*.bin``, cli/codecache.py): the same modules a plain import makes,
never the code of a module whose source changed, nor any module when something could
now come first on ``sys.path``, never from a file it cannot trust, and the last good
file is kept when a writer is killed.

Each test runs a copy of the convergent package (its own ``__pycache__``, so its own
cache file) by a script that says, at the command's exit, which modules came from the
cache. Where a test needs to see that the file was used, it plants code in it that the
source does not have (``_forge``): only a run that took the module from the file prints
its mark.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import convergent
from convergent.cli.codefile import Entry, parse, write

PACKAGE = Path(convergent.__file__).resolve().parent
FORGED = "module made from the forged cache entry"

# The command as its entry point runs it, saying at exit which modules came from the
# cache (atexit handlers run after the cache is saved). KILL_AT_RENAME: SIGKILL itself
# when the cache's temp file is about to be renamed into place.
SCRIPT = """\
import atexit, os, sys

def _served():
    names = sorted(
        name for name, module in list(sys.modules.items())
        if type(getattr(getattr(module, "__spec__", None), "loader", None)).__module__
        == "convergent.cli.codecache"
    )
    sys.stderr.write("SERVED " + " ".join(names) + "\\n")

atexit.register(_served)
if os.environ.get("KILL_AT_RENAME"):
    _rename = os.rename
    def _killing_rename(src, dst, **kwargs):
        if str(src).startswith("startup."):
            os.kill(os.getpid(), 9)
        return _rename(src, dst, **kwargs)
    os.rename = _killing_rename
sys.argv = ["convergent", *sys.argv[1:]]
import convergent
sys.stderr.write("PACKAGE " + os.path.dirname(convergent.__file__) + "\\n")
from convergent.cli.main import entry
entry()
"""


def read(path: str) -> tuple[tuple[object, ...], dict[str, tuple[Entry, bytes]]] | None:
    """A cache file's head and entries (what ``write`` takes), whatever it was written
    for; None when it is not one."""
    data = Path(path).read_bytes()
    found = parse(data)
    if found is None:
        return None
    head, base, index = found
    return head, {name: (e, data[base + e[5] : base + e[5] + e[6]]) for name, e in index.items()}


@dataclass
class Site:
    """A copy of the package, the script that runs it, and a small policy."""

    root: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def package(self) -> Path:
        return self.src / "convergent"

    @property
    def script(self) -> Path:
        return self.root / "bin" / "convergent"

    def cache_files(self) -> list[Path]:
        return sorted((self.package / "__pycache__").glob("startup.*.bin"))

    def cache_file(self) -> Path:
        files = self.cache_files()
        assert len(files) == 1, files
        return files[0]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    served: list[str]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    here = Site(tmp_path)
    shutil.copytree(PACKAGE, here.package, ignore=shutil.ignore_patterns("__pycache__"))
    here.script.parent.mkdir()
    here.script.write_text(SCRIPT)
    target = tmp_path / "target"
    target.mkdir()
    lines = ["resources:"]
    for i in range(3):
        lines += [f'  - file: "{target}/f{i}"', f'    content: "i am f{i}"', '    mode: "0644"']
    (tmp_path / "site.yaml").write_text("\n".join(lines) + "\n")
    return here


def _run(site: Site, script: str | None = None, *, under: tuple[str, ...] = (), **env: str) -> Ran:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ.update(PYTHONPATH=str(site.src), **env)
    argv = [*under, sys.executable, script or str(site.script), "run"]
    argv.append(str(site.root / "site.yaml"))
    argv += ["--state-dir", str(site.root / "state"), "--converged-timeout", "0"]
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=120)
    served: list[str] = []
    for line in done.stderr.splitlines():
        if line.startswith("PACKAGE "):
            assert line == f"PACKAGE {site.package}"  # the copy runs, not the checkout
        if line.startswith("SERVED"):
            served = line.split()[1:]
    return Ran(done.returncode, done.stdout, done.stderr, served)


def _ok(site: Site, script: str | None = None, *, under: tuple[str, ...] = (), **env: str) -> Ran:
    ran = _run(site, script, under=under, **env)
    assert ran.returncode == 0, ran.stderr
    assert "failed: 0" in ran.stdout
    return ran


def _forge(site: Site, module: str = "convergent.render") -> None:
    """Make the cache file's code for ``module`` print :data:`FORGED` (its stamps kept)."""
    path = site.cache_file()
    found = read(str(path))
    assert found is not None
    head, entries = found
    entry, _ = entries[module]
    source = Path(entry[0]).read_text()
    planted = source + f"\nimport sys as _sys\n_sys.stderr.write({FORGED!r} + '\\n')\n"
    entries[module] = entry, marshal.dumps(compile(planted, entry[0], "exec"))
    write(str(path), head, entries)


def test_the_second_run_takes_its_modules_from_the_cache_file(site: Site) -> None:
    first = _ok(site)
    assert first.served == [] and "repaired: 3" in first.stdout
    path = site.cache_file()
    info = path.stat()
    assert info.st_mode & 0o777 == 0o600 and info.st_uid == os.geteuid()  # code: not for all
    second = _ok(site)
    # asyncio's, msgspec's and convergent's own modules of the run path
    assert {"asyncio.base_events", "msgspec._utils", "convergent.engine.runner"} <= set(
        second.served
    )
    assert len(second.served) > 100
    assert "repaired: 0" in second.stdout
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (info.st_ino, info.st_mtime_ns)  # not rewritten


def test_a_forged_entry_runs_only_when_the_file_is_used(site: Site) -> None:
    _ok(site)
    _forge(site)
    ran = _ok(site)
    assert FORGED in ran.stderr and "convergent.render" in ran.served


def test_a_package_made_later_in_the_script_directory_is_imported(site: Site) -> None:
    """A directory named as a kept module, made in the script's directory after the
    module was kept; then a save for another reason; then an ``__init__.py`` put in it
    (which leaves the script directory's time as the save saw it): a plain import takes
    that package."""
    import graphlib

    _ok(site)
    assert "graphlib" in _ok(site).served
    folder = site.script.parent / "graphlib"
    folder.mkdir()
    assert "graphlib" in _ok(site).served  # a directory alone is no package
    render = site.package / "render.py"
    render.write_text(render.read_text() + "#\n")  # the next run writes the file
    _ok(site)
    (folder / "__init__.py").write_text(
        Path(graphlib.__file__).read_text() + "\nimport sys\nsys.stderr.write('SHADOW\\n')\n"
    )
    ran = _ok(site)
    assert "SHADOW" in ran.stderr and "graphlib" not in ran.served


def _probe(site: Site, body: str, *flags: str) -> str:
    """Run ``body`` after the cache's finder is installed, by a script in the command's
    directory (the command's sys.path: its cache file), and give its output."""
    probe = site.script.parent / "probe.py"
    probe.write_text(
        "import sys\n"
        "from convergent.cli.codecache import install\n"
        f"cache = install({str(site.package)!r})\n" + body
    )
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPATH"] = str(site.src)
    done = subprocess.run(
        [sys.executable, *flags, str(probe)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_a_module_from_the_cache_is_the_one_a_plain_import_makes(site: Site) -> None:
    _ok(site)
    said = _probe(
        site,
        "import importlib.machinery, inspect\n"
        "import asyncio, msgspec, convergent.engine.runner, convergent.render\n"
        "bad = []\n"
        "for name, module in sorted(sys.modules.items()):\n"
        "    spec = getattr(module, '__spec__', None)\n"
        "    if type(getattr(spec, 'loader', None)).__module__ != 'convergent.cli.codecache':\n"
        "        continue\n"
        "    parent = sys.modules[name.rpartition('.')[0]].__path__ if '.' in name else None\n"
        "    plain = importlib.machinery.PathFinder.find_spec(name, parent)\n"
        "    mine = (spec.origin, spec.cached, spec.submodule_search_locations, spec.parent,\n"
        "            spec.has_location, module.__file__, module.__cached__,\n"
        "            getattr(module, '__path__', None), module.__package__)\n"
        "    theirs = (plain.origin, plain.cached, plain.submodule_search_locations,\n"
        "              plain.parent, plain.has_location, plain.origin, plain.cached,\n"
        "              plain.submodule_search_locations, plain.parent)\n"
        "    if mine != theirs or not isinstance(spec.loader, type(plain.loader)):\n"
        "        bad.append((name, mine, theirs))\n"
        "    if inspect.getsource(module) != open(spec.origin).read():\n"
        "        bad.append((name, 'source'))\n"
        "    M = importlib.machinery\n"
        "    if M.FrozenImporter.find_spec(name) or M.BuiltinImporter.find_spec(name):\n"
        "        bad.append((name, 'frozen or built in'))\n"
        "print('checked', cache.served, bad)\n",
    )
    _, served, bad = said.strip().split(" ", 2)
    assert int(served) > 80  # most of what a run imports
    assert bad == "[]"


def test_a_frozen_module_stays_frozen(site: Site) -> None:
    """A module the interpreter has frozen comes from there, even after a command under
    ``-X frozen_modules=off`` kept it from its source."""
    body = (
        "import importlib.util\n"
        "loader = importlib.util.__spec__.loader\n"
        "print(loader.__name__ if isinstance(loader, type) else type(loader).__name__)\n"
        "cache.save()\n"
    )
    off = ("-X", "frozen_modules=off")
    loaders = [_probe(site, body, *flags).strip() for flags in (off, off, ())]
    assert loaders == ["SourceFileLoader", "_Loader", "FrozenImporter"]


@pytest.mark.parametrize("how", ["edited", "replaced, same size and time"])
def test_a_changed_module_is_never_taken_from_the_cache(site: Site, how: str) -> None:
    _ok(site)
    _forge(site)
    source = site.package / "render.py"
    if how == "edited":
        source.write_text(source.read_text() + "# edited\n")
    else:  # a new inode with the old bytes and times: Python's own check would not see it
        info = source.stat()
        other = source.with_suffix(".new")
        other.write_bytes(source.read_bytes())
        os.utime(other, ns=(info.st_atime_ns, info.st_mtime_ns))
        other.replace(source)
    ran = _ok(site)
    assert FORGED not in ran.stderr
    assert "convergent.render" not in ran.served
    # the save kept the module's code again, from the source as it is now
    again = _ok(site)
    assert "convergent.render" in again.served and FORGED not in again.stderr


@pytest.mark.parametrize("where", ["PYTHONPATH", "the script's directory"])
def test_a_module_placed_before_a_kept_one_on_sys_path_is_imported(site: Site, where: str) -> None:
    import graphlib

    _ok(site)
    second = _ok(site)
    assert "graphlib" in second.served  # a standard module the run imports
    folder = site.src if where == "PYTHONPATH" else site.script.parent
    shadow = Path(graphlib.__file__).read_text() + "\nimport sys\nsys.stderr.write('SHADOW\\n')\n"
    (folder / "graphlib.py").write_text(shadow)
    ran = _ok(site)
    assert "SHADOW" in ran.stderr
    assert "graphlib" not in ran.served


def test_a_module_kept_from_the_first_directory_is_not_taken_from_another(site: Site) -> None:
    import graphlib

    shadow = Path(graphlib.__file__).read_text() + "\nimport sys\nsys.stderr.write('SHADOW\\n')\n"
    (site.script.parent / "graphlib.py").write_text(shadow)
    assert "SHADOW" in _ok(site).stderr
    assert "graphlib" in _ok(site).served  # kept from the script's directory
    other = site.root / "elsewhere" / "convergent"  # the same command, another directory
    other.parent.mkdir()
    shutil.copy(site.script, other)
    ran = _ok(site, script=str(other))
    assert "SHADOW" not in ran.stderr  # the standard module, as a plain import finds it
    assert "graphlib" not in ran.served
    assert len(ran.served) > 100  # the same cache file, the rest of it used


@pytest.mark.parametrize(
    "damage", ["cut short", "zeros", "garbage", "empty", "code cut", "head length"]
)
def test_a_damaged_cache_file_is_not_used_and_is_written_again(site: Site, damage: str) -> None:
    _ok(site)
    path = site.cache_file()
    data = path.read_bytes()
    if damage == "cut short":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "zeros":
        path.write_bytes(bytes(len(data)))
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "head length":  # says ~4 GB: never read (nor allocated) past the file
        magic = data.index(b"\n") + 1
        path.write_bytes(data[:magic] + (0xFFFFFF00).to_bytes(4, "little") + data[magic + 4 :])
    else:  # the index whole, every module's code cut to its first bytes
        found = read(str(path))
        assert found is not None
        head, entries = found
        write(str(path), head, {n: (e, code[:9]) for n, (e, code) in entries.items()})
    # a head said to be ~4 GB long is not read: 1 GB of address space is enough
    ran = _ok(site, under=("prlimit", "--as=1000000000") if damage == "head length" else ())
    assert ran.stdout.count("repaired: 0") == 1
    found = read(str(site.cache_file()))
    assert found is not None  # written again, whole
    assert all(type(marshal.loads(code)).__name__ == "code" for _, code in found[1].values())
    assert len(_ok(site).served) > 100


@pytest.mark.parametrize("how", ["group-writable", "another user's", "symlink", "fifo"])
def test_a_cache_file_the_command_cannot_trust_is_not_read(site: Site, how: str) -> None:
    _ok(site)
    _forge(site)
    path = site.cache_file()
    if how == "group-writable":
        path.chmod(0o664)
    elif how == "another user's":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the file to another user")
        os.chown(path, 65534, 65534)
    elif how == "symlink":
        aside = site.root / "aside.bin"
        path.replace(aside)
        path.symlink_to(aside)
    else:
        path.unlink()
        os.mkfifo(path)
    ran = _ok(site)  # bounded: a FIFO opened for reading would block without O_NONBLOCK
    assert FORGED not in ran.stderr
    assert ran.served == []


def test_no_cache_file_is_written_without_bytecode(site: Site) -> None:
    _ok(site)  # the .pyc files and __pycache__ are there
    site.cache_file().unlink()
    _ok(site, PYTHONDONTWRITEBYTECODE="1")
    assert site.cache_files() == []


def test_a_writer_killed_before_its_rename_leaves_the_last_file(site: Site) -> None:
    _ok(site)
    path = site.cache_file()
    before = path.read_bytes()
    source = site.package / "render.py"
    source.write_text(source.read_text() + "# edited\n")  # the next run writes the file
    killed = _run(site, KILL_AT_RENAME="1")
    assert killed.returncode == -signal.SIGKILL
    assert path.read_bytes() == before  # the last whole file, never a part of the new one
    (left,) = path.parent.glob(path.name + ".*.tmp")
    hour_ago = time.time() - 3600
    os.utime(left, (hour_ago, hour_ago))
    writing = path.parent / f"{path.name}.1-0123456789ab.tmp"  # another writer's, now
    writing.write_bytes(b"")
    ran = _ok(site)
    assert "convergent.render" not in ran.served  # the edit is seen
    assert not left.exists()  # the killed writer's temp file removed
    assert writing.exists()  # a recent one is not: its writer may be at work
    assert "convergent.render" in _ok(site).served
    found = read(str(path))
    assert found is not None
    entry: Entry = found[1]["convergent.render"][0]
    assert entry[4] == source.stat().st_size  # the edited source's code


def test_older_cache_files_go_once_a_directory_holds_eight(site: Site) -> None:
    _ok(site)
    folder = site.cache_file().parent
    hour_ago = time.time() - 3600
    for n in range(10):  # other sys.path's files, as old as can be
        other = folder / f"startup.{sys.implementation.cache_tag}-{n:08x}.bin"
        other.write_bytes(b"")
        os.utime(other, (hour_ago + n, hour_ago + n))
    (site.package / "render.py").write_text((site.package / "render.py").read_text() + "#\n")
    _ok(site)  # writes its own file again
    left = sorted(folder.glob("startup.*.bin"))
    assert len(left) == 8
    assert f"startup.{sys.implementation.cache_tag}-00000000.bin" not in {p.name for p in left}
    assert len(_ok(site).served) > 100  # its own file among them


def test_a_stale_pyc_is_not_made_to_last(site: Site) -> None:
    """Python takes a .pyc for its source's when the source's modification second and
    size are those in its header: a file put in place with another's size and time (cp -p,
    tar) runs the old code in a plain import. The cache does not copy such a .pyc: it
    keeps the code compiled from the source, and a removed .pyc is of no consequence."""
    source = site.package / "render.py"
    text = source.read_text()
    source.write_text(text + "import sys as _s\n_s.stderr.write('RENDER-A\\n')\n")
    assert "RENDER-A" in _ok(site).stderr
    assert "RENDER-A" in _ok(site).stderr
    info = source.stat()
    other = source.with_suffix(".new")  # the same size and times, other bytes
    other.write_text(text + "import sys as _s\n_s.stderr.write('RENDER-B\\n')\n")
    os.utime(other, ns=(info.st_atime_ns, info.st_mtime_ns))
    other.replace(source)
    _ok(site)  # a plain import of render: the old .pyc (Python's check), the cache: not it
    ran = _ok(site)
    assert "convergent.render" in ran.served
    assert "RENDER-B" in ran.stderr and "RENDER-A" not in ran.stderr


def test_code_from_the_cache_names_the_source_where_it_is_now(site: Site) -> None:
    """Code compiled where the tree was before (a copied .pyc, a moved tree) names the
    source where it is now, as Python's own loader makes it."""
    _ok(site)
    path = site.cache_file()
    found = read(str(path))
    assert found is not None
    head, entries = found
    entry, _ = entries["convergent.render"]
    said = "__file__ + ' ' + TextRenderer.__init__.__code__.co_filename + '\\n'"
    text = Path(entry[0]).read_text() + f"\nimport sys as _s\n_s.stderr.write({said})\n"
    elsewhere = "/elsewhere/convergent/render.py"
    entries["convergent.render"] = entry, marshal.dumps(compile(text, elsewhere, "exec"))
    write(str(path), head, entries)
    ran = _ok(site)
    assert "convergent.render" in ran.served
    origin = str(site.package / "render.py")
    assert f"{origin} {origin}" in ran.stderr.splitlines()
    assert elsewhere not in ran.stderr


def test_a_package_put_beside_a_kept_module_is_imported(site: Site) -> None:
    _ok(site)
    assert "convergent.render" in _ok(site).served
    package = site.package / "render"
    package.mkdir()  # a package of the same name comes first in a plain import
    (package / "__init__.py").write_text(
        (site.package / "render.py").read_text() + "\nimport sys\nsys.stderr.write('PKG\\n')\n"
    )
    ran = _ok(site)
    assert "PKG" in ran.stderr
    assert "convergent.render" not in ran.served


def test_a_package_made_of_a_directory_beside_a_kept_module_is_imported(site: Site) -> None:
    """A directory named as a module, beside it: an ``__init__.py`` put in it later makes
    the package that a plain import takes, and changes only that directory's time."""
    (site.package / "render").mkdir()
    _ok(site)
    ran = _ok(site)
    assert "convergent.render" not in ran.served  # not kept while the directory is there
    assert len(ran.served) > 100
    (site.package / "render" / "__init__.py").write_text(
        (site.package / "render.py").read_text() + "\nimport sys\nsys.stderr.write('PKG\\n')\n"
    )
    assert "PKG" in _ok(site).stderr


def test_sys_path_changed_after_start_up_is_searched_as_usual(site: Site) -> None:
    import graphlib

    _ok(site)
    assert "graphlib" in _ok(site).served
    vendored = site.root / "vendored"
    vendored.mkdir()
    (vendored / "graphlib.py").write_text(
        Path(graphlib.__file__).read_text() + "\nprint('VENDORED')\n"
    )
    said = _probe(site, f"sys.path.insert(0, {str(vendored)!r})\nimport graphlib\n")
    assert "VENDORED" in said


def test_imports_after_the_start_up_window_are_searched_as_usual(site: Site) -> None:
    _ok(site)
    assert "graphlib" in _ok(site).served
    said = _probe(
        site,
        "import graphlib, heapq\n"  # heapq: within the window
        "from convergent.cli import codecache\n"
        "cache._until = 0.0  # as if the window were over\n"
        "del sys.modules['graphlib']\n"
        "import graphlib\n"
        "loader = type(graphlib.__spec__.loader).__name__\n"
        "print('LOADER', loader, type(heapq.__spec__.loader).__name__)\n",
    )
    assert "LOADER SourceFileLoader _Loader" in said


def test_a_module_with_a_hash_based_pyc_is_not_kept(site: Site) -> None:
    """Python checks a hash-based .pyc against its source's bytes (or not at all, when
    unchecked): the cache, which checks times, leaves such a module to it."""
    import py_compile

    source = site.package / "render.py"
    py_compile.compile(
        str(source),
        cfile=importlib.util.cache_from_source(str(source)),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    _ok(site)
    ran = _ok(site)
    assert "convergent.render" not in ran.served
    assert len(ran.served) > 100


def test_a_removed_working_directory_does_not_break_the_command(site: Site) -> None:
    gone = site.root / "gone"
    gone.mkdir()
    code = (
        "import sys; sys.argv = ['convergent', '--version']; "
        "from convergent.cli.main import entry; entry()"
    )
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPATH"] = str(site.src)
    done = subprocess.run(
        [
            "sh",
            "-c",
            'cd "$1" && rmdir "$1" && exec "$2" -c "$3"',
            "sh",
            gone,
            sys.executable,
            code,
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("convergent ")


def test_a_file_that_is_no_module_does_not_turn_the_cache_off(site: Site) -> None:
    _ok(site)
    (site.script.parent / "sqlite3").write_text("#!/bin/sh\n")  # a program, as in /usr/bin
    (site.script.parent / "typing.txt").write_text("notes\n")
    assert len(_ok(site).served) > 100


def test_a_cache_file_for_a_changing_sys_path_is_written_once_a_minute(site: Site) -> None:
    _ok(site)
    path = site.cache_file()
    (site.src / "a.txt").write_text("")  # the PYTHONPATH directory changed
    first = path.stat()
    old = first.st_mtime - 120
    os.utime(path, (old, old))  # written two minutes ago
    assert _ok(site).served == []
    again = path.stat()
    assert again.st_ino != first.st_ino  # written again, for the directory as it is now
    assert len(_ok(site).served) > 100
    (site.src / "b.txt").write_text("")  # and changed again, within the minute
    assert _ok(site).served == []
    assert path.stat().st_ino == again.st_ino  # not written again so soon
