"""A kind from another package: found through the ``convergent.kinds`` entry points.

``site/`` holds a package that is not convergent's (``convergent_notes``) with the
``.dist-info`` an installer would have written; on ``PYTHONPATH`` it is what a
``pip install`` of it would give. The CLI runs in a child process, as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import convergent

SITE = Path(__file__).resolve().parent / "site"
SRC = Path(convergent.__file__).resolve().parent.parent
BOUND = 60.0  # seconds a child convergent may take


def _convergent(
    *args: str, cwd: Path, importtime: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(SITE)])}
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, "-m", "convergent", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def test_run_uses_a_kind_that_a_plugin_registers_by_entry_point(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n"
        f"- note: greeting\n  path: {tmp_path}/greeting\n  text: hello\n"
        f"- shout: warning\n  path: {tmp_path}/warning\n  text: careful\n"
        "  require: note[greeting]\n"
    )
    args = ["run", str(policy), "--converged-timeout", "0", "--state-dir", str(tmp_path / "s")]
    done = _convergent(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "greeting").read_text() == "hello\n"
    assert (tmp_path / "warning").read_text() == "CAREFUL\n"  # module:Class form
    assert "note[greeting]: noted" in done.stdout
    again = _convergent(*args, cwd=tmp_path)  # converged: nothing to do
    assert again.returncode == 0, again.stderr
    assert "noted" not in again.stdout


def test_check_names_an_unknown_kind_and_how_plugin_kinds_are_installed(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"resources:\n- zebra: z\n- note: n\n  path: {tmp_path}/n\n  text: hi\n")
    done = _convergent("check", str(policy), cwd=tmp_path)
    assert done.returncode != 0
    (line,) = [x for x in done.stderr.splitlines() if "zebra" in x]
    assert line.startswith(f"{policy}:2:3: zebra[z]: unknown resource kind 'zebra'; known kinds: ")
    assert "note" in line.split("known kinds: ")[1]  # offered by the plug-in, not loaded
    assert line.endswith(
        "a kind from a plug-in needs its Python package installed where convergent runs "
        "(it registers the kind in the entry-point group 'convergent.kinds')"
    )


def test_a_plugin_that_fails_to_load_is_named_with_its_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("resources:\n- missing: m\n- mislabelled: x\n")
    done = _convergent("check", str(policy), cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    (missing,) = [x for x in lines if "missing[m]" in x]
    assert missing.startswith(f"{policy}:2:3: missing[m]: unknown resource kind 'missing'")
    assert missing.endswith(
        "its plug-in did not load: importing convergent_notes_missing (entry point 'missing' "
        "in group 'convergent.kinds') failed: ModuleNotFoundError: No module named "
        "'convergent_notes_missing'"
    )
    (mislabelled,) = [x for x in lines if "mislabelled[x]" in x]
    assert mislabelled.endswith(
        "its plug-in did not load: convergent_notes:Note (entry point 'mislabelled' in group "
        "'convergent.kinds') is Note, whose kind is not 'mislabelled'"
    )


def test_a_plugin_cannot_take_the_name_of_a_builtin_kind(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("resources:\n- impostor: i\n- timer: t\n  interval: 1\n")
    done = _convergent("check", str(policy), cwd=tmp_path)
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()  # timer[t] is the real timer: no problem
    assert line.startswith(f"{policy}:2:3: impostor[i]: unknown resource kind 'impostor'")
    assert line.endswith(
        "failed: TypeError: resource kind 'timer' is built into convergent "
        "(convergent.resources.timer:Timer); convergent_notes.impostor.FakeTimer cannot "
        "take its name: choose another"
    )


def test_a_policy_of_builtin_kinds_never_reads_entry_points(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"resources:\n- file: {tmp_path}/f\n  content: x\n- noop: n\n")
    args = ["run", str(policy), "--converged-timeout", "0", "--state-dir", str(tmp_path / "s")]
    done = _convergent(*args, cwd=tmp_path, importtime=True)
    assert done.returncode == 0, done.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "convergent.resources.file" in imported  # importtime did report
    assert "importlib.metadata" not in imported
    assert "convergent_notes" not in imported
