"""A password sent to a file: the real command writes it to the file (mode as asked) and
never prints it, in a real run, under --noop, or in an error."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

from tests.e2e.agent import convergent


def _policy(tmp_path: Path, *, leak: bool = False) -> tuple[Path, Path]:
    target = tmp_path / "db.conf"
    text = f"""
        resources:
          - password: db
            length: 20
          - file: {target}
            mode: "0600"
            recv:
              content: password[db].password
    """
    if leak:  # the secret as a shell command: sh names it in its error
        text += """
          - exec: leak
            cmd: "true"
            shell: true
            recv:
              cmd: password[db].password
        """
    policy = tmp_path / ("leak.yaml" if leak else "policy.yaml")
    policy.write_text(textwrap.dedent(text).lstrip("\n"))
    return policy, target


def test_a_password_reaches_the_file_and_never_the_output(tmp_path: Path) -> None:
    policy, target = _policy(tmp_path)
    state = str(tmp_path / "state")
    run = ["run", str(policy), "--state-dir", state, "--converged-timeout", "0"]
    outputs = []

    first = convergent(*run)
    assert first.returncode == 0, first.stderr
    outputs.append(first.stdout + first.stderr)
    secret = target.read_text()
    assert len(secret) == 20
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    target.write_text("not the password\n")
    noop = convergent(*run, "--noop")
    assert noop.returncode == 0, noop.stderr
    outputs.append(noop.stdout + noop.stderr)
    assert target.read_text() == "not the password\n"
    assert f"file[{target}]: would change: content changed\n    content changed (secret)\n" in (
        noop.stdout
    )

    again = convergent(*run)
    assert again.returncode == 0, again.stderr
    outputs.append(again.stdout + again.stderr)
    assert target.read_text() == secret
    assert f"file[{target}]: content changed" in again.stdout

    for output in outputs:
        assert secret not in output


def test_a_secret_in_a_failure_is_printed_as_secret(tmp_path: Path) -> None:
    policy, target = _policy(tmp_path, leak=True)
    run = ["run", str(policy), "--state-dir", str(tmp_path / "state"), "--converged-timeout", "0"]
    done = convergent(*run)
    assert done.returncode == 1
    secret = target.read_text()
    assert "exec[leak]: FAILED" in done.stderr
    assert "<secret>" in done.stderr
    noop = convergent(*run, "--noop")
    assert "exec[leak]: would run: <secret>" in noop.stdout
    for output in (done.stdout, done.stderr, noop.stdout, noop.stderr):
        assert secret not in output
