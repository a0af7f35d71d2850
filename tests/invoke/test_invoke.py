"""``convergent invoke``: just the invocation's bundles and what they require, in
dependency order, with its switches as template variables; unknown names refused with
the valid ones. Observed on real files (inotify for the order)."""

from __future__ import annotations

from pathlib import Path

from tests.destroy.inotify import Arrivals
from tests.invoke.site import invoke, site


def test_invoke_runs_its_bundles_and_what_they_require_in_order(tmp_path: Path) -> None:
    policy = site(tmp_path)
    out = tmp_path / "out"
    arrivals = Arrivals(str(out))
    try:
        done = invoke(policy, "deploy")
        assert done.returncode == 0, done.stdout + done.stderr
        names = arrivals.read(3)
    finally:
        arrivals.close()
    assert names[0] == f"{out}/base"  # required by both uses of web, so first
    assert sorted(names[1:]) == [f"{out}/web-backup.conf", f"{out}/web-main.conf"]
    assert sorted(p.name for p in out.iterdir()) == ["base", "web-backup.conf", "web-main.conf"]
    assert (out / "web-main.conf").read_text() == "port=8080 release=1.0\n"


def test_switches_are_the_policys_template_variables(tmp_path: Path) -> None:
    policy = site(tmp_path)
    done = invoke(policy, "deploy", "--set", "release=2.5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "web-backup.conf").read_text() == "port=80 release=2.5\n"


def test_l_runs_some_of_the_methods(tmp_path: Path) -> None:
    policy = site(tmp_path)
    done = invoke(policy, "both", "-l", "db")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["db-main.conf"]


def test_unknown_names_are_refused_with_the_valid_ones(tmp_path: Path) -> None:
    policy = site(tmp_path)
    cases = {
        ("nope",): "no invocation named 'nope'; its invocations: both, deploy",
        ("deploy", "-l", "db"): "-l db: invocation deploy may run web",
        ("deploy", "--set", "colour=red"): (
            "--set colour: invocation deploy has no switch 'colour'; its switches: release, token"
        ),
        (
            "both",
            "--set",
            "release=2",
        ): "invocation both has no switch 'release'; its switches: none",
    }
    for args, message in cases.items():
        done = invoke(policy, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "nothing was changed" in done.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_a_wrong_invocation_is_a_policy_error_at_its_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "invocations:\n"
        "  go:\n"
        "    methods: [web]\n"
        "    switches: {port: {type: integer}}\n"
        "    guard: {require_noop_first: soon, max_changes: -1, colour: red}\n"
        "resources: []\n"
    )
    done = invoke(policy, "go")
    assert done.returncode == 2
    assert f"{policy}:4:29: invocation go: switch port: type 'integer'" in done.stderr
    assert f"{policy}:5:33: invocation go: guard: require_noop_first: 'soon' is not" in done.stderr
    assert f"{policy}:5:52: invocation go: guard: max_changes: a number" in done.stderr
    assert f"{policy}:5:56: invocation go: unknown guard rail 'colour'" in done.stderr
