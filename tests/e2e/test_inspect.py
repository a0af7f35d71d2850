"""`convergent check` and `convergent graph` end to end: they read a policy, never the host."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.agent import convergent
from tests.e2e.conftest import Hello

BAD = "resources:\n  - file: /tmp/x\n    contnet: oops\n"


def edge_lines(dot: str) -> list[str]:
    return [line.strip() for line in dot.splitlines() if " -> " in line]


def test_check_ok_counts_resources_and_edges_and_touches_nothing(hello: Hello) -> None:
    done = convergent("check", str(hello.policy))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{hello.policy}: ok (5 resources, 5 edges)\n"
    assert not hello.root.exists()


def test_check_bad_policy_lists_problems_and_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(BAD, encoding="utf-8")
    done = convergent("check", str(policy))
    assert done.returncode == 2
    assert f"{policy}:3:" in done.stderr
    assert done.stdout == ""


def test_graph_dot_contains_every_edge(hello: Hello) -> None:
    done = convergent("graph", str(hello.policy))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("digraph ")
    root, f1, f2 = f"file[{hello.root}]", f"file[{hello.f1}]", f"file[{hello.f2}]"
    assert sorted(edge_lines(done.stdout)) == sorted(
        [
            f'"{root}" -> "{f1}";',
            f'"{root}" -> "{f2}";',
            f'"{f1}" -> "exec[build]";',
            f'"{f2}" -> "exec[build]";',
            '"exec[build]" -> "noop[done]" [style=dashed, label="notify"];',
            # the engine's own edge (exec runs in the directory): drawn dotted
            f'"{root}" -> "exec[build]" [style=dotted, color="gray40", tooltip="automatic edge"];',
        ]
    )


def test_graph_svg_is_an_svg_document(hello: Hello) -> None:
    done = convergent("graph", str(hello.policy), "--format", "svg")
    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout
    assert "exec[build]" in done.stdout
    assert done.stdout.rstrip().endswith("</svg>")


def test_graph_writes_to_the_output_file(hello: Hello, tmp_path: Path) -> None:
    out = tmp_path / "graph.svg"
    done = convergent("graph", str(hello.policy), "--format", "svg", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "<svg" in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.svg", "hello.yaml"]


def test_graph_svg_without_graphviz_says_how_to_fix(hello: Hello, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    done = convergent("graph", str(hello.policy), "--format", "svg", env=env)
    assert done.returncode == 2
    assert "graphviz 'dot' not found: install it (apt-get install graphviz)" in done.stderr
    assert done.stdout == ""


def test_graph_of_a_bad_policy_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(BAD, encoding="utf-8")
    done = convergent("graph", str(policy))
    assert done.returncode == 2
    assert f"{policy}:3:" in done.stderr
