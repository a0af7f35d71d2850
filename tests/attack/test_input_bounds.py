"""Bad input never exhausts memory or CPU: YAML bombs, aliases multiplying edges, deep
nesting and huge values are refused (or loaded) in time and memory bounded by the file."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

_MEASURE = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "convergent", "check", sys.argv[1]],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
sys.stderr.buffer.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def _check(policy: Path) -> tuple[int, str, float]:
    """``convergent check POLICY`` under a 1 GiB address-space limit: code, stderr, MiB."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(policy)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    return done.returncode, done.stderr, int(done.stdout or 0) / 1024


def _laughs(levels: int, tail: str) -> str:
    lines = ["a0: &a0 ['noop[x]', 'noop[x]', 'noop[x]', 'noop[x]', 'noop[x]']"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n" + tail


@pytest.mark.parametrize("where", ["require", "cmd", "meta", "env"])
def test_a_billion_laughs_is_refused_with_bounded_memory(tmp_path: Path, where: str) -> None:
    entry = {
        "require": "  - noop: y\n    require: *a8\n",
        "cmd": "  - exec: y\n    cmd: *a8\n",
        "meta": "  - noop: y\n    meta: {k: *a8}\n",
        "env": "  - exec: y\n    cmd: [a]\n    env: {A: *a8}\n",
    }[where]
    policy = tmp_path / "bomb.yaml"
    policy.write_text(_laughs(9, "resources:\n  - noop: x\n" + entry))
    code, err, peak = _check(policy)
    assert code == 2
    assert "aliases ('*name') make this policy stand for" in err
    assert peak < 120, f"a refused bomb took {peak:.0f} MiB"


def test_aliases_never_multiply_one_list_of_references_into_millions_of_edges(
    tmp_path: Path,
) -> None:
    targets = ", ".join(f"'noop[t{i}]'" for i in range(1000))
    text = f"resources:\n  - noop: r0\n    require: &r [{targets}]\n"
    text += "".join(f"  - noop: t{i}\n" for i in range(1000))
    text += "".join(f"  - noop: r{j}\n    require: *r\n" for j in range(1, 3000))
    policy = tmp_path / "edges.yaml"
    policy.write_text(text)  # 120 KiB standing for 3,000,000 edges
    code, err, peak = _check(policy)
    assert code == 2, err
    assert "stand for 3,018,003 values, from 16,004 written" in err
    assert peak < 120, f"a refused policy took {peak:.0f} MiB"


def test_a_recursive_alias_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    policy = tmp_path / "loop.yaml"
    policy.write_text("resources:\n  - noop: x\n    meta: &m {k: *m}\n")
    code, err, _ = _check(policy)
    assert code == 2
    assert "an alias refers to the value that contains it" in err


def test_anchors_used_as_people_do_still_load(tmp_path: Path) -> None:
    text = "resources:\n  - file: /srv/f\n    <<: &d {mode: '0644', owner: root, group: root}\n"
    text += "".join(f"  - file: /srv/f{i}\n    <<: *d\n" for i in range(2000))
    policy = tmp_path / "merge.yaml"
    policy.write_text(text)
    code, err, _ = _check(policy)
    assert code == 0, err


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_flow_nesting_is_refused_with_a_located_error(tmp_path: Path, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    policy = tmp_path / "deep.yaml"
    policy.write_text(
        "resources:\n  - noop: x\n    meta: {k: " + opener * 50_000 + closer * 50_000 + "}\n"
    )
    code, err, peak = _check(policy)
    assert code == 2
    assert "exceeded maximum nesting depth" in err
    assert peak < 120


def test_deep_block_nesting_is_refused_with_a_located_error(tmp_path: Path) -> None:
    text = "resources:\n  - noop: x\n    meta:\n"
    text += "".join(" " * (i + 6) + "k:\n" for i in range(1500))
    policy = tmp_path / "deep.yaml"
    policy.write_text(text)
    code, err, _ = _check(policy)
    assert code == 2
    assert "exceeded maximum nesting depth" in err


@pytest.mark.parametrize("kind", ["content", "line", "source"])
def test_a_users_huge_sparse_file_never_makes_the_agent_read_it_into_memory(
    tmp_path: Path, kind: str
) -> None:
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(64 << 30)  # 64 GiB, no block written
    entry = {
        "content": f"  - file: {big}\n    content: 'x'\n",
        "line": f"  - line: {big}\n    text: hello\n",
        "source": f"  - file: {tmp_path}/copy\n    source: {big}\n",
    }[kind]
    policy = tmp_path / "p.yaml"
    policy.write_text("resources:\n" + entry)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "convergent",
            "run",
            "--converged-timeout",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
            str(policy),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    assert done.returncode == 1
    assert f"{big} holds 68,719,476,736 bytes or more, over the 268,435,456" in done.stderr
    assert big.stat().st_size == 64 << 30


def test_a_file_grown_after_its_size_was_taken_is_still_read_only_up_to_the_limit(
    tmp_path: Path,
) -> None:
    from convergent.host import fs

    big = tmp_path / "grows"
    big.write_bytes(b"small\n")
    fd = os.open(big, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        os.truncate(big, 64 << 30)  # grown by its owner between the fstat and the read
        with pytest.raises(fs.PathRefused, match=r"over the 268,435,456 convergent reads"):
            fs.read_all(fd, size, str(big))
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["{i}", "n{i}"], ids=["full path", "fast path"])
def test_a_policy_just_under_the_size_limit_checks_in_under_a_gib(
    tmp_path: Path, name: str
) -> None:
    """1,050,000 one-line resources in just under 16 MiB (2.9 GB and 17 s before the
    limits): refused at the entry after the 250,001st, as libyaml's composer reads it (a
    number as the name) or as the fast path does, naming the first one past the limit."""
    policy = tmp_path / "many.yaml"
    with policy.open("w") as f:
        f.write("resources:\n")
        f.writelines(f"- noop: {name.format(i=i)}\n" for i in range(1_050_000))
    assert policy.stat().st_size < 16 << 20
    code, err, _ = _check(policy)  # under a 1 GiB address-space limit
    assert code == 2, err[-500:]
    assert err.strip() == (
        f"{policy}:250002:3: noop[{name.format(i=250000)}]: more than 250,000 resources in "
        "one policy, the most convergent loads (each is kept in memory and watched); give "
        "each host a policy with only its own resources, or split them between agents, "
        "each with its own policy and --state-dir"
    )


def test_a_policy_naming_its_host_is_read_only_up_to_the_size_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy with a top-level ``remote:`` is loaded here before it is sent: a sparse
    64 GiB one is refused after 16 MiB and one character read, not read whole."""
    from convergent.cli.remote import _load

    policy = tmp_path / "p.yaml"
    policy.write_text("graph: g\nremote: ssh://127.0.0.1\nresources: {}\n")
    os.truncate(policy, 64 << 30)
    assert _load(str(policy)) is None
    assert "over the limit of 16,777,216 characters" in capsys.readouterr().err
