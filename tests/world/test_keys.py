"""The world's key layout: a host's keys are under its own prefix (its converged key
apart), and names are checked."""

from __future__ import annotations

import socket

import pytest

from convergent.world import keys
from convergent.world.local import LocalWorld


def test_a_host_s_keys_are_all_under_its_own_prefix() -> None:
    assert keys.host_prefix("web1") == "/convergent/hosts/web1/"
    assert keys.alive_key("web1") == "/convergent/hosts/web1/alive"
    assert keys.converged_key("web1") == "/convergent/converged/web1"
    assert keys.export_key("web1", "file", "/etc/motd") == (
        "/convergent/hosts/web1/exports/file[/etc/motd]"
    )
    assert keys.value_key("web1", "port") == "/convergent/hosts/web1/values/port"
    assert keys.kv_key("web1", "a/b") == "/convergent/hosts/web1/kv/a/b"
    for key in (keys.export_key("web1", "file", "/x"), keys.kv_key("web1", "k")):
        assert key.startswith(keys.host_prefix("web1"))


def test_a_host_key_splits_back_into_host_and_rest() -> None:
    assert keys.split_host_key(keys.export_key("h", "file", "/a/b")) == ("h", "exports/file[/a/b]")
    assert keys.split_host_key("/convergent/hosts/h") is None
    assert keys.split_host_key("/convergent/locks/x/1") is None


def test_a_converged_key_splits_back_into_its_host() -> None:
    assert keys.split_converged_key(keys.converged_key("web1")) == "web1"
    assert keys.split_converged_key("/convergent/converged/") is None
    assert keys.split_converged_key("/convergent/converged/a/b") is None
    assert keys.split_converged_key(keys.alive_key("web1")) is None


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "tab\there", "nul\0", "x" * 254])
def test_a_host_name_that_cannot_name_a_prefix_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        keys.host_prefix(bad)
    with pytest.raises(ValueError, match="host name"):
        LocalWorld(hostname=bad)


def test_empty_key_parts_and_lock_names_with_a_slash_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty parts"):
        keys.host_key("h")
    with pytest.raises(ValueError, match="non-empty parts"):
        keys.host_key("h", "kv", "")
    with pytest.raises(ValueError, match="lock name"):
        keys.lock_prefix("a/b")


def test_the_local_world_is_named_after_the_machine_unless_told() -> None:
    assert LocalWorld().hostname == socket.gethostname()
    assert LocalWorld(hostname="web1").hostname == "web1"
