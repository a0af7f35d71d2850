"""Helpers of the cluster tests: fast etcd timings, skips; free loopback ports come from
``tests/etcd_support.py``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.etcd_support import free_ports

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
