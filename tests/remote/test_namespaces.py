"""``run --remote`` to hosts that are network namespaces (10.200.1.0/24), each with its
own sshd, none with convergent installed: each runs the copied single file with its
``python3 -I``. A second run copies nothing (the bridge's byte counters say so); a host
cut off mid-run is named and the others finish; a host reachable only from another is
bootstrapped by it (``via:``, ``--remote-depth 2``: the first-level host's relay logs in
with the initiator's ssh agent, forwarded; a real ``ssh-agent`` holds the test's key).

The lab (tests/sshd_support.py) is made once for the module; every process in it is
killed by PID and the namespaces deleted at the end. Skipped where namespaces cannot be
made (not root)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.support import Initiator, file_policy
from tests.remote.test_world_tunnel import mgmt_graph
from tests.sshd_support import ClientKeys, SshLab, client_keys, needs_sshd, ssh_agent, ssh_lab

pytestmark = [needs_sshd, pytest.mark.slow, pytest.mark.timeout(180)]
__all__ = ["client_keys"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, client_keys: ClientKeys) -> Iterator[SshLab]:
    where = tmp_path_factory.mktemp("lab")
    with ssh_lab(where, client_keys, ("a", "b", "c", "d"), behind={"d": "a"}) as made:
        yield made


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, lab: SshLab) -> Iterator[str]:
    with ssh_agent(tmp_path_factory.mktemp("agent"), lab.keys.key) as sock:
        yield sock


def _initiator(tmp_path: Path, lab: SshLab, agent: str | None = None) -> Initiator:
    initiator = Initiator(tmp_path / "laptop", lab.keys.key, agent)
    lab.known_hosts(initiator.known_hosts)
    return initiator


def _url(lab: SshLab, host: str) -> str:
    return f"ssh://root@{lab.address[host]}#{host}"


def test_hosts_without_convergent_bootstrap_converge_and_trade(tmp_path: Path, lab: SshLab) -> None:
    bare = subprocess.run(["/usr/bin/python3", "-I", "-c", "import convergent"],
                          capture_output=True, timeout=30)  # fmt: skip
    assert bare.returncode != 0  # the hosts' python3 has no convergent of its own
    root = tmp_path / "hosts"
    for host in "ab":
        (root / host).mkdir(parents=True)
    graphs = [str(mgmt_graph(tmp_path / f"{h}.yaml", h, _url(lab, h).split("#")[0], root))
              for h in "ab"]  # fmt: skip
    done = _initiator(tmp_path, lab).run(*graphs, "--converged-timeout", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    for me, other in ("ab", "ba"):
        assert (root / me / f"shared-{other}").read_text() == f"shared by {other}\n"
    for host in "ab":  # the host ran the single file with its own python3
        (pyz,) = (lab.sshd[host].home / "dist").glob("*/convergent.pyz")
        assert pyz.stat().st_size > 1_000_000


def test_a_second_run_copies_nothing(tmp_path: Path, lab: SshLab) -> None:
    made = tmp_path / "made"
    policy = str(file_policy(tmp_path / "site.yaml", "hello", made))
    initiator = _initiator(tmp_path, lab)
    args = (policy, "--remote", _url(lab, "c"), "--converged-timeout", "0")
    before = lab.bytes_to("c")
    first = initiator.run(*args, "--no-caching")  # copies even if an earlier test did
    assert first.returncode == 0, first.stderr
    copied = lab.bytes_to("c") - before
    (pyz,) = (lab.sshd["c"].home / "dist").glob("*/convergent.pyz")
    assert copied > pyz.stat().st_size
    assert f"[c] bootstrap: {pyz.stat().st_size} bytes copied" in first.stdout
    before = lab.bytes_to("c")
    second = initiator.run(*args)
    assert second.returncode == 0, second.stderr
    assert "[c] bootstrap: 0 bytes copied" in second.stdout
    assert lab.bytes_to("c") - before < 100_000  # the handshake, the policy, the reports


def test_a_host_reachable_only_through_another_is_bootstrapped_by_it(
    tmp_path: Path, lab: SshLab, agent: str
) -> None:
    made = tmp_path / "made"
    policy = str(file_policy(tmp_path / "site.yaml", "deep", made))
    done = _initiator(tmp_path, lab, agent).run(
        policy, "--remote", _url(lab, "a"),
        "--remote", f"{_url(lab, 'd')} via:{_url(lab, 'a')}", "--converged-timeout", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[d] bootstrap:" in done.stdout and "[a] bootstrap:" in done.stdout
    assert any("Accepted publickey for root from 10.200.1.129" in x for x in lab.sshd["d"].log)


def test_remote_depth_2_has_the_first_level_bootstrap_the_second(
    tmp_path: Path, lab: SshLab, agent: str
) -> None:
    made = tmp_path / "made"
    policy = str(file_policy(tmp_path / "site.yaml", "fan", made))
    done = _initiator(tmp_path, lab, agent).run(
        policy, "--remote", _url(lab, "a"), "--remote", _url(lab, "b"),
        "--remote-depth", "2", "--cconns", "1", "--converged-timeout", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[b] bootstrap:" in done.stdout
    accepted = [x for x in lab.sshd["b"].log if "Accepted publickey" in x]
    assert accepted and f"from {lab.address['a']} " in accepted[-1]


def test_a_host_cut_off_mid_run_is_named_and_the_others_finish(tmp_path: Path, lab: SshLab) -> None:
    graphs = []
    for host in "abc":
        graph = tmp_path / f"{host}.yaml"
        made = tmp_path / f"made-{host}"
        graph.write_text(
            f'remote: {_url(lab, host)}\nresources:\n  - file: {made}\n    content: "x\\n"\n'
        )
        graphs.append(str(graph))
    with _initiator(tmp_path, lab).start(*graphs, "--converged-timeout", "8") as run:
        waiting = {f"[{h}] file[{tmp_path / f'made-{h}'}]: created" for h in "abc"}
        while waiting:
            waiting.discard(run.wait_for_line(lambda line: line in waiting, 60))
        lab.link_down("c")
        try:
            assert run.proc.wait(60) == 1
        finally:
            lab.link_up("c")
    errors = "\n".join(run.err)
    assert "[c] c: connection lost" in errors, errors
    assert "failed on c (not run)" in errors
    assert any(line.startswith("[a] resources: 1, repaired: 1 (1 resource)") for line in run.out)
    assert any(line.startswith("[b] resources: 1, repaired: 1 (1 resource)") for line in run.out)
