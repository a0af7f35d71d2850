"""``convergent report`` and ``run --report-json``: counts, compliance, hot spots and the
slowest, from the real history of real runs; every JSON report validates against the
published schema (docs/report-schema.json)."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import jsonschema

from convergent.state.events import EventStore
from tests.e2e.agent import convergent

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "report-schema.json").read_text()
)


def _valid(report: dict[str, Any]) -> dict[str, Any]:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(report, SCHEMA, cls=jsonschema.Draft202012Validator)
    return report


def _policy(tmp_path: Path, *, fail: bool = False) -> Path:
    text = f"""
        resources:
          - file: {tmp_path}/a
            content: "a\\n"
          - file: {tmp_path}/b
            content: "b\\n"
    """
    if fail:
        text += """
          - exec: broken
            cmd: [sh, -c, "echo no >&2; exit 3"]
        """
    policy = tmp_path / "p.yaml"
    policy.write_text(textwrap.dedent(text).lstrip("\n"))
    return policy


def test_a_run_report_counts_what_the_run_did_and_follows_the_schema(tmp_path: Path) -> None:
    policy = _policy(tmp_path, fail=True)
    out = tmp_path / "report.json"
    state = str(tmp_path / "state")
    run = ["run", str(policy), "--state-dir", state, "--converged-timeout", "0"]
    done = convergent(*run, "--report-json", str(out))
    assert done.returncode == 1
    report = _valid(json.loads(out.read_text()))
    assert out.stat().st_mode & 0o777 == 0o600
    assert report["version"] == 1 and report["kind"] == "run"
    assert report["run"]["repairs"] == 2 and report["run"]["repaired_resources"] == 2
    assert report["run"]["failed"] == 1 and report["run"]["exit_code"] == 1
    by = {r["resource"]: r for r in report["resources"]}
    assert by[f"file[{tmp_path}/a]"]["repaired"] == 1
    assert by["exec[broken]"]["failed"] == 1
    assert by["exec[broken]"]["last_outcome"] == "failed"
    totals = report["totals"]
    good = totals["kept"] + totals["repaired"]
    assert report["compliance"] == round(100 * good / (good + totals["failed"]), 2)
    assert report["compliance"] < 100
    assert {e["cause"] for e in report["events"]} >= {"start-up"}

    again = convergent(*run, "--noop", "--report-json", str(out))
    assert again.returncode == 0, again.stderr
    noop = _valid(json.loads(out.read_text()))
    assert noop["noop"] is True and noop["totals"]["repaired"] == 0
    assert noop["totals"]["would_change"] == 1  # the command would run


def test_report_shows_compliance_hot_spots_and_slowest_over_a_window(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    now = time.time()
    store = EventStore(str(state))
    old = (now - 7200, "h", "file[/old]", "failed", 0.5, "gone", "drift")
    store.add(old)
    for i in range(3):
        store.add((now - 60 + i, "h", "file[/hot]", "repaired", 0.01, "created", "drift"))
    store.add((now - 30, "h", "file[/hot]", "repaired", 0.01, "created", "start-up"))
    store.add((now - 20, "h", "exec[slow]", "kept", 2.5, "in the desired state", "timer"))
    store.add((now - 10, "h", "exec[bad]", "failed", 0.1, "exited with 3", "drift"))
    store.flush(now)
    store.close()

    text = convergent("report", "--state-dir", str(state), "--since", "1h")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "compliance: 83.3% (kept 1, repaired 4, not kept 1)" in lines
    assert "  file[/hot]: 3" in lines  # the start-up repair is not drift
    slowest = lines.index("slowest (longest check/apply):")
    assert lines[slowest + 1] == "  exec[slow]: 2.500 s"
    assert "file[/old]" not in text.stdout

    raw = convergent("report", "--state-dir", str(state), "--json")
    assert raw.returncode == 0, raw.stderr
    report = _valid(json.loads(raw.stdout))
    assert report["kind"] == "history" and report["since"] is None
    assert report["totals"]["failed"] == 2
    assert report["hot_spots"] == [{"resource": "file[/hot]", "repaired": 3}]


def test_report_of_an_empty_history_says_so_and_a_bad_window_changes_nothing(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    empty = convergent("report", "--state-dir", str(state), "--since", "1h")
    assert empty.returncode == 0, empty.stderr
    assert "no events in this window" in empty.stdout
    raw = convergent("report", "--state-dir", str(state), "--json")
    assert _valid(json.loads(raw.stdout))["compliance"] is None
    bad = convergent("report", "--state-dir", str(state), "--since", "soon")
    assert bad.returncode == 2
    assert "'soon' is not a duration" in bad.stderr
    assert not state.exists()


def test_a_relative_report_path_is_the_working_directorys(tmp_path: Path) -> None:
    """Not / (the host layer's paths start there): ``--report-json report.json`` run in
    a directory writes that directory's report.json."""
    import subprocess
    import sys

    policy = _policy(tmp_path)
    state = str(tmp_path / "state")
    run = ["run", str(policy), "--state-dir", state, "--converged-timeout", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "convergent", *run, "--report-json", "rel-report.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert _valid(json.loads((tmp_path / "rel-report.json").read_text()))["kind"] == "run"
    assert not Path("/rel-report.json").exists()
