"""Facts about this host, each gathered the first time it is asked for.

:class:`Facts` is a read-only mapping: ``facts["hostname"]``, ``facts["os"]["family"]``,
``{{ facts.hostname }}`` in a policy. Nothing is read before a fact is asked for, and a
fact is read once per :class:`Facts` (once per load of a policy). :func:`hard_classes`
derives the CFEngine-style classes (``linux``, ``debian``, ``debian_12``, ``x86_64``,
``container``, the host's name) from them.

=============  ==================================================================
``hostname``   the short host name (``uname -n`` up to the first dot)
``fqdn``       the fully qualified name (the canonical name of the host name)
``os``         ``{id, family, name, version, version_id, codename}`` from /etc/os-release
``kernel``     ``{name, release, version}`` (uname)
``arch``       the machine (``x86_64``, ``aarch64``)
``cpus``       the number of CPUs this process may use
``memory``     total memory in bytes (/proc/meminfo)
``interfaces`` interface -> its IP addresses (IPv4 first)
``virtual``    ``{container, hypervisor}``: the container or hypervisor this runs in, or ""
``version``    convergent's own version
=============  ==================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["FACT_NAMES", "Facts", "canonical", "hard_classes"]


def _read(path: str, limit: int = 65536) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _hostname() -> str:
    return os.uname().nodename.split(".", 1)[0]


def _fqdn() -> str:
    import socket

    name = os.uname().nodename
    try:
        found = socket.getaddrinfo(name, None, flags=socket.AI_CANONNAME)
    except OSError:
        return name
    for _, _, _, canon, _ in found:
        if canon:
            return canon
    return name


def _os_release() -> dict[str, str]:
    fields: dict[str, str] = {}
    text = _read("/etc/os-release") or _read("/usr/lib/os-release")
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip().isidentifier():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            fields[key.strip()] = value
    return fields


def _os() -> dict[str, str]:
    fields = _os_release()
    os_id = fields.get("ID", "linux")
    like = fields.get("ID_LIKE", "").split()
    return {
        "id": os_id,
        "family": like[-1] if like else os_id,
        "name": fields.get("NAME", ""),
        "version": fields.get("VERSION", ""),
        "version_id": fields.get("VERSION_ID", ""),
        "codename": fields.get("VERSION_CODENAME", ""),
    }


def _kernel() -> dict[str, str]:
    u = os.uname()
    return {"name": u.sysname.lower(), "release": u.release, "version": u.version}


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def _memory() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else 0
    return 0


def _interfaces() -> dict[str, list[str]]:
    import fcntl
    import socket
    import struct

    found: dict[str, list[str]] = {}
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            addrs: list[str] = []
            try:
                raw = fcntl.ioctl(sock.fileno(), siocgifaddr, struct.pack("256s", name.encode()))
                addrs.append(socket.inet_ntoa(raw[20:24]))
            except OSError:
                pass
            found[name] = addrs
    for line in _read("/proc/net/if_inet6").splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[5] in found:
            hexa = parts[0]
            packed = bytes.fromhex(hexa)
            found[parts[5]].append(socket.inet_ntop(socket.AF_INET6, packed))
    return found


def _virtual() -> dict[str, str]:
    container = ""
    systemd = _read("/run/systemd/container").strip()
    if systemd:
        container = systemd
    elif os.path.exists("/.dockerenv"):
        container = "docker"
    elif os.path.exists("/run/.containerenv"):
        container = "podman"
    else:
        environ = _read("/proc/1/environ")
        for item in environ.split("\0"):
            if item.startswith("container="):
                container = item.split("=", 1)[1] or "container"
        if not container:
            cgroup = _read("/proc/1/cgroup")
            for word in ("docker", "lxc", "kubepods", "containerd"):
                if word in cgroup:
                    container = word
                    break
    hypervisor = ""
    vendor = _read("/sys/class/dmi/id/sys_vendor") + _read("/sys/class/dmi/id/product_name")
    vendor = vendor.lower()
    for needle, name in (
        ("qemu", "kvm"),
        ("kvm", "kvm"),
        ("vmware", "vmware"),
        ("virtualbox", "virtualbox"),
        ("microsoft", "hyperv"),
        ("xen", "xen"),
        ("amazon ec2", "kvm"),
        ("google", "kvm"),
    ):
        if needle in vendor:
            hypervisor = name
            break
    return {"container": container, "hypervisor": hypervisor}


def _version() -> str:
    import sys

    version: str = sys.modules["convergent"].__version__  # the package above this one
    return version


_GATHER: dict[str, Callable[[], Any]] = {
    "hostname": _hostname,
    "fqdn": _fqdn,
    "os": _os,
    "kernel": _kernel,
    "arch": lambda: os.uname().machine,
    "cpus": _cpus,
    "memory": _memory,
    "interfaces": _interfaces,
    "virtual": _virtual,
    "version": _version,
}
#: Every fact, in the order ``convergent facts`` prints them.
FACT_NAMES = tuple(_GATHER)


class Facts(Mapping[str, Any]):
    """This host's facts, each read on first use (``given``: facts to take as they are,
    e.g. a host name from ``--hostname``)."""

    def __init__(self, given: Mapping[str, Any] | None = None) -> None:
        self._known: dict[str, Any] = dict(given or {})

    def __getitem__(self, name: str) -> Any:
        if name not in self._known:
            gather = _GATHER.get(name)
            if gather is None:
                raise KeyError(name)
            self._known[name] = gather()
        return self._known[name]

    def __iter__(self) -> Iterator[str]:
        return iter(FACT_NAMES)

    def __len__(self) -> int:
        return len(FACT_NAMES)

    def __contains__(self, name: object) -> bool:
        return name in _GATHER or name in self._known

    def gathered(self) -> tuple[str, ...]:
        """The facts read so far."""
        return tuple(self._known)


def canonical(text: str) -> str:
    """A class name made of ``text``: every character outside [A-Za-z0-9_] becomes ``_``."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in text)


def hard_classes(facts: Mapping[str, Any]) -> frozenset[str]:
    """The classes this host has by its facts (CFEngine's hard classes)."""
    found = {"any", canonical(facts["kernel"]["name"]), canonical(facts["arch"])}
    info = facts["os"]
    for os_id in {info["id"], info["family"]}:
        if os_id:
            found.add(canonical(os_id))
    version = info["version_id"]
    if version:
        major = version.split(".", 1)[0]
        found.add(canonical(f"{info['id']}_{major}"))
        if major != version:
            found.add(canonical(f"{info['id']}_{version}"))
    found.add(canonical(facts["hostname"]))
    if facts["virtual"]["container"]:
        found.add("container")
    if facts["virtual"]["hypervisor"]:
        found.update(("virtual", canonical(facts["virtual"]["hypervisor"])))
    return frozenset(c for c in found if c)
