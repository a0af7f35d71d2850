"""The test etcd helpers: members start on free ports, form one cluster, die by SIGKILL."""

from __future__ import annotations

from pathlib import Path

from tests.etcd_support import etcd_cluster, etcd_member, require_etcd


def test_a_test_member_serves_and_dies_by_sigkill(tmp_path: Path) -> None:
    require_etcd()
    with etcd_member(tmp_path) as member:
        assert member.alive and member.endpoint.startswith("http://127.0.0.1:")
        member.kill()
        assert member.process is not None and member.process.returncode == -9


def test_a_test_cluster_has_three_members_and_a_killed_one_restarts(tmp_path: Path) -> None:
    require_etcd()
    with etcd_cluster(tmp_path, 3) as cluster:
        assert len(set(cluster.endpoints)) == 3
        assert all(m.alive for m in cluster.members)
        victim = cluster.members[0]
        victim.kill()
        assert not victim.alive
        cluster.restart(victim)
        assert victim.alive
    assert not any(m.alive for m in cluster.members)
