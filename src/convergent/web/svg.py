"""The graph as the engine runs it, as DOT and as SVG from graphviz (``dot -Tsvg``).

Each vertex of the running plan is one node whose SVG element id is the vertex id
(``file[/etc/motd]``, ``autogroup[pkg:curl,vim]``), so the page finds it with
``getElementById``. Edges the policy wrote are solid (a notify edge dashed, a recv edge
labelled with its parameters); the engine's automatic edges are dotted; an automatic group
is one node listing its members; a bundle use (``Graph.clusters`` of the policy graph,
when the policy has bundles) is a cluster around its vertices.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import TYPE_CHECKING, Any

from convergent.graph.dot import _quote as _q

if TYPE_CHECKING:
    from convergent.engine.changeover import Plan

__all__ = ["DotMissing", "plan_dot", "render_svg"]

TIMEOUT = 30.0  # seconds graphviz may take
_MAX_LABEL_MEMBERS = 12


class DotMissing(Exception):
    """graphviz's ``dot`` is not installed, or failed."""


def plan_dot(plan: Plan) -> str:
    """``plan`` as DOT (see the module docstring)."""
    from convergent.resources.group import Group

    graph = plan.graph
    source = plan.source
    vertex_of = plan.vertex_of
    written: dict[tuple[str, str], Any] = {}
    for edge in source.edges():
        pair = (vertex_of.get(edge.source, edge.source), vertex_of.get(edge.target, edge.target))
        written.setdefault(pair, edge)
    lines = [
        'digraph "convergent" {',
        "  rankdir=LR;",
        '  bgcolor="transparent";',
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="monospace",'
        " fontsize=11];",
        '  edge [color="#6b7280", arrowsize=0.7];',
    ]
    placed: set[str] = set()
    clusters: dict[str, tuple[str, ...]] = getattr(source, "clusters", None) or {}
    for number, (use, members) in enumerate(clusters.items()):
        vids = [vertex_of.get(m, m) for m in members]
        inside = [v for v in dict.fromkeys(vids) if v in graph and v not in placed]
        if not inside:
            continue
        lines.append(f"  subgraph cluster_{number} {{")
        lines.append(f'    label={_q(use)}; style="rounded,dashed"; color="#9ca3af";')
        for vid in inside:
            placed.add(vid)
            lines.append(f"    {_node(vid, graph[vid], Group)}")
        lines.append("  }")
    for vid, payload in graph.vertices.items():
        if vid not in placed:
            lines.append(f"  {_node(vid, payload, Group)}")
    for edge in graph.edges():
        mine = written.get((edge.source, edge.target))
        attrs = []
        if mine is None:
            attrs.append("style=dotted")
        else:
            if edge.notify or mine.notify:
                attrs.append("style=dashed")
            label = ", ".join(param for param, _ in mine.recv)
            if edge.notify or mine.notify:
                label = "notify" + (f", {label}" if label else "")
            if label:
                attrs.append(f"label={_q(label)}, fontsize=9")
        extra = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {_q(edge.source)} -> {_q(edge.target)}{extra};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node(vid: str, payload: Any, group: type) -> str:
    lines = [vid]
    if isinstance(payload, group):
        members = [m.id for m in getattr(payload, "members", ())]
        lines = ["autogroup", *members[:_MAX_LABEL_MEMBERS]]
        if len(members) > _MAX_LABEL_MEMBERS:
            lines.append(f"... {len(members) - _MAX_LABEL_MEMBERS} more")
    label = '"' + "\\n".join(_q(line)[1:-1] for line in lines) + '"'
    return f"{_q(vid)} [id={_q(vid)}, label={label}];"


async def render_svg(dot_text: str) -> str:
    """``dot_text`` drawn by graphviz as SVG. Raises DotMissing when it cannot be."""
    dot = shutil.which("dot")
    if dot is None:
        raise DotMissing("graphviz 'dot' not found: install it (apt-get install graphviz)")
    process = await asyncio.create_subprocess_exec(
        dot,
        "-Tsvg",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await process.communicate(dot_text.encode("utf-8"))
    except TimeoutError:
        process.kill()
        await process.wait()
        raise DotMissing(f"'{dot} -Tsvg' took longer than {TIMEOUT:g} s") from None
    if process.returncode != 0:
        text = err.decode("utf-8", "replace").strip()[-500:]
        raise DotMissing(f"'{dot} -Tsvg' failed with exit code {process.returncode}: {text}")
    return out.decode("utf-8", "replace")
