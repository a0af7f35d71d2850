"""Parameters every kind gets checked the same way: a NUL byte in any string is refused
when the resource is built, so ``check`` finds it and ``run`` never starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import convergent
from convergent.errors import ParamError
from convergent.resources.base import Params, Resource
from convergent.resources.noop import Noop

SRC = Path(convergent.__file__).resolve().parent.parent
BOUND = 60.0  # seconds a child convergent may take


class Inner(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Nested strings.

    names: a list
    labels: a mapping
    """

    names: list[str] = []
    labels: dict[str, str] = {}


class DeepParams(Params, frozen=True):
    """A kind with strings at every depth.

    text: a string
    inner: a struct with a list and a mapping
    table: a mapping of lists
    """

    text: str = ""
    inner: Inner | None = None
    table: dict[str, list[str]] = {}


class Deep(Resource[DeepParams], kind="paramtestdeep"):
    pass


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"text": "a\0b"}, "text", "contains a NUL byte (\\0); remove it"),
        ({"inner": Inner(names=["ok", "\0"])}, "inner.names[1]", "contains a NUL"),
        ({"inner": Inner(labels={"tier": "we\0b"})}, "inner.labels.tier", "contains a NUL"),
        ({"inner": Inner(labels={"ti\0er": "web"})}, "inner.labels", "a key contains a NUL"),
        ({"inner": Inner(labels={"a.b": "\0"})}, "inner.labels[...]", "contains a NUL"),
        ({"table": {"k": ["x", "y", "z\0"]}}, "table.k[2]", "contains a NUL"),
    ],
)
def test_a_nul_byte_anywhere_in_the_parameters_is_refused_naming_the_field(
    fields: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ParamError) as caught:
        Deep("d", DeepParams(**fields))  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.message.startswith(message)
    assert caught.value.message.endswith("contains a NUL byte (\\0); remove it")


def test_text_that_only_looks_like_a_nul_escape_is_kept() -> None:
    deep = Deep("d", text="\\u0000 and \\0 are text", inner=Inner(names=["\\x00"]))
    assert deep.params.text == "\\u0000 and \\0 are text"


def test_a_nul_byte_in_a_name_is_refused() -> None:
    with pytest.raises(ParamError, match=r"the name contains a NUL byte"):
        Noop("n\0")


# -- through the policy loader and the CLI ----------------------------------------------


def _convergent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def test_check_and_run_refuse_nul_bytes_with_file_and_line_and_nothing_runs(
    tmp_path: Path,
) -> None:
    ran = tmp_path / "ran"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n"
        f"- exec: marker\n  cmd: [touch, {ran}]\n"  # valid: would run if anything did
        '- exec: cmd\n  cmd: ["echo", "x\\0y"]\n'
        '- exec: env\n  cmd: "true"\n  env: {HOME: "/ro\\0ot"}\n'
        '- exec: creates\n  cmd: "true"\n  creates: "/tmp/x\\0"\n'
        '- exec: ifnewer\n  cmd: "true"\n  ifnewer: {target: "/tmp/t\\0", sources: [/tmp/s]}\n'
        f'- file: {tmp_path}/f\n  content: "x"\n  owner: "ro\\0ot"\n'
    )
    nul = "contains a NUL byte (\\0); remove it"
    expected = [
        f"{policy}:5:17: exec[cmd]: cmd[1]: {nul}",
        f"{policy}:8:15: exec[env]: env.HOME: {nul}",
        f"{policy}:11:12: exec[creates]: creates: {nul}",
        f"{policy}:14:21: exec[ifnewer]: ifnewer.target: {nul}",
        f"{policy}:17:10: file[{tmp_path}/f]: owner: {nul}",
    ]
    checked = _convergent("check", str(policy), cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stderr.splitlines()[: len(expected)] == expected
    state = tmp_path / "state"
    done = _convergent(
        "run", str(policy), "--converged-timeout", "0", "--state-dir", str(state), cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[: len(expected)] == expected
    assert not ran.exists()
    assert not (tmp_path / "f").exists()
