"""The cluster options of ``convergent run`` and ``convergent cluster``, through the real
command line: clear errors that change nothing, tokens, status."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.members import member_process
from tests.cluster.support import fast_etcd, free_ports, needs_etcd, needs_tls

__all__ = ["fast_etcd"]

TIMEOUT = 60.0


def convergent(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        input=stdin,
    )


def _policy(tmp_path: Path) -> tuple[Path, Path]:
    made = tmp_path / "made"
    policy = tmp_path / "p.yaml"
    policy.write_text(f'resources:\n  - file: {made}\n    content: "x\\n"\n', encoding="utf-8")
    return policy, made


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--cluster", "--seeds", "https://127.0.0.1:1"], "--seeds: give one"),
        (["--seeds", "http://127.0.0.1:1"], "write https:// URLs"),
        (["--insecure", "--seeds", "https://127.0.0.1:1"], "with --insecure every URL is http"),
        (["--client-urls", "https://127.0.0.1:1"], "go with --cluster"),
        (["--seeds", "https://127.0.0.1:1", "--peer-urls", "https://127.0.0.1:2"], "own member"),
        (["--initial-cluster", "x=https://127.0.0.1:1", "--hostname", "a"], "not this host 'a'"),
        (["--cluster", "--noop"], "starts no etcd member"),
        (["--seeds", "127.0.0.1:2379"], "is not a URL like"),
    ],
)
def test_options_that_do_not_fit_together_change_nothing(
    tmp_path: Path, options: list[str], said: str
) -> None:
    policy, made = _policy(tmp_path)
    done = convergent("run", str(policy), "--state-dir", str(tmp_path / "s"), *options)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert not made.exists()
    assert not (tmp_path / "s" / "etcd").exists()


@needs_tls
def test_unreachable_seeds_are_each_named_and_nothing_is_applied(tmp_path: Path) -> None:
    policy, made = _policy(tmp_path)
    token = convergent("cluster", "token", "--hostname", "b", "--state-dir", str(tmp_path / "a"))
    assert token.returncode == 0, token.stderr
    (tmp_path / "token").write_text(token.stdout)
    seeds = [f"https://127.0.0.1:{port}" for port in free_ports(2)]
    done = convergent(
        "run",
        str(policy),
        "--hostname",
        "b",
        "--state-dir",
        str(tmp_path / "b"),
        "--seeds",
        ",".join(seeds),
        "--join-token",
        str(tmp_path / "token"),
        "--converged-timeout",
        "0",
    )
    assert done.returncode == 2, done.stderr
    assert "no seed answered" in done.stderr
    for seed in seeds:
        assert f"{seed}: nothing listens there" in done.stderr
    assert "nothing was changed" in done.stderr
    assert not made.exists()
    assert stat.S_IMODE((tmp_path / "b" / "tls" / "b.key").stat().st_mode) == 0o600


@needs_tls
def test_a_client_without_a_certificate_is_told_how_to_get_one(tmp_path: Path) -> None:
    policy, made = _policy(tmp_path)
    done = convergent(
        "run",
        str(policy),
        "--hostname",
        "b",
        "--state-dir",
        str(tmp_path / "b"),
        "--seeds",
        "https://127.0.0.1:2379",
    )
    assert done.returncode == 2
    assert "convergent cluster token --hostname b" in done.stderr
    assert "--join-token FILE" in done.stderr
    assert not made.exists()


@needs_etcd
@needs_tls
def test_a_seed_of_another_cluster_ca_is_refused_and_nothing_is_applied(
    tmp_path: Path, fast_etcd: None
) -> None:
    policy, made = _policy(tmp_path)
    client, peer = free_ports(2)
    # A token from another cluster's first host: the CA does not match the seed's.
    token = convergent("cluster", "token", "--hostname", "b", "--state-dir", str(tmp_path / "z"))
    (tmp_path / "token").write_text(token.stdout)
    with member_process(tmp_path / "a", "a", client, peer) as member:
        done = convergent(
            "run",
            str(policy),
            "--hostname",
            "b",
            "--state-dir",
            str(tmp_path / "b"),
            "--seeds",
            member.client_url,
            "--join-token",
            str(tmp_path / "token"),
        )
    assert done.returncode == 2, done.stderr
    assert f"{member.client_url}: its certificate is not from our cluster CA" in done.stderr
    assert not made.exists()


@needs_tls
def test_a_token_is_never_read_from_the_command_line_and_is_for_one_host(
    tmp_path: Path,
) -> None:
    made = convergent("cluster", "token", "--hostname", "b", "--state-dir", str(tmp_path / "a"))
    assert made.returncode == 0
    assert made.stdout.startswith("convergent-join-1:")
    ca_key = tmp_path / "a" / "tls" / "ca.key"
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a" / "tls").stat().st_mode) == 0o700
    # Through stdin, for the wrong host: refused, named.
    policy, done_file = _policy(tmp_path)
    done = convergent(
        "run",
        str(policy),
        "--hostname",
        "c",
        "--state-dir",
        str(tmp_path / "c"),
        "--seeds",
        "https://127.0.0.1:1",
        "--join-token",
        "-",
        stdin=made.stdout,
    )
    assert done.returncode == 2
    assert "the token is for host 'b', this is 'c'" in done.stderr
    assert made.stdout.strip()[-20:] not in done.stderr  # never echoed
    assert not done_file.exists()


@needs_etcd
@needs_tls
def test_cluster_status_shows_members_leader_health_and_agents(
    tmp_path: Path, fast_etcd: None
) -> None:
    client, peer = free_ports(2)
    with member_process(tmp_path / "a", "a", client, peer) as member:
        args = ["--state-dir", str(tmp_path / "a"), "--hostname", "a"]
        args += ["--endpoints", member.client_url]
        table = convergent("cluster", "status", *args)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["MEMBER", "ID", "CLIENT", "URLS", "HEALTH", "LEADER"]
        assert lines[1].split()[0] == "a" and lines[1].split()[-2:] == ["healthy", "*"]
        assert "(no agent connected)" in table.stdout
        shown = convergent("cluster", "status", "--json", *args)
        report = json.loads(shown.stdout)
        assert report["leader"] == "a"
        assert [m["name"] for m in report["members"]] == ["a"]
        assert report["members"][0]["client_urls"] == [member.client_url]
        assert report["agents"] == []
    gone = convergent("cluster", "status", *args)
    assert gone.returncode == 2
    assert "nothing listens there" in gone.stderr


def test_a_run_without_cluster_options_imports_nothing_of_the_cluster(tmp_path: Path) -> None:
    policy, made = _policy(tmp_path)
    code = (
        "import sys\n"
        "from convergent.cli.main import main\n"
        f"code = main(['run', {str(policy)!r}, '--state-dir', {str(tmp_path / 's')!r}, "
        "'--converged-timeout', '0'])\n"
        "loaded = [m for m in sys.modules if m.startswith(('convergent.world.cluster', "
        "'convergent.world.tls', 'convergent.cli.cluster', 'cryptography', 'http'))]\n"
        "print(code, loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr
    assert made.exists()
