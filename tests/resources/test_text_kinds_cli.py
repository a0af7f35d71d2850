"""``line``, ``cron`` and ``download`` through the real ``convergent run``: --noop changes
nothing, a run makes the changes, a second run changes nothing (and fetches nothing)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.e2e.agent import convergent
from tests.resources.httpserver import Server

BODY = b"payload\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="cron.d files are given to root")
def test_noop_then_run_then_a_second_run_that_changes_nothing(tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    conf.write_bytes(b"# keep me\r\nport=80\n")
    with Server() as server:
        server.files["/payload"] = BODY
        policy = tmp_path / "site.yaml"
        policy.write_text(
            "resources:\n"
            f"  - line: port\n    path: {conf}\n    match: '^port='\n    text: port=8080\n"
            f"  - line: debug\n    path: {conf}\n    text: debug=0\n    insert_before: '^port='\n"
            f"  - cron: rotate\n    cron_dir: {tmp_path / 'cron.d'}\n    minute: '*/10'\n"
            "    cmd: /usr/sbin/logrotate /etc/logrotate.conf\n"
            f"  - download: {tmp_path / 'payload'}\n    url: {server.url('/payload')}\n"
            f"    sha256: {hashlib.sha256(BODY).hexdigest()}\n"
        )
        args = ["run", str(policy), "--state-dir", str(tmp_path / "state")]
        args += ["--converged-timeout", "0"]

        noop = convergent(*args, "--noop")
        assert noop.returncode == 0, noop.stderr
        assert "noop: 4 would change, 0 may change; nothing was changed" in noop.stdout
        assert conf.read_bytes() == b"# keep me\r\nport=80\n"
        assert not (tmp_path / "cron.d").exists() and not (tmp_path / "payload").exists()
        assert server.log == []

        first = convergent(*args)
        assert first.returncode == 0, first.stderr
        assert "repaired: 4 (4 resources), failed: 0" in first.stdout
        assert conf.read_bytes() == b"# keep me\r\ndebug=0\r\nport=8080\n"
        assert (
            (tmp_path / "cron.d" / "rotate")
            .read_text()
            .endswith("*/10 * * * * root /usr/sbin/logrotate /etc/logrotate.conf\n")
        )
        assert (tmp_path / "payload").read_bytes() == BODY

        second = convergent(*args)
        assert second.returncode == 0, second.stderr
        assert "repaired: 0, failed: 0" in second.stdout
        assert len(server.log) == 1


@pytest.mark.parametrize("kind", ["line", "cron", "download"])
def test_no_parameter_takes_the_name_of_an_entry_key_or_the_kind(kind: str) -> None:
    from convergent.policy.entries import ENTRY_KEY_NAMES
    from convergent.resources.base import get_kind, param_fields

    cls = get_kind(kind)
    assert cls is not None
    names = set(param_fields(cls.params_type))
    assert not names & (ENTRY_KEY_NAMES | {kind})


def test_automatic_edges_order_the_file_directory_and_owner_first() -> None:
    from convergent.resources.cron import Cron
    from convergent.resources.download import Download
    from convergent.resources.line import Line

    line = Line("l", path="/etc/ssh/sshd_config", text="x")
    assert line.needs()[0] == ("file:/etc/ssh/sshd_config",)
    assert list(line.needs()[1])[:2] == ["file:/etc/ssh", "file:/etc"]
    cron = Cron("job", cmd="true", user="backup")
    assert cron.provides() == ("file:/etc/cron.d/job",)
    assert list(cron.needs()[0])[:1] == ["file:/etc/cron.d"]
    assert cron.needs()[1] == ("user:backup",)
    download = Download("/opt/t", url="https://e.org/t", sha256="0" * 64, owner="app", group="33")
    assert download.provides() == ("file:/opt/t",)
    assert download.needs()[1:] == (("user:app",), ("gid:33",))


def test_line_and_download_never_create_a_missing_directory_cron_says_it_does(
    tmp_path: Path,
) -> None:
    from convergent.errors import ResourceError
    from convergent.resources.cron import Cron
    from convergent.resources.download import Download
    from convergent.resources.line import Line
    from tests.resources.kinds import check

    missing = tmp_path / "missing"
    for resource in (
        Line("l", path=str(missing / "f"), text="x", create=True),
        Download(str(missing / "f"), url="http://127.0.0.1:9/f", sha256="0" * 64),
    ):
        with pytest.raises(ResourceError, match=f"the directory of {missing / 'f'} does not"):
            check(resource)
    change = check(Cron("job", cmd="true", cron_dir=str(missing)))
    assert change is not None and change.summary == f"created, with the directory {missing}"
    assert not missing.exists()
