"""``pkg`` without changing the machine: names and versions checked at load, the dpkg
status and ``apt-cache policy`` readers, grouping, automatic edges from the file list,
and the choice of backend."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from convergent.errors import ParamError
from convergent.graph import Graph
from convergent.resources import pkg_apt
from convergent.resources.base import Context, Resource
from convergent.resources.file import File
from convergent.resources.group import Group, prepare
from convergent.resources.pkg import Pkg, _backend
from convergent.resources.pkg_apt import Apt, installed_versions, parse_policy

STATUS = """\
Package: sl
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 5.02-1+b1
Description: Correct you if you type `sl' by mistake
 Sl is a program that can display animations
 Package: hello

Package: hello
Status: deinstall ok config-files
Architecture: amd64
Version: 2.10-3

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4

Package: cowsay
Status: install ok half-configured
Architecture: all
Version: 3.03+dfsg2-8
"""

POLICY = """\
sl:
  Installed: 5.02-1+b1
  Candidate: 5.02-1+b1
  Version table:
 *** 5.02-1+b1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
     5.02-1 100
        100 http://deb.debian.org/debian bullseye/main amd64 Packages
hello:
  Installed: (none)
  Candidate: 2.10-3
  Version table:
     2.10-3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
mail-transport-agent:
  Installed: (none)
  Candidate: (none)
  Version table:
"""


def test_installed_versions_reads_only_installed_stanzas(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(STATUS)
    found = installed_versions(
        ["sl", "hello", "cowsay", "libc6", "libc6:i386", "nosuch", "Package"], str(status)
    )
    assert found == {
        "sl": "5.02-1+b1",
        "hello": None,  # only its config files are left
        "cowsay": None,  # half-configured is not installed
        "libc6": "2.36-9",
        "libc6:i386": "2.36-9",
        "nosuch": None,
        "Package": None,  # a description line is not a stanza
    }


def test_parse_policy_reads_candidates_and_every_known_version() -> None:
    offered = parse_policy(POLICY)
    assert offered["sl"].candidate == "5.02-1+b1"
    assert offered["sl"].versions == ("5.02-1+b1", "5.02-1")
    assert offered["hello"].versions == ("2.10-3",)
    assert offered["mail-transport-agent"].candidate is None
    assert "nosuch" not in offered


@pytest.mark.parametrize(
    "name", ["-oAPT::Get::AllowUnauthenticated=1", "--purge", "sl hello", "sl;rm", "a/b", "é"]
)
def test_a_name_apt_could_read_as_an_option_or_two_names_is_refused(name: str) -> None:
    with pytest.raises(ParamError, match="is not a package name"):
        Pkg(name)


@pytest.mark.parametrize("state", ["installed", "absent", "latest", "5.02-1+b1", "1:1.99.1-7.3"])
def test_states_and_versions_are_accepted(state: str) -> None:
    assert Pkg("sl", state=state).params.state == state


@pytest.mark.parametrize("state", ["present", "-1", "1 2", "v1.0", ""])
def test_a_state_that_is_neither_a_word_nor_a_version_is_refused(state: str) -> None:
    with pytest.raises(ParamError, match="give installed, absent, latest or a version"):
        Pkg("sl", state=state)


def test_packages_group_by_backend_and_lists_policy() -> None:
    g: Graph[Resource[Any]] = Graph()
    for name in ("sl", "cowsay", "hello"):
        g.add(Pkg(name))
    g.add(Pkg("vim", backend="apt"))
    g.add(Pkg("nano", backend="apt", update_cache="never"))
    prepared = prepare(g)
    groups = [v for v in prepared.vertices.values() if isinstance(v, Group)]
    assert [v.id for v in groups] == ["autogroup[pkg:cowsay,hello,sl]"]
    assert {"pkg[vim]", "pkg[nano]"} <= set(prepared.vertices)


def test_a_file_the_package_ships_or_under_its_directory_comes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "info"
    info.mkdir()
    (info / "sl.list").write_text(
        "/.\n/etc\n/etc/sl\n/etc/sl/sl.conf\n/usr\n/usr/games\n/usr/games/sl\n"
        "/usr/share\n/usr/share/doc\n/usr/share/doc/sl\n"
    )
    monkeypatch.setattr(pkg_apt, "ADMINDIR", str(tmp_path))
    g: Graph[Resource[Any]] = Graph()
    g.add(Pkg("sl"))
    g.add(Pkg("hello", state="absent"))
    for path in ("/etc/sl/sl.conf", "/etc/sl/extra.conf", "/etc/motd", "/usr/share/doc/x"):
        g.add(File(path, content="x\n"))
    prepared = prepare(g)
    edges = {(e.source, e.target) for e in prepared.edges()}
    group = "autogroup[pkg:hello,sl]"  # the edges reach the group pkg[sl] is in
    assert edges == {(group, "file[/etc/sl/sl.conf]"), (group, "file[/etc/sl/extra.conf]")}
    assert "file:/usr/games/sl" in Pkg("sl").provides()
    assert Pkg("sl", state="absent").provides() == ["pkg:sl"]


def test_auto_picks_apt_when_there_is_no_system_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    shared: dict[Any, Any] = {}

    def share(factory: Any) -> Any:
        if factory not in shared:
            shared[factory] = factory()
        return shared[factory]

    ctx = Context("pkg[sl]", ready=lambda: None, event=lambda: None, log=print, shared=share)

    async def go() -> object:
        return await asyncio.wait_for(_backend(ctx, "auto"), 10)

    assert isinstance(asyncio.run(go()), Apt)


def test_a_service_comes_after_the_package_that_ships_its_unit() -> None:
    """From dpkg's real file list: packagekit ships packagekit.service (make test installs
    it), so pkg[packagekit] comes before svc[packagekit]."""
    from convergent.graph.autoedge import plan_autoedges
    from convergent.resources.pkg import Pkg
    from convergent.resources.pkg_apt import file_list
    from convergent.resources.svc import Svc

    shipped = file_list("packagekit")
    if not any(p.endswith("/systemd/system/packagekit.service") for p in shipped):
        pytest.skip("packagekit is not installed here")
    g: Graph[Any] = Graph()
    g.add(Svc("packagekit"))
    g.add(Pkg("packagekit"))
    added = {(e.source, e.target) for e in plan_autoedges(g).added}
    assert ("pkg[packagekit]", "svc[packagekit]") in added
