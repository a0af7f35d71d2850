"""``convergent run`` keeps a plain policy's graph in its state directory: an unchanged
policy is not read again, an edited one always is, and a cache file the agent cannot
trust (another user's, one others may write, a symlink, a FIFO, one a crash cut short)
is never used.

Where a test needs to see that the kept graph was used, it plants a kept graph of
another policy under the policy's own bytes (``_forge``): only a run that used the file
applies that other policy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convergent.policy import load_policy_text
from convergent.policy.cache import CACHE_FROM, NAME, encode_graph, key
from tests.e2e.agent import convergent

#: Enough entries for the policy to be kept (a shorter one is read every time).
PADDING = "".join(f"  - noop: pad{i:04d}\n" for i in range(1000))
assert len(PADDING) > CACHE_FROM


def _policy(target: Path, content: str) -> str:
    entry = f'  - file: "{target}"\n    content: "{content}"\n    mode: "0644"\n'
    return "resources:\n" + entry + PADDING


def _run(policy: Path, state: Path, *extra: str) -> None:
    done = convergent(
        "run", str(policy), "--state-dir", str(state), "--converged-timeout", "0", *extra
    )
    assert done.returncode == 0, (done.stdout, done.stderr)


def _forge(policy: Path, other: str) -> bytes:
    """A kept graph of the policy text ``other``, filed under ``policy``'s bytes."""
    graph = load_policy_text(other, str(policy))
    pieces = encode_graph(graph, key(str(policy), policy.read_bytes()))
    assert pieces is not None
    return b"".join(pieces)


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    target, policy, state = tmp_path / "motd", tmp_path / "site.yaml", tmp_path / "state"
    policy.write_text(_policy(target, "one"))
    return target, policy, state


def test_an_unchanged_policy_is_made_from_what_the_last_run_kept(tmp_path: Path) -> None:
    target, policy, state = _setup(tmp_path)
    _run(policy, state)
    assert target.read_text() == "one"
    kept = state / NAME
    assert kept.stat().st_mode & 0o777 == 0o600
    kept.write_bytes(_forge(policy, _policy(target, "two")))
    _run(policy, state)
    assert target.read_text() == "two"  # the kept graph, not the file, was used


def test_an_edited_policy_is_read_again(tmp_path: Path) -> None:
    target, policy, state = _setup(tmp_path)
    _run(policy, state)
    kept = (state / NAME).read_bytes()
    policy.write_text(_policy(target, "two"))  # the same length, another byte
    _run(policy, state)
    assert target.read_text() == "two"
    assert (state / NAME).read_bytes() != kept  # kept again, for the new text


@pytest.mark.parametrize("how", ["group-writable", "another user's", "symlink", "fifo"])
def test_a_cache_file_the_agent_cannot_trust_is_not_used(tmp_path: Path, how: str) -> None:
    target, policy, state = _setup(tmp_path)
    _run(policy, state)
    kept = state / NAME
    forged = _forge(policy, _policy(target, "two"))
    kept.unlink()
    if how == "group-writable":
        kept.write_bytes(forged)
        kept.chmod(0o620)
    elif how == "another user's":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the file to another user")
        kept.write_bytes(forged)
        os.chown(kept, 65534, 65534)
    elif how == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.write_bytes(forged)
        elsewhere.chmod(0o600)
        kept.symlink_to(elsewhere)
    else:
        os.mkfifo(kept, 0o600)  # no writer: a read would wait for ever
    _run(policy, state)  # bounded: a hang fails the test
    assert target.read_text() == "one"
    if how == "symlink":
        assert (tmp_path / "elsewhere").read_bytes() == forged  # not written through
        assert not kept.is_symlink()


def test_a_cache_a_crash_cut_short_is_read_as_none(tmp_path: Path) -> None:
    """The states a kill -9 or a power loss leaves: the temp file half written (the kill
    before the rename) and, as no sync follows the rename, a file renamed in place whose
    data did not all reach the disk (cut short, or its end zeros)."""
    target, policy, state = _setup(tmp_path)
    _run(policy, state)
    kept = state / NAME
    whole = kept.read_bytes()
    forged = _forge(policy, _policy(target, "two"))
    for damaged in (forged[: len(forged) // 2], forged[:-1] + b"\0", b"", whole[:100]):
        (state / ".policy.cache.tmp").write_bytes(forged[:50])
        kept.write_bytes(damaged)
        target.write_text("drift")
        _run(policy, state)
        assert target.read_text() == "one"
        assert kept.read_bytes() == whole  # kept again, whole
        kept.write_bytes(damaged)


def test_noop_runs_and_runs_with_inputs_keep_nothing(tmp_path: Path) -> None:
    target, policy, state = _setup(tmp_path)
    state.mkdir(mode=0o700)
    _run(policy, state)
    (state / NAME).unlink()
    _run(policy, state, "--noop")
    assert not (state / NAME).exists()  # noop writes nothing in the state directory
    _run(policy, state, "--set", "x=1")
    assert not (state / NAME).exists()
    language = tmp_path / "lang.yaml"
    language.write_text(
        f'vars:\n  word: one\nresources:\n  - file: {target}\n    content: "{{{{ word }}}}"\n'
        + PADDING
    )
    _run(language, state)
    assert not (state / NAME).exists()  # only the fast reader's graphs are kept


def test_the_cache_is_written_only_into_the_directory_the_agent_locked(tmp_path: Path) -> None:
    """The path swapped for another directory between the lock and the write: the graph
    is neither used from it nor kept in it (``StateDir.directory`` refuses it)."""
    from convergent.cli.load import load_graph, settle
    from convergent.policy.cache import PolicyCache
    from convergent.state.statedir import open_state_dir

    _, policy, state = _setup(tmp_path)
    cache = PolicyCache(str(state))
    graph = load_graph(str(policy), None, cache)
    assert graph is not None and not cache.used
    with open_state_dir(str(state), mode="exclusive") as opened:
        state.rename(tmp_path / "locked")
        state.mkdir(mode=0o700)
        assert settle(cache, opened, str(policy), None, graph) is graph
        assert os.listdir(state) == []
        assert not (tmp_path / "locked" / NAME).exists()


def test_a_short_policy_is_read_every_time(tmp_path: Path) -> None:
    """Under CACHE_FROM bytes the load costs no more than the cache's own work."""
    target, policy, state = _setup(tmp_path)
    policy.write_text(f'resources:\n  - file: "{target}"\n    content: "one"\n')
    _run(policy, state)
    assert target.read_text() == "one"
    assert not (state / NAME).exists()


@pytest.mark.parametrize("long", [False, True])
def test_the_cache_is_imported_only_for_a_policy_it_may_keep(tmp_path: Path, long: bool) -> None:
    """A short policy's run does not even import ``policy/cache.py`` (its two structs and
    what they need cost ~0.4 ms of a 60 ms run)."""
    target, policy, state = _setup(tmp_path)
    if not long:
        policy.write_text(f'resources:\n  - file: "{target}"\n    content: "one"\n')
    argv = [sys.executable, "-X", "importtime", "-m", "convergent", "run", str(policy)]
    argv += ["--state-dir", str(state), "--converged-timeout", "0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert ("convergent.policy.cache" in modules) is long
