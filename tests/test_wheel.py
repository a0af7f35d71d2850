"""A wheel of convergent, installed into a fresh virtual environment, gives a working
``convergent`` command on that environment's PATH."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOUND = 300.0


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=BOUND, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done  # type: ignore[no-any-return]


def _dependency_dirs() -> list[str]:
    """Where this interpreter finds convergent's dependencies (msgspec, yaml, rich)."""
    dirs = []
    for name in ("msgspec", "yaml", "rich"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations
        dirs.append(str(Path(next(iter(spec.submodule_search_locations))).parent))
    return sorted(set(dirs))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_wheel_installed_in_a_fresh_venv_gives_a_working_convergent(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)])
    (wheel,) = wheels.glob("convergent-*.whl")
    with zipfile.ZipFile(wheel) as built:  # the web view's page works offline: in the wheel
        names = set(built.namelist())
    for static in ("index.html", "app.js", "style.css"):
        assert f"convergent/web/static/{static}" in names
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)])
    # The dependencies come from this environment (no index needed): after the venv's own
    # site-packages, so the convergent that runs is the wheel's.
    site = _run(
        [str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"]
    )
    Path(site.stdout.strip(), "deps-for-test.pth").write_text("\n".join(_dependency_dirs()) + "\n")

    command = venv / "bin" / "convergent"
    version = _run([str(command), "--version"], cwd=tmp_path)
    assert version.stdout.startswith("convergent ")
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import convergent; print(convergent.__file__)"]
    )
    assert where.stdout.startswith(str(venv))

    policy = tmp_path / "tiny.yaml"
    policy.write_text(f'resources:\n  - file: {tmp_path}/hello\n    content: "hi\\n"\n')
    run = _run(
        [str(command), "run", str(policy), "--converged-timeout", "0", "--state-dir", "st"],
        cwd=tmp_path,
    )
    assert (tmp_path / "hello").read_text() == "hi\n"
    assert f"file[{tmp_path}/hello]: created" in run.stdout
    on_path = _run(
        ["sh", "-c", 'PATH="$1:$PATH" convergent doc noop', "sh", str(venv / "bin")],
        cwd=tmp_path,
    )
    assert on_path.stdout.startswith("NOOP")
