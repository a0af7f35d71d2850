"""Hierarchical fan-out in network namespaces (10.200.1.0/24): initiator -> a -> d,
where d is reachable from a only. The initiator bootstraps a; a's relay bootstraps d
from the single file a already has, logging in with the initiator's ssh agent forwarded
to a (a real ``ssh-agent`` holds the test's key), and writes d's lines up; d joins the
initiator's world through the chain of reverse forwards.

The lab is made once for the module; every process in it is killed by PID and the
namespaces deleted at the end. Skipped where namespaces cannot be made (not root)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.support import Initiator
from tests.remote.test_world_tunnel import mgmt_graph
from tests.sshd_support import ClientKeys, SshLab, client_keys, needs_sshd, ssh_agent, ssh_lab

pytestmark = [needs_sshd, pytest.mark.slow, pytest.mark.timeout(180)]
__all__ = ["client_keys"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, client_keys: ClientKeys) -> Iterator[SshLab]:
    where = tmp_path_factory.mktemp("lab")
    with ssh_lab(where, client_keys, ("a", "d"), behind={"d": "a"}) as made:
        yield made


def _initiator(tmp_path: Path, lab: SshLab, agent: str | None) -> Initiator:
    initiator = Initiator(tmp_path / "laptop", lab.keys.key, agent)
    lab.known_hosts(initiator.known_hosts)
    return initiator


def _url(lab: SshLab, host: str) -> str:
    return f"ssh://root@{lab.address[host]}#{host}"


def _graphs(tmp_path: Path, lab: SshLab, root: Path) -> list[str]:
    """a's and d's mgmt graphs (each exports a file and collects the other's); d's
    ``remote:`` puts it behind a."""
    graphs = []
    for host in "ad":
        (root / host).mkdir(parents=True)
        graph = mgmt_graph(tmp_path / f"{host}.yaml", host, _url(lab, host).split("#")[0], root)
        if host == "d":
            text = graph.read_text().replace("#d\n", f"#d via:{_url(lab, 'a')}\n", 1)
            graph.write_text(text)
        graphs.append(str(graph))
    return graphs


def test_the_first_level_bootstraps_the_second_and_they_trade(tmp_path: Path, lab: SshLab) -> None:
    root = tmp_path / "hosts"
    graphs = _graphs(tmp_path, lab, root)
    with ssh_agent(tmp_path, lab.keys.key) as agent:
        before = lab.bytes_to("a")
        done = _initiator(tmp_path, lab, agent).run(
            *graphs, "--converged-timeout", "1", "--no-caching"
        )
        sent = lab.bytes_to("a") - before
    assert done.returncode == 0, done.stdout + done.stderr
    for me, other in ("ad", "da"):
        shared = root / me / f"shared-{other}"
        assert shared.exists(), done.stdout + done.stderr
        assert shared.read_text() == f"shared by {other}\n"
    size = next((lab.sshd["a"].home / "dist").glob("*/convergent.pyz")).stat().st_size
    assert f"[a] bootstrap: {size} bytes copied" in done.stdout
    assert f"[d] bootstrap: {size} bytes copied" in done.stdout  # a copied it onward
    assert any(line.startswith("[d] resources: ") for line in done.stdout.splitlines())
    # the initiator's link carried the single file once (to a), not once per host
    assert size < sent < size + size // 2, (size, sent)
    accepted = [x for x in lab.sshd["d"].log if "Accepted publickey" in x]
    assert accepted and "from 10.200.1.129 " in accepted[-1]  # a logged in, not the laptop


def test_a_failing_host_behind_another_is_named_and_the_run_fails(
    tmp_path: Path, lab: SshLab
) -> None:
    made = tmp_path / "made"
    policies = []
    for host, cmd in (("a", "/bin/true"), ("d", "/bin/false")):
        remote = _url(lab, host) + (f" via:{_url(lab, 'a')}" if host == "d" else "")
        policy = tmp_path / f"{host}.yaml"
        policy.write_text(
            f'remote: {remote}\nresources:\n  - file: {made}-{host}\n    content: "x\\n"\n'
            f"  - exec: check-{host}\n    cmd: [{cmd}]\n"
        )
        policies.append(str(policy))
    with ssh_agent(tmp_path, lab.keys.key) as agent:
        done = _initiator(tmp_path, lab, agent).run(*policies, "--converged-timeout", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed on d (exit 1)" in done.stderr, done.stderr
    assert "failed on a" not in done.stderr.replace("failed on d", "")
    assert any(line.startswith("[d] exec[check-d]") for line in done.stdout.splitlines() +
               done.stderr.splitlines()), done.stdout + done.stderr  # fmt: skip
    assert (Path(f"{made}-d")).read_text() == "x\n"


def test_a_first_level_host_that_cannot_log_in_onward_names_both(
    tmp_path: Path, lab: SshLab
) -> None:
    """The agent holds a key d does not accept (a is logged in to with --identity)."""
    made = tmp_path / "made"
    policy = tmp_path / "site.yaml"
    policy.write_text(f'resources:\n  - file: {made}\n    content: "x\\n"\n')
    with ssh_agent(tmp_path, lab.keys.wrong) as agent:
        done = _initiator(tmp_path, lab, agent).run(
            str(policy), "--remote", _url(lab, "a"),
            "--remote", f"{_url(lab, 'd')} via:{_url(lab, 'a')}", "--converged-timeout", "0",
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"[d] d (ssh://root@{lab.address['d']}, reached from a): " in done.stderr
    assert "refused the keys of the ssh agent the initiator forwarded to a" in done.stderr
    assert "failed on d (not run)" in done.stderr
    assert "failed on a" not in done.stderr


def test_saving_the_policy_reaches_the_host_behind_and_ctrl_c_stops_it(
    tmp_path: Path, lab: SshLab
) -> None:
    """d's policy is copied to a's relay, which copies it on to d; Ctrl-C on the
    initiator stops the relay and d's agent too (and the run exits 0)."""
    a, d = _url(lab, "a"), _url(lab, "d")

    def policy(host: str, remote: str, content: str) -> Path:
        path = tmp_path / f"{host}.yaml"
        new = tmp_path / f"{host}.yaml.new"
        made = tmp_path / f"made-{host}"
        new.write_text(
            f'remote: {remote}\nresources:\n  - file: {made}\n    content: "{content}\\n"\n'
        )
        new.rename(path)
        return path

    policies = [str(policy("a", a, "one")), str(policy("d", f"{d} via:{a}", "one"))]
    with (
        ssh_agent(tmp_path, lab.keys.key) as agent,
        _initiator(tmp_path, lab, agent).start(*policies) as run,
    ):
        run.wait_for_line(lambda line: line.startswith("[d] converged"), 60)
        policy("d", f"{d} via:{a}", "two")
        run.wait_for_line(lambda line: line.startswith("[d] policy reloaded"), 60)
        run.wait_for_line(lambda line: line.startswith(f"[d] file[{tmp_path}/made-d]: "), 60)
        assert (tmp_path / "made-d").read_text() == "two\n"
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(60) == 0
    assert any("[d] SIGTERM: stopping" in line for line in run.err + run.out)
    assert (tmp_path / "made-a").read_text() == "one\n"
