"""Helpers of the cluster tests: free loopback ports, fast etcd timings, TLS skips."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest

__all__ = ["fast_etcd", "free_ports", "needs_etcd", "needs_tls"]

needs_etcd = pytest.mark.skipif(
    shutil.which("etcd") is None, reason="etcd is not installed: apt-get install etcd-server"
)

try:
    import cryptography  # noqa: F401

    _TLS = True
except ImportError:
    _TLS = False

needs_tls = pytest.mark.skipif(
    not _TLS, reason="the cryptography package is missing: pip install cryptography"
)


def free_ports(count: int) -> list[int]:
    """``count`` loopback ports nobody listens on now (all held open together, so they
    differ)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


@pytest.fixture
def fast_etcd() -> Iterator[None]:
    """Members started in this test (and by agents it starts) elect a leader in ~0.1 s."""
    old = os.environ.get("CONVERGENT_ETCD_TIMING")
    os.environ["CONVERGENT_ETCD_TIMING"] = "10,100"
    try:
        yield
    finally:
        if old is None:
            del os.environ["CONVERGENT_ETCD_TIMING"]
        else:
            os.environ["CONVERGENT_ETCD_TIMING"] = old
