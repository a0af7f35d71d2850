"""A plain policy's graph kept between runs is the graph its policy reads, and only ever
that one: another policy, other code, a damaged or untrusted file all read the policy."""

from __future__ import annotations

import os
import random
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from convergent.graph.core import Graph
from convergent.policy import cache, load_policy_text
from convergent.policy.cache import PolicyCache, decode_graph, encode_graph
from convergent.policy.fast import load_plain
from convergent.resources.base import Resource
from tests.policy.support import Widget

KINDS = """
resources:
  - file: /srv/www
    state: directory
    mode: "0755"
    owner: root
  - file: /srv/www/index.html
    content: "<h1>hi</h1>\\n"
    mode: "0644"
    require: "file[/srv/www]"
  - file: /srv/www/latest
    state: link
    target: /srv/www/index.html
  - exec: reload
    cmd: ["/bin/true", "--reload"]
  - noop: marker
    meta: {retry: 3, autoedge: false}
  - kv: color
    key: color
    value: blue
  - password: db
  - pkg: hello
    state: installed
  - svc: nginx
    state: running
    startup: enabled
  - user: alice
    state: present
    shell: /bin/bash
  - group: staff
    state: present
  - line: /etc/hosts
    text: "127.0.0.1 web"
  - cron: backup
    cmd: /usr/local/bin/backup
    minute: "5"
  - value: greeting
    content: hello
  - process: sleeper
    cmd: ["/bin/sleep", "1000"]
  - file: /srv/www/a
    content: a
    notify: ["exec[reload]"]
  - file: /srv/www/b
    content: b
    before: "exec[reload]"
"""

POLICIES = {
    "every-kind": KINDS,
    "bench": "".join(
        f'  - file: "/srv/bench/f{i:05d}"\n    content: "i am f{i:05d}\\n"\n    mode: "0644"\n'
        for i in range(300)
    ).join(["resources:\n", ""]),
    "edge-orders": """
        resources:
          - noop: c
          - noop: d
            require: "noop[a]"
          - noop: b
            before: "noop[c]"
          - noop: a
            before: "noop[c]"
        """,
    "collect": """
        resources:
          - file: /srv/a
            content: a
        collect:
          - kind: file
            pattern: /srv/in/
        """,
}


def _strict(value: Any) -> Any:
    """``value`` with the type of everything in it: 300 and 300.0 differ here."""
    if isinstance(value, msgspec.Struct):
        fields = [(f, _strict(getattr(value, f))) for f in value.__struct_fields__]
        return (type(value), fields)
    if isinstance(value, (list, tuple, frozenset, set)):
        items = sorted(map(repr, value)) if isinstance(value, (set, frozenset)) else value
        return (type(value), [_strict(v) for v in items])
    if isinstance(value, dict):
        return (dict, [(_strict(k), _strict(v)) for k, v in value.items()])
    return (type(value), value)


def _slots(resource: Resource[Any]) -> list[Any]:
    """Every slot a resource has set, its kind's derived values included."""
    found = []
    for cls in type(resource).__mro__:
        for name in cls.__dict__.get("__slots__", ()):
            if hasattr(resource, name) and name != "_rid":
                found.append((name, _strict(getattr(resource, name))))
    return found


def _shape(graph: Graph[Resource[Any]]) -> list[Any]:
    """Everything a graph says, in its orders: vertices, edges out and in, what it
    collects, and the topological order its grouping follows."""
    vertices = [
        (vid, type(r), r.kind, r.name, _strict(r.params), _strict(r.meta), _slots(r))
        for vid, r in graph.vertices.items()
    ]
    edges = [_strict(edge) for edge in graph.edges()]
    return [vertices, edges, list(graph.into()), _strict(graph.collect), graph.topological_order()]


def _blob(graph: Graph[Resource[Any]], data: bytes, name: str = "/etc/site.yaml") -> bytes:
    pieces = encode_graph(graph, cache.key(name, data))
    assert pieces is not None
    return b"".join(pieces)


def _loaded(text: str, name: str = "/etc/site.yaml") -> tuple[Graph[Resource[Any]], bytes]:
    """The graph of a policy the fast reader takes (the only ones a run keeps)."""
    text = textwrap.dedent(text).lstrip("\n")
    assert load_plain(text, name) is not None
    return load_policy_text(text, name), text.encode()


@pytest.mark.parametrize("key", sorted(POLICIES))
def test_a_kept_graph_is_the_graph_its_policy_reads(key: str) -> None:
    graph, data = _loaded(POLICIES[key])
    blob = _blob(graph, data)
    again = decode_graph(blob, cache.key("/etc/site.yaml", data))
    assert again is not None
    assert _shape(again) == _shape(graph)
    again.validate()


def test_a_kept_graph_is_only_for_the_same_bytes_under_the_same_name() -> None:
    graph, data = _loaded(POLICIES["every-kind"])
    blob = _blob(graph, data)
    changed = data.replace(b"blue", b"teal")  # same length: the whole text is compared
    assert len(changed) == len(data)
    assert decode_graph(blob, cache.key("/etc/site.yaml", changed)) is None
    assert decode_graph(blob, cache.key("/etc/other.yaml", data)) is None  # messages name the file


def test_a_kept_graph_is_not_used_once_convergent_s_code_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    info = module.stat()
    monkeypatch.setattr(
        cache, "_code", lambda: [(str(module), info.st_ino, info.st_size, info.st_mtime_ns)]
    )
    graph, data = _loaded(POLICIES["every-kind"])
    blob = _blob(graph, data)
    assert decode_graph(blob, cache.key("/etc/site.yaml", data)) is not None
    os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns + 1))  # edited: its time
    assert decode_graph(blob, cache.key("/etc/site.yaml", data)) is None
    os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert decode_graph(blob, cache.key("/etc/site.yaml", data)) is not None
    replacement = tmp_path / "new.py"
    replacement.write_text("x = 1\n")
    os.utime(replacement, ns=(info.st_atime_ns, info.st_mtime_ns))
    replacement.rename(module)  # same bytes, size and time; another file (an upgrade)
    assert decode_graph(blob, cache.key("/etc/site.yaml", data)) is None
    module.unlink()
    assert decode_graph(blob, cache.key("/etc/site.yaml", data)) is None


def test_a_damaged_cache_never_gives_another_graph() -> None:
    graph, data = _loaded(POLICIES["every-kind"])
    blob = _blob(graph, data)
    expected = _shape(graph)
    damaged = [blob[:n] for n in range(0, len(blob), 97)]
    damaged += [blob[:n] + bytes(len(blob) - n) for n in range(0, len(blob), 211)]  # zeros
    for n in range(0, len(blob), 7):  # one byte changed anywhere
        damaged.append(blob[:n] + bytes([blob[n] ^ 0x20]) + blob[n + 1 :])
    for bad in damaged:
        again = decode_graph(bad, cache.key("/etc/site.yaml", data))
        assert again is None or _shape(again) == expected


def test_only_a_graph_of_built_in_kinds_without_secrets_is_kept() -> None:
    graph, data = _loaded(
        """
        resources:
          - widget: w1
            path: /srv/w1
        """
    )
    assert type(graph["widget[w1]"]) is Widget
    assert (
        encode_graph(graph, cache.key("/etc/site.yaml", data)) is None
    )  # a plug-in's code may change
    graph, data = _loaded(POLICIES["every-kind"])
    graph.secrets = frozenset({"hunter2"})
    assert encode_graph(graph, cache.key("/etc/site.yaml", data)) is None


def test_a_graph_kept_in_one_directory_is_not_confirmed_for_another(tmp_path: Path) -> None:
    graph, data = _loaded(POLICIES["bench"])
    blob = _blob(graph, data)
    kept, other = tmp_path / "kept", tmp_path / "other"
    kept.mkdir(mode=0o700)
    other.mkdir(mode=0o700)
    (kept / cache.NAME).write_bytes(blob)
    (kept / cache.NAME).chmod(0o600)
    use = PolicyCache(str(kept))
    assert use.lookup("/etc/site.yaml", data) is not None
    for directory, same in ((kept, True), (other, False)):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert use.confirm(fd) is same
        finally:
            os.close(fd)


@pytest.mark.parametrize(
    "entry",
    [
        '  - user: alice\n    password_hash: "$6$salt$hash"\n',
        "  - exec: migrate\n    cmd: [/bin/true]\n    env: {DB_PASSWORD: hunter2}\n",
        "  - download: /srv/app.tgz\n    url: http://127.0.0.1/app.tgz\n"
        "    sha256: " + "a" * 64 + "\n    headers: {Authorization: Bearer abc}\n",
        '  - download: /srv/app.tgz\n    url: "http://deploy:hunter2@127.0.0.1/app.tgz"\n'
        '    sha256: "' + "a" * 64 + '"\n',
        '  - download: /srv/app.tgz\n    url: "http://127.0.0.1/app.tgz?token=abc"\n'
        '    sha256: "' + "a" * 64 + '"\n',
    ],
)
def test_a_graph_whose_parameters_hold_a_credential_is_not_kept(entry: str) -> None:
    """The kept file holds the policy's text and parameters: no credential goes there
    (no file of the state directory holds one)."""
    text = "resources:\n  - noop: first\n" + entry
    graph = load_policy_text(text, "/etc/site.yaml")
    assert encode_graph(graph, cache.key("/etc/site.yaml", text.encode())) is None


def _random_policy(seed: int) -> str:
    """Noops with random edges of each kind, all pointing from earlier to later entries
    (so never a cycle), written in random places."""
    rng = random.Random(seed)
    count = rng.randint(2, 9)
    lines = ["resources:"]
    for i in range(count):
        lines.append(f"  - noop: n{i}")
        for key, others in (
            ("require", range(i)),
            ("before", range(i + 1, count)),
            ("notify", range(i + 1, count)),
        ):
            if others and rng.random() < 0.5:
                refs = rng.sample(list(others), rng.randint(1, min(3, len(others))))
                lines.append(f"    {key}: [" + ", ".join(f'"noop[n{r}]"' for r in refs) + "]")
        if rng.random() < 0.3:
            lines.append(f"    meta: {{autogroup: false, retry: {rng.randint(1, 3)}}}")
    return "\n".join(lines) + "\n"


def test_a_kept_graph_keeps_every_order_of_random_graphs() -> None:
    """The order of a vertex's sources decides the topological order, and so the groups
    the engine makes: a graph made again must give them in the same order."""
    for seed in range(300):
        graph, data = _loaded(_random_policy(seed))
        again = decode_graph(_blob(graph, data), cache.key("/etc/site.yaml", data))
        assert again is not None
        assert _shape(again) == _shape(graph), seed


def test_a_kept_graph_is_not_used_by_another_installation() -> None:
    """Another copy of convergent (a new virtual environment, another version installed
    beside this one) leaves this one's files as they were: it reads the policy again."""
    graph, data = _loaded(POLICIES["every-kind"])
    blob = _blob(graph, data)
    assert decode_graph(blob, cache.key("/etc/site.yaml", data)) is not None
    other = cache.key("/etc/site.yaml", data, home="/opt/convergent-2/convergent")
    assert decode_graph(blob, other) is None
