"""``convergent status`` asks a running agent, through the control socket in its state
directory, what it does now, what it waits for and what failed and why; no other local
user can ask."""

from __future__ import annotations

import json
import os
import signal
import stat
import textwrap
from pathlib import Path

from convergent.cli.control import CONTROL_SOCKET, ask
from tests.e2e.agent import Agent, convergent
from tests.host.hostile import lab, needs_root, run_as_nobody


def _policy(tmp_path: Path, fifo: Path) -> Path:
    text = f"""
        resources:
          - file: {tmp_path}/a
            content: "a\\n"
          - exec: broken
            cmd: [sh, -c, "echo 'no such thing' >&2; exit 3"]
          - file: {tmp_path}/after-broken
            content: "x"
            require: [exec[broken]]
          - exec: slow
            cmd: [sh, -c, "echo started; read x < {fifo}"]
          - file: {tmp_path}/after-slow
            content: "y"
            require: [exec[slow]]
    """
    policy = tmp_path / "p.yaml"
    policy.write_text(textwrap.dedent(text).lstrip("\n"))
    return policy


def test_status_says_what_runs_waits_failed_and_why(tmp_path: Path) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    state = tmp_path / "state"
    with Agent("run", str(_policy(tmp_path, fifo)), "--state-dir", str(state)) as agent:
        agent.wait_for_line(lambda line: line == "exec[slow]: stdout: started")
        asked = convergent("status", "--state-dir", str(state), "--json")
        assert asked.returncode == 1, asked.stderr  # not converged
        status = json.loads(asked.stdout)
        assert status["version"] == 1 and status["pid"] == agent.proc.pid
        assert status["converged"] is False
        assert status["now"] in (
            [{"resource": "exec[slow]", "state": "checking"}],
            [{"resource": "exec[slow]", "state": "applying"}],
        )
        assert {"resource": f"file[{tmp_path}/after-slow]", "for": ["exec[slow]"]} in (
            status["waiting"]
        )
        text = convergent("status", "--state-dir", str(state))
        assert "doing now:\n  exec[slow]: " in text.stdout
        assert f"  file[{tmp_path}/after-slow]: for exec[slow]\n" in text.stdout
        with fifo.open("w") as go:
            go.write("go\n")
        agent.wait_for_line(lambda line: line == f"file[{tmp_path}/after-slow]: created")
        agent.wait_for_line(lambda line: line.startswith("settled with 1 failed, 1 blocked"))
        settled = convergent("status", "--state-dir", str(state))
        assert settled.returncode == 1
        status = json.loads(convergent("status", "--state-dir", str(state), "--json").stdout)
        assert status["converged"] is True and not status["now"] and not status["waiting"]
        assert status["failed"] == [
            {"resource": "exec[broken]", "error": "exited with code 3: no such thing"}
        ]
        assert status["blocked"] == [
            {"resource": f"file[{tmp_path}/after-broken]", "upstream": ["exec[broken]"]}
        ]
        assert "failed:\n  exec[broken]: exited with code 3: no such thing\n" in settled.stdout
        assert f"blocked:\n  file[{tmp_path}/after-broken]: by exec[broken]\n" in (settled.stdout)
        sock = state / CONTROL_SOCKET
        assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
        agent.send(signal.SIGTERM)
        agent.wait()
    assert not sock.exists()
    gone = convergent("status", "--state-dir", str(state))
    assert gone.returncode == 3
    assert "no agent runs on the state directory" in gone.stderr


def _try_to_ask(state: str) -> str:
    try:
        ask(state, timeout=5.0)
    except PermissionError:
        return "refused: permission"
    except (ValueError, ConnectionResetError, BrokenPipeError):  # connected, then cut off
        return "refused: closed without a byte"
    except OSError as exc:
        return f"refused: {exc}"
    return "answered"


@needs_root
def test_another_user_cannot_ask_the_agent_even_with_the_socket_left_open(
    tmp_path: Path,
) -> None:
    lab(tmp_path)
    target = tmp_path / "f"
    policy = tmp_path / "p.yaml"
    policy.write_text(f"resources:\n  - file: {target}\n    content: x\n")
    state = tmp_path / "state"
    with Agent("run", str(policy), "--state-dir", str(state)) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"))
        assert ask(str(state))["converged"] is True  # the agent's user (root) may
        assert run_as_nobody(lambda: _try_to_ask(str(state))) == "refused: permission"
        # Were the directory and the socket opened up by mistake, the peer's uid still
        # keeps a stranger out: the connection closes without an answer.
        state.chmod(0o755)
        (state / CONTROL_SOCKET).chmod(0o666)
        assert run_as_nobody(lambda: _try_to_ask(str(state))) == "refused: closed without a byte"
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0


def test_status_reaches_an_agent_whose_socket_path_is_too_long_for_sun_path(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    policy = deep / "p.yaml"
    policy.write_text(f"resources:\n  - file: {deep}/f\n    content: x\n")
    state = deep / "state"
    assert len(str(state / CONTROL_SOCKET)) > 108
    with Agent("run", str(policy), "--state-dir", str(state)) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"))
        asked = convergent("status", "--state-dir", str(state))
        assert asked.returncode == 0, asked.stderr
        assert "converged, 1 resources, up " in asked.stdout
        assert f"policy {policy}\n" in asked.stdout
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0
