"""``convergent run POLICY --remote ssh://...``: the options, and the run itself
(:mod:`convergent.remote.fleet` does the work).

Each line a remote agent prints comes out here prefixed by its host (``[web1] ...``),
escaped like every report. The exit code is one for all: 0 when every agent ended
converged, 1 when any host failed (each named on stderr), 2 when nothing was started
(bad options, a policy that does not load, a URL with a password).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from convergent.graph.core import Graph
    from convergent.remote.fleet import Assignment, HostResult
    from convergent.resources.base import Resource

__all__ = [
    "add_remote_options",
    "depth_given",
    "names_remote",
    "relay_command",
    "remote_command",
    "remote_files",
    "shares",
]

SHARING = frozenset({"kv", "value", "world"})  # kinds that talk to the world


def add_remote_options(run: argparse.ArgumentParser, *, count: Callable[[str], int]) -> None:
    """Declare the options of ``run`` that put its policy on other hosts (``--relay``,
    undocumented: the run a first-level host makes, :mod:`convergent.remote.relay`)."""
    import argparse

    group = run.add_argument_group(
        "remote hosts",
        "Bootstrap and run agents on other hosts over SSH (they need python3 only).",
    )
    group.add_argument(
        "more_files",
        metavar="FILE",
        nargs="*",
        help="more mgmt graphs, each naming its host with 'remote: ssh://...'",
    )
    group.add_argument(
        "--remote",
        metavar="URL",
        action="append",
        default=None,
        help="run the policy on this host (ssh://[USER@]HOST[:PORT][#NAME]; "
        "'URL via:URL1': the host of URL1, itself given with --remote, bootstraps it, "
        "logging in with your ssh agent forwarded to it); give it once per host",
    )
    group.add_argument(
        "--cconns",
        metavar="N",
        type=count,
        default=None,
        help="connect to and bootstrap at most N hosts at once (default: 8)",
    )
    group.add_argument(
        "--no-caching",
        action="store_true",
        help="copy convergent to every host even when it has this version already",
    )
    group.add_argument(
        "--identity",
        metavar="FILE",
        default=None,
        help="log in with this private key only (default: ~/.ssh's keys and the ssh agent)",
    )
    group.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="trust a host key seen for the first time and add it to ~/.ssh/known_hosts "
        "(a changed key is always refused)",
    )
    group.add_argument(
        "--remote-depth",
        metavar="N",
        type=count,
        default=None,
        help="2: the first --cconns hosts are reached directly and each bootstraps some "
        "of the others (as via:), logging in to them with your ssh agent forwarded",
    )
    group.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    group.add_argument(
        "--detach",
        action="store_true",
        help="leave the remote agents running on their own after bootstrapping them "
        "(each keeps its host alone: the world's tunnel ends with this command)",
    )


def names_remote(path: str) -> bool:
    """Whether the policy at ``path`` names its host (a top-level ``remote:``)."""
    from convergent.cli.load import remote_key

    return remote_key(path) is not None


def remote_files(files: list[str]) -> list[tuple[str, str]] | None:
    """(policy file, the URL its top-level ``remote:`` names) for mgmt graphs that name
    their host; None when a file names none."""
    from convergent.cli.load import remote_key

    found = []
    for path in files:
        url = remote_key(path)
        if url is None:
            return None
        found.append((path, url))
    return found


def _assignments(args: argparse.Namespace) -> list[Assignment]:
    from convergent.remote.fleet import Assignment
    from convergent.remote.urls import RemoteError, Target, parse_targets

    files = [args.file, *(getattr(args, "more_files", None) or ())]
    from convergent.cli.load import CLUSTER_OPTIONS

    clashing = [f"--{o.replace('_', '-')}" for o in CLUSTER_OPTIONS if getattr(args, o, None)]
    if clashing or getattr(args, "hostname", None):
        given = ", ".join(clashing + (["--hostname"] if getattr(args, "hostname", None) else []))
        raise RemoteError(
            f"{given}: a remote run gives its hosts their names and their world itself; "
            "leave these options out"
        )
    urls = args.remote if isinstance(args.remote, list) else [args.remote] if args.remote else []
    if urls:
        if len(files) != 1:
            raise RemoteError("--remote sends one policy to every host: give one FILE")
        targets = parse_targets(urls)
        depth = args.remote_depth or 1
        if depth > 2:
            raise RemoteError("--remote-depth: 1 or 2")
        if depth == 2:
            first = [t for t in targets if t.via is None][: args.cconns or 8]
            rest = [t for t in targets if t not in first and t.via is None]
            targets = [t for t in targets if t not in rest] + [
                Target(t.host, t.port, t.user, t.name, first[i % len(first)])
                for i, t in enumerate(rest)
            ]
        return _checked([Assignment(t, files[0]) for t in targets])
    if depth_given(args):
        raise RemoteError("--remote-depth orders --remote hosts; mgmt graphs say via: in remote:")
    named = remote_files(files)
    if named is None:
        raise RemoteError("give --remote URL, or mgmt graphs that each name their 'remote:'")
    targets = parse_targets([url for _, url in named])
    return _checked([Assignment(t, path) for t, (path, _) in zip(targets, named, strict=True)])


def depth_given(args: argparse.Namespace) -> bool:
    return (getattr(args, "remote_depth", None) or 1) > 1


def _checked(assignments: list[Assignment]) -> list[Assignment]:
    """The assignments, when each names a host that may run: not the run's own name, and
    each host behind another (via:) behind a host of the run, one level deep."""
    from convergent.remote.fleet import ADMIN
    from convergent.remote.urls import RemoteError

    names = {a.target.name: a.target for a in assignments}
    for a in assignments:
        if a.target.name == ADMIN:
            raise RemoteError(
                f"--remote {a.target.url}: the name {ADMIN!r} is the run's own in the world; "
                "give the host another with #NAME"
            )
        via = a.target.via
        if via is None:
            continue
        if via.via is not None or names.get(via.name, via).via is not None:
            raise RemoteError(
                f"--remote {a.target.url} via:{via.url}: {via.name} is itself behind "
                "another host; hosts bootstrap one level only (--remote-depth 2)"
            )
        if via.name not in names:
            raise RemoteError(
                f"--remote {a.target.url} via:{via.url}: {via.name} bootstraps "
                f"{a.target.name}, so it must be a host of the run: add --remote {via.url}"
                + ("" if via.name == via.host else f"#{via.name}")
            )
    if any(a.target.via is not None for a in assignments) and not os.environ.get("SSH_AUTH_SOCK"):
        raise RemoteError(
            "hosts behind others (via:, --remote-depth 2) are logged in to from the first "
            "level with your ssh agent, forwarded there: no agent here ($SSH_AUTH_SOCK is "
            "unset); start one and add your key (eval $(ssh-agent); ssh-add ~/.ssh/id_ed25519)"
        )
    return assignments


def remote_command(args: argparse.Namespace) -> int:
    """Run the policy on the remote hosts; see the module's docstring for the exit code."""
    import asyncio
    import signal

    from convergent.errors import ConvergentError
    from convergent.remote.bootstrap import payload
    from convergent.remote.fleet import ADMIN, Fleet, FleetConfig, World
    from convergent.remote.ssh import SshOptions
    from convergent.render import escape, say

    if getattr(args, "relay", False):
        return relay_command(args)
    try:
        assignments = _assignments(args)
    except ConvergentError as exc:
        say(f"convergent: {exc}")
        return 2
    graphs = []
    for policy in sorted({a.policy for a in assignments}):
        graph = _load(policy)
        if graph is None:  # every problem printed; nothing started
            return 2
        graphs.append(graph)
    agent_args = tuple(flag for flag, on in (("--noop", args.noop), ("--diff", args.diff)) if on)
    config = FleetConfig(
        assignments,
        SshOptions(args.identity, bool(args.accept_new_host_keys)),
        cconns=args.cconns or 8,
        caching=not args.no_caching,
        converged_timeout=args.converged_timeout,
        detach=bool(args.detach),
        agent_args=agent_args,
        world=not args.detach and any(shares(graph) for graph in graphs),
    )

    def report(host: str, line: str, error: bool) -> None:
        stream = sys.stderr if error else sys.stdout
        stream.write(f"[{escape(host)}] {escape(line)}\n")
        stream.flush()

    async def main() -> list[HostResult]:
        fleet = Fleet(config, payload, report)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, fleet.stop)
        world = None
        if config.world:
            world = World(_state_dir(args), ADMIN, lambda m: say(f"etcd: {m}"))
        try:
            return await fleet.run(world)
        finally:
            if world is not None:
                await world.aclose()

    opened = None
    if config.world:  # the run's etcd member lives here: one run at a time
        from convergent.host.children import reap_orphans
        from convergent.state.statedir import open_state_dir

        try:
            opened = open_state_dir(_state_dir(args), mode="exclusive", after_lock=reap_orphans)
        except ConvergentError as exc:
            say(f"convergent: {exc}")
            return 2
    try:
        results = asyncio.run(main())
    except ConvergentError as exc:
        say(f"convergent: {exc}")
        return 2
    finally:
        if opened is not None:
            opened.close()
    failed = [r for r in results if r.error is not None or (r.status or 0) != 0]
    for r in results:
        if r.detached_pid is not None:
            say(f"convergent: {r.name}: agent detached (pid {r.detached_pid})")
    if failed:
        names = ", ".join(
            f"{r.name} ({'exit ' + str(r.status) if r.status is not None else 'not run'})"
            for r in failed
        )
        say(f"convergent: failed on {names}")
        return 1
    say(f"convergent: {len(results)} host(s) done")
    return 0


def relay_command(args: argparse.Namespace) -> int:
    """``run relay/plan.json --relay --remote URL...`` on a first-level host: bootstrap
    the hosts behind it (:mod:`convergent.remote.relay`), each line written up as JSON;
    stops when standard input ends. Exit 0, or 2 when the plan cannot be read."""
    import asyncio
    import signal
    import threading

    from convergent.errors import ConvergentError
    from convergent.remote import relay
    from convergent.remote.bootstrap import Payload
    from convergent.remote.dist import running_file
    from convergent.remote.fleet import Assignment, Fleet, FleetConfig
    from convergent.remote.ssh import SshOptions
    from convergent.remote.urls import parse_targets
    from convergent.render import say

    def write(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    urls = args.remote if isinstance(args.remote, list) else [args.remote]
    pyz = running_file()
    try:
        plan = relay.read_plan(args.file)
        targets = parse_targets(urls)
        if pyz is None:
            raise ConvergentError("a relay runs from the single file (convergent.pyz)")
        assignments = [Assignment(t, plan.policies[t.name]) for t in targets]
    except (ConvergentError, OSError, ValueError, KeyError) as exc:
        say(f"convergent: relay: {exc}")
        return 2
    if not os.environ.get("SSH_AUTH_SOCK"):
        for t in targets:
            error = relay.no_agent(t.name, plan.origin)
            write(relay.line(t.name, error, True))
            write(relay.result(t.name, None, error, 0, None))
        return 0
    payload = Payload(pyz, plan.digest, pyz.stat().st_size)
    config = FleetConfig(
        assignments,
        SshOptions(
            None,
            bool(args.accept_new_host_keys),
            known_hosts=os.path.abspath(relay.KNOWN),
            through=plan.origin,
        ),
        cconns=args.cconns or 8,
        caching=not args.no_caching,
        converged_timeout=args.converged_timeout,
        detach=bool(args.detach),
        agent_args=tuple(f for f, on in (("--noop", args.noop), ("--diff", args.diff)) if on),
        world=plan.world_port is not None,
    )

    async def main() -> None:
        fleet = Fleet(config, lambda: payload, lambda h, t, e: write(relay.line(h, t, e)))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, fleet.stop)

        def watch_stdin() -> None:  # its end (the initiator closed it, or is gone): stop
            while sys.stdin.buffer.read(4096):
                pass
            loop.call_soon_threadsafe(fleet.stop)

        threading.Thread(target=watch_stdin, daemon=True).start()
        port = plan.world_port
        world = None if port is None else relay.Upstream(port, plan.tokens)
        for r in await fleet.run(world):
            write(relay.result(r.name, r.status, r.error, r.copied, r.detached_pid))

    asyncio.run(main())
    return 0


def shares(graph: Graph[Resource[Any]]) -> bool:
    """Whether ``graph`` exchanges anything with other hosts (exports, collects, values,
    key-values, ``recv: world[HOST].NAME``): only then do the hosts get a world."""
    if graph.collect:
        return True
    return any(vertex.kind in SHARING or vertex.meta.export for vertex in graph.vertices.values())


def _load(policy: str) -> Graph[Resource[Any]] | None:
    """Load ``policy`` as its host will (without its ``remote:`` line); problems go to
    stderr."""
    from convergent.cli.load import load_graph

    if not names_remote(policy):
        return load_graph(policy)
    from convergent.errors import ConvergentError, PolicyError
    from convergent.policy.loader import MAX_POLICY_BYTES, load_policy_text
    from convergent.remote.fleet import strip_remote
    from convergent.render import say

    try:
        with open(policy, encoding="utf-8") as f:  # one past the limit is enough to refuse
            graph = load_policy_text(strip_remote(f.read(MAX_POLICY_BYTES + 1)), policy)
        graph.validate()
    except PolicyError as exc:
        for line in [str(problem) for problem in exc.problems] or [str(exc)]:
            say(line)
        return None
    except (ConvergentError, OSError, UnicodeDecodeError) as exc:
        say(f"{policy}: {exc}")
        return None
    return graph


def _state_dir(args: argparse.Namespace) -> str:
    from convergent.state.statedir import default_state_dir

    return os.path.join(os.path.abspath(args.state_dir or default_state_dir()), "remote")
