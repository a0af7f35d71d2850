"""An agent on the etcd world in its own process, for the tests that kill one with -9.

``python -m tests.world.etcd_agent ENDPOINTS HOSTNAME TTL`` (ENDPOINTS comma separated)
starts an :class:`~convergent.world.etcd.EtcdWorld`, writes
``/convergent/hosts/HOSTNAME/leased`` (on its session lease) and ``.../durable``, takes
the lock ``deploy``, prints ``holding`` and waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from convergent.world import keys
from convergent.world.etcd import EtcdWorld

__all__ = ["main"]


async def main(endpoints: list[str], hostname: str, ttl: float) -> None:
    async with EtcdWorld(endpoints, hostname=hostname, ttl=ttl) as world:
        await world.set(keys.host_key(hostname, "leased"), "while I live", lease=True)
        await world.set(keys.host_key(hostname, "durable"), "for good")
        async with world.lock("deploy"):
            print("holding", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].split(","), sys.argv[2], float(sys.argv[3])))
