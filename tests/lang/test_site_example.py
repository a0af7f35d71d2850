"""examples/site/ (one policy, two roles) runs as the README's tour says."""

from __future__ import annotations

from pathlib import Path

from tests.lang.support import cli

SITE = Path(__file__).resolve().parents[2] / "examples" / "site" / "site.yaml"


def _run(tmp_path: Path, *args: str) -> str:
    done = cli(
        "run",
        str(SITE),
        "--set",
        f"root={tmp_path / 'root'}",
        "--state-dir",
        str(tmp_path / "state"),
        "--converged-timeout",
        "0",
        *args,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_web_role_makes_a_site_per_entry_of_sites(tmp_path: Path) -> None:
    _run(tmp_path, "--class", "web")
    root = tmp_path / "root"
    assert (root / "etc" / "site-main.conf").read_text() == (f"listen 8080\nroot {root}/srv/main\n")
    assert "<h1>Documentation</h1>" in (root / "srv" / "docs" / "index.html").read_text()
    assert "Admins: alice, bob." in (root / "etc" / "motd").read_text()
    assert not (root / "var").exists()  # not a db host
    again = _run(tmp_path, "--class", "web")
    assert again.splitlines()[-1].startswith("resources: 15, repaired: 0, failed: 0")


def test_the_db_role_makes_a_grant_per_admin(tmp_path: Path) -> None:
    _run(tmp_path, "--class", "db")
    root = tmp_path / "root"
    grants = sorted(p.name for p in (root / "var" / "db-main").iterdir())
    assert grants == ["grants-alice", "grants-bob"]
    assert not (root / "srv").exists()  # not a web host


def test_a_host_with_neither_role_gets_the_common_part(tmp_path: Path) -> None:
    out = _run(tmp_path)
    assert "resources: 8," in out.splitlines()[-1]


def test_check_and_graph_see_both_roles(tmp_path: Path) -> None:
    check = cli("check", str(SITE), "--strict", "--class", "web", "--class", "db")
    assert check.returncode == 0, check.stderr
    graph = cli("graph", str(SITE), "--class", "web", "--class", "db")
    assert graph.returncode == 0, graph.stderr
    for use in ("webserver[main]", "webserver[docs]", "database[main]"):
        assert f'label="{use}"' in graph.stdout
