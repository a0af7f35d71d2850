"""The event history: every check/apply outcome recorded in the state directory, with its
cause, bounded, never holding a secret; the run summary counts repairs apart from the
resources repaired."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path

from convergent.state.events import EventStore, read_events
from tests.e2e.agent import Agent, convergent


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_an_agent_that_repairs_one_file_20_times_says_repaired_20_of_1_resource(
    tmp_path: Path,
) -> None:
    target = tmp_path / "f"
    target.write_text("right\n")
    policy = _write(
        tmp_path / "p.yaml",
        f"""
        resources:
          - file: {target}
            content: "right\\n"
        """,
    )
    state = tmp_path / "state"
    with Agent("run", str(policy), "--state-dir", str(state)) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"))
        for _ in range(20):
            target.unlink()
            agent.wait_for_line(lambda line: line == f"file[{target}]: created")
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0
    assert agent.out[-1].startswith("resources: 1, repaired: 20 (1 resource), failed: 0,")
    events = read_events(str(state))
    repaired = [e for e in events if e[3] == "repaired"]
    assert len(repaired) == 20
    assert {(e[2], e[5], e[6]) for e in repaired} == {(f"file[{target}]", "created", "drift")}
    assert events[0][3:4] + events[0][5:] == ("kept", "in the desired state", "start-up")
    assert all(e[1] and e[4] >= 0 for e in events)


def test_events_name_their_cause_upstream_refresh_and_start_up(tmp_path: Path) -> None:
    root = tmp_path / "d"
    policy = _write(
        tmp_path / "p.yaml",
        f"""
        resources:
          - file: {root}
            state: directory
          - file: {root}/f
            content: "x\\n"
            require: [file[{root}]]
          - exec: build
            cmd: [sh, -c, "true"]
            require: [file[{root}/f]]
            notify: [noop[done]]
          - noop: done
        """,
    )
    state = str(tmp_path / "state")
    done = convergent("run", str(policy), "--state-dir", state, "--converged-timeout", "0")
    assert done.returncode == 0, done.stderr
    assert "repaired: 3 (3 resources)" in done.stdout.splitlines()[-1]
    by_resource: dict[str, tuple[object, ...]] = {}
    for event in read_events(state):
        by_resource.setdefault(event[2], event)  # each resource's first
    assert by_resource[f"file[{root}]"][3] == "repaired"
    assert by_resource[f"file[{root}]"][6] == "start-up"
    assert by_resource["exec[build]"][3] == "repaired"
    assert by_resource["noop[done]"][6] == "refresh"


def test_an_upstream_change_is_the_cause_of_the_recheck_it_owes(tmp_path: Path) -> None:
    up, down = tmp_path / "up", tmp_path / "down"
    up.write_text("u\n")
    down.write_text("d\n")
    policy = _write(
        tmp_path / "p.yaml",
        f"""
        resources:
          - file: {up}
            content: "u\\n"
          - file: {down}
            content: "d\\n"
            require: [file[{up}]]
        """,
    )
    state = tmp_path / "state"
    with Agent("run", str(policy), "--state-dir", str(state)) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"))
        up.write_text("changed\n")
        agent.wait_for_line(lambda line: line == f"file[{up}]: content changed")
        agent.wait_for_line(lambda line: line == "converged")
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0
    causes = [(e[2], e[3], e[6]) for e in read_events(str(state))]
    assert (f"file[{up}]", "repaired", "drift") in causes
    assert (f"file[{down}]", "kept", "upstream") in causes


def test_failed_and_blocked_are_recorded_and_a_secret_never_is(tmp_path: Path) -> None:
    target = tmp_path / "db.conf"
    policy = _write(
        tmp_path / "p.yaml",
        f"""
        resources:
          - password: db
            length: 20
          - file: {target}
            mode: "0600"
            recv:
              content: password[db].password
          - exec: leak
            cmd: "true"
            shell: true
            recv:
              cmd: password[db].password
          - file: {tmp_path}/after
            content: "x"
            require: [exec[leak]]
        """,
    )
    state = tmp_path / "state"
    done = convergent("run", str(policy), "--state-dir", str(state), "--converged-timeout", "0")
    assert done.returncode == 1
    secret = target.read_text()
    events = read_events(str(state))
    outcomes = {e[2]: e[3] for e in events}
    assert outcomes["exec[leak]"] == "failed"
    assert outcomes[f"file[{tmp_path}/after]"] == "blocked"
    failed = next(e for e in events if e[2] == "exec[leak]")
    assert "<secret>" in failed[5]
    for name in ("events.db", "events.db-wal"):
        path = state / name
        if path.exists():
            assert secret.encode() not in path.read_bytes()
    assert all(secret not in str(e) for e in events)


def test_the_history_keeps_the_newest_events_up_to_the_count(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(5)]
    lines = "".join(f"  - file: {f}\n    content: x\n" for f in files)
    policy = _write(tmp_path / "p.yaml", "resources:\n" + lines)
    state = str(tmp_path / "state")
    for _ in range(2):
        done = convergent(
            "run",
            str(policy),
            "--state-dir",
            state,
            "--converged-timeout",
            "0",
            "--events-keep",
            "3",
        )
        assert done.returncode == 0, done.stderr
    events = read_events(state)
    assert len(events) == 3
    assert all(e[3] == "kept" for e in events)  # the second run's, the newest


def test_the_history_drops_events_older_than_its_age(tmp_path: Path) -> None:
    store = EventStore(str(tmp_path), max_age=3600, max_count=100)
    now = time.time()
    store.add((now - 7200, "h", "file[/old]", "kept", 0.1, "in the desired state", "drift"))
    store.add((now - 60, "h", "file[/new]", "kept", 0.1, "in the desired state", "drift"))
    store.flush(now)
    store.close()
    assert [e[2] for e in read_events(str(tmp_path))] == ["file[/new]"]
    assert (tmp_path / "events.db").stat().st_mode & 0o777 == 0o600


def test_no_history_is_written_under_noop_or_with_keep_0(tmp_path: Path) -> None:
    policy = _write(tmp_path / "p.yaml", f"resources:\n  - file: {tmp_path}/f\n    content: x\n")
    state = tmp_path / "state"
    first = convergent(
        "run",
        str(policy),
        "--state-dir",
        str(state),
        "--converged-timeout",
        "0",
        "--events-keep",
        "0",
    )
    assert first.returncode == 0, first.stderr
    assert not (state / "events.db").exists()
    noop = convergent(
        "run", str(policy), "--state-dir", str(state), "--noop", "--converged-timeout", "0"
    )
    assert noop.returncode == 0, noop.stderr
    assert not (state / "events.db").exists()


def test_a_timer_tick_and_meta_poll_are_timer_causes(tmp_path: Path) -> None:
    target = tmp_path / "polled"
    target.write_text("p")
    policy = _write(
        tmp_path / "p.yaml",
        f"""
        resources:
          - timer: tick
            interval: 0.05
          - file: {target}
            content: "p"
            meta:
              poll: 0.05
        """,
    )
    state = tmp_path / "state"
    with Agent("run", str(policy), "--state-dir", str(state)) as agent:
        agent.wait_for_line(lambda line: line.startswith("timer[tick]: "))
        agent.wait_for_line(lambda line: line.startswith("timer[tick]: "))
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0
    causes = {(e[2], e[3], e[6]) for e in read_events(str(state))}
    assert ("timer[tick]", "repaired", "timer") in causes
    assert (f"file[{target}]", "kept", "timer") in causes
