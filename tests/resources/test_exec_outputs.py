"""``exec`` sends stdout, stderr and exit_code of its last run (real processes)."""

from __future__ import annotations

from convergent.engine import Changed, Failed
from convergent.resources.abilities import Output, Sends
from convergent.resources.exec import Exec
from tests.state.support import converge, graph_of


def test_exec_declares_its_outputs() -> None:
    assert isinstance(Exec("x", cmd=["true"]), Sends)
    assert Exec.sends == {
        "stdout": Output(str),
        "stderr": Output(str),
        "exit_code": Output(int),
    }


def test_exec_has_no_outputs_before_it_ran() -> None:
    res = Exec("x", cmd=["true"], onlyif=["false"])
    result, _ = converge(graph_of(res), None)
    assert result.exit_code == 0
    assert res.outputs() == {}


def test_exec_outputs_are_those_of_the_last_run() -> None:
    res = Exec("x", cmd="echo out; echo err >&2; printf 'no newline'", shell=True)
    result, reports = converge(graph_of(res), None)
    assert result.exit_code == 0
    assert [r.resource for r in reports if isinstance(r, Changed)] == ["exec[x]"]
    assert res.outputs() == {"stdout": "out\nno newline", "stderr": "err\n", "exit_code": 0}


def test_exec_outputs_of_a_failed_run_keep_its_exit_code_and_stderr() -> None:
    res = Exec("x", cmd="echo partial; echo broken >&2; exit 3", shell=True)
    result, reports = converge(graph_of(res), None)
    assert result.failed == 1 and [r for r in reports if isinstance(r, Failed)]
    assert res.outputs() == {"stdout": "partial\n", "stderr": "broken\n", "exit_code": 3}


def test_exec_outputs_keep_the_last_64_kib_of_a_long_output() -> None:
    res = Exec("x", cmd="head -c 200000 /dev/zero | tr '\\0' x; echo END", shell=True)
    converge(graph_of(res), None)
    stdout = res.outputs()["stdout"]
    assert len(stdout) == 65536
    assert stdout.endswith("xxxxEND\n")


def test_exec_outputs_never_start_inside_a_cut_utf8_character() -> None:
    # 3-byte characters: a 64 KiB cut lands inside one unless the capture trims it.
    res = Exec("x", cmd="yes '€' | head -c 100000 | tr -d '\\n'", shell=True)
    converge(graph_of(res), None)
    stdout = res.outputs()["stdout"]
    assert stdout and set(stdout) == {"€"}
