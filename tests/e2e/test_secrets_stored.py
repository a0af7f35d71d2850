"""A secret stored by an earlier run is hidden from the first report of the next one,
before the resource that holds it has run again."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.e2e.agent import convergent


def test_a_stored_secret_printed_before_its_resource_ran_is_hidden(tmp_path: Path) -> None:
    target, state = tmp_path / "db.conf", str(tmp_path / "state")
    first = tmp_path / "first.yaml"
    first.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - password: db
                length: 24
              - file: {target}
                mode: "0600"
                recv:
                  content: password[db].password
            """
        )
    )
    done = convergent("run", str(first), "--state-dir", state, "--converged-timeout", "0")
    assert done.returncode == 0, done.stderr
    secret = target.read_text()
    assert len(secret) == 24

    # A command that prints the password (read from the file) and fails, ordered before
    # password[db]: its error is reported before anything in this run sent the secret.
    second = tmp_path / "second.yaml"
    second.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - exec: show
                cmd: "cat {target} >&2; echo; exit 3"
                shell: true
                before: password[db]
              - password: db
                length: 24
            """
        )
    )
    for extra in ((), ("--noop",)):
        run = convergent(
            "run", str(second), "--state-dir", state, "--converged-timeout", "0", *extra
        )
        output = run.stdout + run.stderr
        assert secret not in output, output
        if not extra:
            assert run.returncode == 1
            assert "exec[show]: FAILED" in run.stderr and "<secret>" in run.stderr, output
