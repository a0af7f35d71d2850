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

import marshal
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import convergent
from convergent.cli.codecache import Entry, read, write

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


def _run(site: Site, script: str | None = None, **env: str) -> Ran:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ.update(PYTHONPATH=str(site.src), **env)
    argv = [sys.executable, script or str(site.script), "run", str(site.root / "site.yaml")]
    argv += ["--state-dir", str(site.root / "state"), "--converged-timeout", "0"]
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=120)
    served: list[str] = []
    for line in done.stderr.splitlines():
        if line.startswith("PACKAGE "):
            assert line == f"PACKAGE {site.package}"  # the copy runs, not the checkout
        if line.startswith("SERVED"):
            served = line.split()[1:]
    return Ran(done.returncode, done.stdout, done.stderr, served)


def _ok(site: Site, script: str | None = None, **env: str) -> Ran:
    ran = _run(site, script, **env)
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
    assert info.st_mode & 0o022 == 0 and info.st_uid == os.geteuid()
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


def test_a_module_from_the_cache_is_the_one_a_plain_import_makes(site: Site) -> None:
    _ok(site)
    check = site.script.parent / "check.py"  # the command's sys.path: its cache file
    check.write_text(
        "import sys, importlib.machinery, inspect\n"
        "from convergent.cli.codecache import install\n"
        f"cache = install({str(site.package)!r})\n"
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
        "print('checked', cache.served, bad)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPATH"] = str(site.src)
    done = subprocess.run(
        [sys.executable, str(check)], env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    _, served, bad = done.stdout.split(" ", 2)
    assert int(served) > 50  # those the imports above did not load before the finder
    assert bad.strip() == "[]"


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


@pytest.mark.parametrize("damage", ["cut short", "zeros", "garbage", "empty", "code cut"])
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
    else:  # the index whole, every module's code cut to its first bytes
        found = read(str(path))
        assert found is not None
        head, entries = found
        write(str(path), head, {n: (e, code[:9]) for n, (e, code) in entries.items()})
    ran = _ok(site)
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
    temps = list(path.parent.glob(path.name + ".*.tmp"))
    assert len(temps) == 1
    ran = _ok(site)
    assert "convergent.render" not in ran.served  # the edit is seen
    assert not temps[0].exists()  # the dead writer's temp file removed
    assert "convergent.render" in _ok(site).served
    found = read(str(path))
    assert found is not None
    entry: Entry = found[1]["convergent.render"][0]
    assert entry[4] == source.stat().st_size  # the edited source's code
