"""An agent on a plaintext cluster finds it with one request on its world's own
connection: the members a seed names become its endpoints; seeds where nothing listens
give a clear error naming each, and nothing is applied."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.etcd_support import etcd_cluster, free_ports, require_etcd


def test_seeds_where_nothing_listens_are_each_named_and_nothing_is_applied(
    tmp_path: Path,
) -> None:
    seeds = [f"http://127.0.0.1:{port}" for port in free_ports(2)]
    made = tmp_path / "made"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'resources:\n  - file: {made}\n    content: "x\\n"\n')
    done = subprocess.run(
        [sys.executable, "-m", "convergent", "run", str(policy), "--hostname", "b",
         "--state-dir", str(tmp_path / "state"), "--seeds", ",".join(seeds), "--insecure",
         "--converged-timeout", "0"],
        capture_output=True, text=True, timeout=60, env=os.environ, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "no seed answered" in done.stderr
    for seed in seeds:
        assert f"{seed}: nothing listens there" in done.stderr
    assert not made.exists()


def test_a_seed_gives_every_member_and_the_world_goes_on_over_that_connection(
    tmp_path: Path,
) -> None:
    from convergent.world.etcd import EtcdWorld

    require_etcd()
    with etcd_cluster(tmp_path, 3) as cluster:
        urls = [m.endpoint for m in cluster.members]
        cluster.wait_published(urls[1])

        async def main() -> None:
            async with asyncio.timeout(30):
                world = EtcdWorld([urls[1]], hostname="b")
                found = await world.discover()
                assert sorted(found) == sorted(urls)
                assert world.endpoints[0] == urls[1] and sorted(world.endpoints) == sorted(urls)
                await world.start()
                assert world.endpoint == urls[1]  # the connection discovery used
                await world.set("/convergent/hosts/b/kv/k", "v")
                assert await world.get("/convergent/hosts/b/kv/k") == "v"
                await world.aclose()

        asyncio.run(main())
