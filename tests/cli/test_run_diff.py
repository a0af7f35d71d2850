"""`convergent run --diff`: the content diff of each change made is printed (a secret's
never), and without --diff only the summary line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.e2e.agent import convergent


def _policy(tmp_path: Path) -> tuple[Path, Path, Path]:
    conf = tmp_path / "app.conf"
    conf.write_text("port = 80\nhost = a\n")
    secret_file = tmp_path / "db.conf"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""
            resources:
              - file: {conf}
                content: "port = 8080\\nhost = a\\n"
              - password: db
                length: 20
              - file: {secret_file}
                mode: "0600"
                recv:
                  content: password[db].password
            """
        ).lstrip("\n")
    )
    return policy, conf, secret_file


def test_run_diff_shows_content_changes_made_and_hides_secrets(tmp_path: Path) -> None:
    policy, conf, secret_file = _policy(tmp_path)
    run = ["run", str(policy), "--state-dir", str(tmp_path / "s"), "--converged-timeout", "0"]
    done = convergent(*run, "--diff")
    assert done.returncode == 0, done.stderr
    assert f"file[{conf}]: content changed\n    --- {conf}\n    +++ {conf}\n" in done.stdout
    assert "    -port = 80\n    +port = 8080\n" in done.stdout
    secret = secret_file.read_text()
    assert len(secret) == 20 and secret not in done.stdout + done.stderr
    assert f"file[{secret_file}]: created\n    content changed (secret)\n" in done.stdout

    conf.write_text("port = 1\nhost = a\n")
    plain = convergent(*run)
    assert plain.returncode == 0, plain.stderr
    assert f"file[{conf}]: content changed\n" in plain.stdout
    assert "+port = 8080" not in plain.stdout

    conf.write_text("port = 2\nhost = a\n")
    logged = convergent(*run, "--diff", "--log-format", "json")
    events = [json.loads(line) for line in logged.stdout.splitlines()]
    (changed,) = [e for e in events if e["event"] == "changed" and e["resource"] == f"file[{conf}]"]
    assert "-port = 2\n+port = 8080\n" in changed["diff"]


def test_a_second_run_with_diff_changes_and_prints_nothing(tmp_path: Path) -> None:
    policy, _, _ = _policy(tmp_path)
    run = ["run", str(policy), "--state-dir", str(tmp_path / "s"), "--converged-timeout", "0"]
    assert convergent(*run).returncode == 0
    again = convergent(*run, "--diff")
    assert again.returncode == 0
    assert again.stdout.startswith("resources: 3, repaired: 0")
