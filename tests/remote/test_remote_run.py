"""``convergent run --remote`` against a real sshd on 127.0.0.1: the agent is
bootstrapped, converges the policy and the run ends with its exit code; what cannot be
trusted or run is refused with the host's name, and nothing is started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.remote.support import Initiator, file_policy
from tests.sshd_support import ClientKeys, Sshd, client_keys, free_port, needs_sshd

pytestmark = [needs_sshd, pytest.mark.timeout(90)]
__all__ = ["client_keys"]


@pytest.fixture
def sshd(tmp_path: Path, client_keys: ClientKeys) -> Sshd:
    server = Sshd(tmp_path / "sshd", "127.0.0.1", free_port(), [client_keys.public])
    server.start()
    yield server
    server.stop()


def _trusting(tmp_path: Path, key: Path, *servers: Sshd) -> Initiator:
    initiator = Initiator(tmp_path / "laptop", key)
    initiator.known_hosts.write_text("".join(f"{s.known_hosts_line()}\n" for s in servers))
    return initiator


def test_a_remote_host_converges_and_the_run_exits_0(
    tmp_path: Path, client_keys: ClientKeys, sshd: Sshd
) -> None:
    made = tmp_path / "made"
    policy = file_policy(tmp_path / "site.yaml", "hello", made)
    done = _trusting(tmp_path, client_keys.key, sshd).run(
        str(policy), "--remote", f"{sshd.url}#web1", "--converged-timeout", "0"
    )
    assert done.returncode == 0, done.stderr
    assert f"[web1] file[{made}]: created" in done.stdout.splitlines()
    assert made.read_text() == "hello\n"
    assert (sshd.home / "hosts" / "web1" / "policy" / "site.yaml").exists()


def test_an_unknown_host_key_is_refused_unless_accepted(
    tmp_path: Path, client_keys: ClientKeys, sshd: Sshd
) -> None:
    made = tmp_path / "made"
    policy = file_policy(tmp_path / "site.yaml", "hello", made)
    initiator = Initiator(tmp_path / "laptop", client_keys.key)
    args = (str(policy), "--remote", sshd.url, "--converged-timeout", "0")
    refused = initiator.run(*args)
    assert refused.returncode == 1
    assert "127.0.0.1 (ssh://root@127.0.0.1:" in refused.stderr
    assert "unknown host key" in refused.stderr and "--accept-new-host-keys" in refused.stderr
    assert not made.exists()
    accepted = initiator.run(*args, "--accept-new-host-keys")
    assert accepted.returncode == 0, accepted.stderr
    assert sshd.host_public.split()[1] in initiator.known_hosts.read_text()
    assert made.read_text() == "hello\n"


def test_a_changed_host_key_is_refused_even_with_accept_new(
    tmp_path: Path, client_keys: ClientKeys, sshd: Sshd
) -> None:
    policy = file_policy(tmp_path / "site.yaml", "hello", tmp_path / "made")
    initiator = Initiator(tmp_path / "laptop", client_keys.key)
    other = client_keys.public.split()[:2]  # a key, but not this host's
    initiator.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other)}\n")
    done = initiator.run(str(policy), "--remote", sshd.url, "--accept-new-host-keys")
    assert done.returncode == 1
    assert "host key is not the one" in done.stderr and "ssh-keygen -R" in done.stderr
    assert not (tmp_path / "made").exists()


def test_a_key_the_host_does_not_accept_is_refused(
    tmp_path: Path, client_keys: ClientKeys, sshd: Sshd
) -> None:
    policy = file_policy(tmp_path / "site.yaml", "hello", tmp_path / "made")
    done = _trusting(tmp_path, client_keys.wrong, sshd).run(
        str(policy), "--remote", sshd.url, "--converged-timeout", "0"
    )
    assert done.returncode == 1
    assert f"root@127.0.0.1 refused the key {client_keys.wrong}" in done.stderr
    assert "failed on 127.0.0.1 (not run)" in done.stderr
    assert not (tmp_path / "made").exists()


def test_a_password_in_the_url_is_refused_before_anything_starts(
    tmp_path: Path, client_keys: ClientKeys
) -> None:
    policy = file_policy(tmp_path / "site.yaml", "hello", tmp_path / "made")
    done = Initiator(tmp_path / "laptop", client_keys.key).run(
        str(policy), "--remote", "ssh://root:hunter2@127.0.0.1:1"
    )
    assert done.returncode == 2
    assert "a password in a URL is refused" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert not (tmp_path / "laptop" / "state").exists()


def _bin_without_python(where: Path, fake_python: str | None) -> Path:
    where.mkdir()
    for tool in ("sh", "mkdir", "cat", "mv", "kill", "setsid"):
        os.symlink(f"/usr/bin/{tool}", where / tool)
    if fake_python is not None:
        (where / "python3").write_text(fake_python)
        (where / "python3").chmod(0o755)
    return where


@pytest.mark.parametrize(
    ("fake", "said"),
    [
        (None, "no python3 on the host"),
        ("#!/usr/bin/sh\necho 'python 3 9 /opt/py39/bin/python3'\nexit 11\n", "is Python 3.9"),
    ],
    ids=["missing", "too-old"],
)
def test_a_host_without_a_usable_python3_is_named_with_the_fix(
    tmp_path: Path, client_keys: ClientKeys, fake: str | None, said: str
) -> None:
    """The host's PATH holds the shell's tools and no python3 (missing), or a stand-in
    that answers the probe as Python 3.9 would (too old: no such python is installed)."""
    tools = _bin_without_python(tmp_path / "bin", fake)
    server = Sshd(tmp_path / "sshd", "127.0.0.1", free_port(), [client_keys.public],
                  env={"PATH": str(tools)})  # fmt: skip
    server.start()
    try:
        policy = file_policy(tmp_path / "site.yaml", "hello", tmp_path / "made")
        done = _trusting(tmp_path, client_keys.key, server).run(
            str(policy), "--remote", f"{server.url}#db1", "--converged-timeout", "0"
        )
    finally:
        server.stop()
    assert done.returncode == 1
    assert said in done.stderr and "[db1] db1:" in done.stderr
    assert "failed on db1" in done.stderr
    assert not (tmp_path / "made").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--seeds", "https://127.0.0.1:2379"], "--seeds: a remote run gives its hosts"),
        (["--hostname", "me"], "--hostname: a remote run gives its hosts"),
        (["--remote", "ssh://root@127.0.0.1#initiator"], "'initiator' is the run's own"),
        (["--remote", "http://127.0.0.1"], "not an ssh:// URL"),
        (["--remote", "ssh://root@10.0.0.9 via:ssh://root@127.0.0.1:1"], "no agent here"),
        (
            ["--remote", "ssh://root@10.0.0.9 via:ssh://root@10.0.0.8"],
            "add --remote ssh://root@10.0.0.8",
        ),
    ],
    ids=[
        "cluster-option",
        "hostname",
        "reserved-name",
        "not-ssh",
        "behind-without-agent",
        "via-not-a-host",
    ],
)
def test_options_a_remote_run_cannot_honour_stop_it_before_it_starts(
    tmp_path: Path, client_keys: ClientKeys, args: list[str], said: str
) -> None:
    policy = file_policy(tmp_path / "site.yaml", "hello", tmp_path / "made")
    done = Initiator(tmp_path / "laptop", client_keys.key).run(
        str(policy), "--remote", "ssh://root@127.0.0.1:1", *args
    )
    assert done.returncode == 2
    assert said in done.stderr
    assert not (tmp_path / "laptop" / "state").exists()
