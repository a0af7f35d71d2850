"""Running as a systemd service: sd_notify over a real NOTIFY_SOCKET, and the unit itself."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import convergent

SRC = Path(convergent.__file__).resolve().parent.parent
BOUND = 30.0


class Systemd:
    """The notify socket systemd would bind for a Type=notify service."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(BOUND)
        self.seen: list[str] = []

    def until(self, line: str) -> list[str]:
        """Messages (as lists of lines) received until one holds ``line``; its lines."""
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            message = self.sock.recv(4096).decode().split("\n")
            self.seen.extend(message)
            if line in message:
                return message
        raise AssertionError(f"{line!r} never came; got {self.seen}")


def _start(
    policy: Path, tmp_path: Path, address: str, watchdog_usec: int | None = None
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "NOTIFY_SOCKET": address}
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return subprocess.Popen(
        [sys.executable, "-m", "convergent", "run", str(policy), "--state-dir", f"{tmp_path}/st"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "resources:\n"
        f"  - exec: env\n    cmd: [sh, -c, 'env > {tmp_path}/env']\n"
        f"    creates: {tmp_path}/env\n"
    )
    return path


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=BOUND)


def test_agent_tells_systemd_ready_status_watchdog_reload_and_stop(
    tmp_path: Path, policy: Path, stopped: list[subprocess.Popen[str]]
) -> None:
    systemd = Systemd(str(tmp_path / "notify"))
    proc = _start(policy, tmp_path, systemd.address, watchdog_usec=200_000)
    stopped.append(proc)
    ready = systemd.until("READY=1")
    assert "STATUS=converged; watching for changes" in ready
    assert (tmp_path / "env").exists()  # READY=1 came once the policy converged
    systemd.until("WATCHDOG=1")
    systemd.until("WATCHDOG=1")  # pinged again: half of 0.2 s apart, from the event loop

    policy.write_text(policy.read_text() + "  - noop: added\n")
    proc.send_signal(signal.SIGHUP)  # systemctl reload (the save may also have been seen)
    reloading = systemd.until("RELOADING=1")
    assert any(line.startswith("MONOTONIC_USEC=") for line in reloading)
    done = systemd.until("READY=1")
    assert any(line.startswith("STATUS=policy reloaded") for line in done)

    proc.send_signal(signal.SIGHUP)  # unchanged: reloaded all the same
    systemd.until("RELOADING=1")
    systemd.until("READY=1")

    proc.send_signal(signal.SIGTERM)
    assert "STATUS=stopping (SIGTERM)" in systemd.until("STOPPING=1")
    out, err = proc.communicate(timeout=BOUND)
    assert proc.returncode == 0, err
    assert "policy reloaded: +1" in out
    env = (tmp_path / "env").read_text()
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env  # not for the commands


def test_abstract_notify_socket_and_a_refused_reload(
    tmp_path: Path, policy: Path, stopped: list[subprocess.Popen[str]]
) -> None:
    systemd = Systemd(f"@convergent-test-{os.getpid()}-{tmp_path.name}")
    proc = _start(policy, tmp_path, systemd.address)
    stopped.append(proc)
    systemd.until("READY=1")
    policy.write_text("resources:\n  - fiel: /tmp/x\n")
    proc.send_signal(signal.SIGHUP)
    systemd.until("RELOADING=1")
    done = systemd.until("READY=1")
    assert any(line.startswith("STATUS=policy not reloaded: fix") for line in done)
    assert "WATCHDOG=1" not in systemd.seen  # no WatchdogSec=, no pings
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=BOUND)
    assert proc.returncode == 0
    assert "unknown kind" in err or "fiel" in err


def test_a_failed_resource_still_says_ready_with_what_failed(
    tmp_path: Path, stopped: list[subprocess.Popen[str]]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("resources:\n  - exec: broken\n    cmd: [sh, -c, 'exit 3']\n")
    systemd = Systemd(str(tmp_path / "notify"))
    proc = _start(policy, tmp_path, systemd.address)
    stopped.append(proc)
    assert "STATUS=settled with 1 failed, 0 blocked" in systemd.until("READY=1")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=BOUND)


def _unit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convergent", "service", "install", *args],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def test_service_install_writes_a_notify_unit_systemd_accepts(tmp_path: Path, policy: Path) -> None:
    done = _unit(tmp_path, "--policy", str(policy), "--unit-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "convergent.service"
    text = unit.read_text()
    keys = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    assert keys["Type"] == "notify"
    assert keys["NotifyAccess"] == "main"
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert keys["WatchdogSec"] == "30s"
    assert keys["ExecStart"].endswith(f" run {policy}")
    assert keys["StateDirectory"] == "convergent"
    assert "ProtectSystem" not in keys and "PrivateTmp" not in keys
    assert unit.stat().st_mode & 0o777 == 0o644
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze (make test installs systemd)")
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert (verify.returncode, verify.stderr) == (0, "")


def test_service_install_quotes_odd_paths_and_refuses_a_missing_policy(tmp_path: Path) -> None:
    odd = tmp_path / "my policy $HOME 100%.yaml"
    odd.write_text("resources: []\n")
    done = _unit(tmp_path, "--policy", str(odd), "--state-dir", str(tmp_path / "st"), "--print")
    assert done.returncode == 0, done.stderr
    (start,) = [line for line in done.stdout.splitlines() if line.startswith("ExecStart=")]
    assert start.endswith(
        f' run "{tmp_path}/my policy $$HOME 100%%.yaml" --state-dir {tmp_path}/st'
    )
    assert "StateDirectory=" not in done.stdout
    missing = _unit(tmp_path, "--policy", str(tmp_path / "nope.yaml"), "--unit-dir", str(tmp_path))
    assert missing.returncode == 2
    assert "no such policy file" in missing.stderr
    assert not (tmp_path / "convergent.service").exists()


def test_a_symlink_where_the_unit_goes_is_replaced_not_followed(
    tmp_path: Path, policy: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("not a unit\n")
    units = tmp_path / "units"
    units.mkdir()
    (units / "convergent.service").symlink_to(victim)
    done = _unit(tmp_path, "--policy", str(policy), "--unit-dir", str(units))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "not a unit\n"
    unit = units / "convergent.service"
    assert not unit.is_symlink() and "Type=notify" in unit.read_text()
    assert sorted(p.name for p in units.iterdir()) == ["convergent.service"]  # no temp left


def test_a_notify_socket_nobody_listens_on_does_not_stop_the_agent(
    tmp_path: Path, policy: Path
) -> None:
    argv = ["run", str(policy), "--converged-timeout", "0", "--state-dir", f"{tmp_path}/st"]
    done = subprocess.run(
        [sys.executable, "-m", "convergent", *argv],
        env={**os.environ, "PYTHONPATH": str(SRC), "NOTIFY_SOCKET": str(tmp_path / "gone")},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env").exists()
