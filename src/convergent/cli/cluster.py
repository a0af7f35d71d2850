"""``convergent run`` in a cluster, and ``convergent cluster status | token``.

The run options that put an agent in a cluster (``--cluster``, ``--initial-cluster``,
``--seeds``, ``--etcd-endpoints``, ``--client-urls``, ``--peer-urls``, ``--join-token``,
``--insecure``, ``--hostname``) are declared here and read into a
:class:`~convergent.world.cluster.ClusterConfig` by :func:`cluster_config`; a run
without any of them never imports this module's dependencies.

- ``cluster status``: asks the members (etcd's JSON gateway, with this host's
  certificate) for the member list, each member's health and the leader, and reads the
  world's ``/convergent/hosts/`` keys for the connected agents (a live ``alive`` key)
  and ``/convergent/converged/`` for whether each is converged. It reads only: it is no agent of the
  world. Exit 0 when every member is healthy and there is a leader, 1 otherwise, 2 when
  no member answers.
- ``cluster token --hostname NAME``: a join token for NAME (see
  :mod:`convergent.world.tls`), printed on stdout; it is a secret.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from convergent.world.cluster import ClusterConfig

__all__ = [
    "add_cluster_parser",
    "add_run_options",
    "cluster_command",
    "cluster_config",
    "parse_initial_cluster",
    "parse_urls",
]


def _bad_value(message: str) -> Exception:
    import argparse

    return argparse.ArgumentTypeError(message)


def parse_urls(text: str) -> tuple[str, ...]:
    """``URL[,URL...]``: each ``http(s)://HOST:PORT``."""
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    if not urls:
        raise _bad_value("give one URL or more, separated by commas")
    for url in urls:
        scheme, sep, rest = url.partition("://")
        host, colon, port = rest.rstrip("/").rpartition(":")
        if scheme not in ("http", "https") or not sep or not colon or not host:
            raise _bad_value(f"{url!r} is not a URL like https://10.0.0.1:2379")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad_value(f"{url!r}: the port must be a number from 1 to 65535")
    return urls


def parse_initial_cluster(text: str) -> dict[str, tuple[str, ...]]:
    """``NAME=PEER_URL,...`` (a name given twice has two peer URLs)."""
    members: dict[str, tuple[str, ...]] = {}
    for part in (p.strip() for p in text.split(",")):
        name, eq, url = part.partition("=")
        if not eq or not name.strip():
            raise _bad_value(
                f"{part!r}: give NAME=PEER_URL for each member, e.g. "
                "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380"
            )
        members[name.strip()] = members.get(name.strip(), ()) + parse_urls(url)
    return members


def add_run_options(
    run: argparse.ArgumentParser,
    *,
    urls: Callable[[str], tuple[str, ...]],
    initial_cluster: Callable[[str], dict[str, tuple[str, ...]]],
) -> None:
    """Declare the options of ``run`` that put it in a cluster (without them: this host
    alone, the local world)."""
    group = run.add_argument_group(
        "several hosts",
        "Without these options the run is this host's alone (the local world).",
    )
    group.add_argument(
        "--hostname",
        metavar="NAME",
        default=None,
        help="this agent's name in the world (default: the machine's host name)",
    )
    group.add_argument(
        "--cluster",
        action="store_true",
        help="start an etcd member as this agent's child (data in STATE_DIR/etcd) and "
        "share the world through it; makes the cluster CA in STATE_DIR/tls",
    )
    group.add_argument(
        "--initial-cluster",
        metavar="NAME=URL,...",
        type=initial_cluster,
        default=None,
        help="the members of a cluster started by several agents, each running one "
        "(NAME: their --hostname, URL: their peer URL); implies --cluster",
    )
    group.add_argument(
        "--client-urls",
        metavar="URL,...",
        type=urls,
        default=None,
        help="where this agent's member serves clients (default: https://127.0.0.1:2379)",
    )
    group.add_argument(
        "--peer-urls",
        metavar="URL,...",
        type=urls,
        default=None,
        help="where this agent's member talks to the other members "
        "(default: its --initial-cluster entry, else https://127.0.0.1:2380)",
    )
    group.add_argument(
        "--seeds",
        metavar="URL,...",
        type=urls,
        default=None,
        help="join the cluster these members belong to, as a client (the other members "
        "are found from them)",
    )
    group.add_argument(
        "--etcd-endpoints",
        metavar="URL,...",
        type=urls,
        default=None,
        help="use an etcd cluster someone else runs; never start a member",
    )
    group.add_argument(
        "--join-token",
        metavar="FILE",
        default=None,
        help="a file holding the token made by 'convergent cluster token' on the first "
        "host: the cluster CA and this host's certificate (kept in STATE_DIR/tls)",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext etcd traffic (http://), no certificates: only on a network you trust",
    )


def add_cluster_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    urls: Callable[[str], tuple[str, ...]],
) -> None:
    """Declare ``cluster status`` and ``cluster token``."""
    cluster = commands.add_parser(
        "cluster",
        help="look at the cluster; make join tokens",
        description="The etcd cluster the agents share: its members and agents, and the "
        "tokens that let another host join it.",
    )
    actions = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status",
        help="members, leader, health, connected agents and whether each converged",
        description="Ask the cluster's members for the members, the leader and their "
        "health, and the world for the connected agents and whether each is converged.",
    )
    status.add_argument(
        "--endpoints",
        metavar="URL,...",
        type=urls,
        default=None,
        help="members to ask (default: https://127.0.0.1:2379, this host's own member)",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    token = actions.add_parser(
        "token",
        help="print a join token for another host (a secret: it holds that host's key)",
        description="Print a token for host NAME: the cluster CA and a certificate and key "
        "for NAME, made with the CA in STATE_DIR/tls (made now if there is none). On NAME: "
        "convergent run POLICY --hostname NAME --seeds URL --join-token FILE.",
    )
    token.add_argument(
        "--client-urls",
        metavar="URL,...",
        type=urls,
        default=None,
        help="where NAME's member will serve clients (its certificate names these hosts)",
    )
    token.add_argument(
        "--endpoints",
        metavar="URL,...",
        type=urls,
        default=None,
        help="the running cluster, to let NAME in at once (default: https://127.0.0.1:2379)",
    )
    token.add_argument(
        "--peer-urls",
        metavar="URL,...",
        type=urls,
        default=None,
        help="where NAME's member will talk to its peers (named in its certificate too)",
    )
    for action, needs in ((status, False), (token, True)):
        action.add_argument(
            "--hostname",
            metavar="NAME",
            required=needs,
            default=None,
            help="the host the token is for"
            if needs
            else "whose certificate (STATE_DIR/tls) to use (default: the machine's host name)",
        )
        action.add_argument(
            "--state-dir",
            metavar="DIR",
            default=None,
            help="the state directory holding tls/ (default: /var/lib/convergent for root, "
            "else $XDG_STATE_HOME/convergent or ~/.local/state/convergent)",
        )
    status.add_argument(
        "--insecure", action="store_true", help="the cluster speaks plaintext (http://)"
    )


class UsageError(ValueError):
    """The cluster options do not fit together."""


def cluster_config(args: argparse.Namespace, state_dir: str) -> ClusterConfig:
    """The :class:`ClusterConfig` of ``run``'s options; UsageError says which options
    clash and what to give instead."""
    import socket

    from convergent.world.cluster import ClusterConfig

    hostname = args.hostname or socket.gethostname()
    member = bool(args.cluster or args.initial_cluster)
    modes = [
        flag
        for flag, given in (
            ("--cluster/--initial-cluster", member),
            ("--seeds", args.seeds),
            ("--etcd-endpoints", args.etcd_endpoints),
        )
        if given
    ]
    if len(modes) > 1:
        raise UsageError(
            f"{' and '.join(modes)}: give one (--cluster starts a member, --seeds joins "
            "a cluster as a client, --etcd-endpoints uses one that convergent does not run)"
        )
    if not modes:
        raise UsageError(
            "--client-urls, --peer-urls, --join-token and --insecure go with --cluster, "
            "--initial-cluster, --seeds or --etcd-endpoints"
        )
    if not member and (args.client_urls or args.peer_urls):
        raise UsageError(
            "--client-urls and --peer-urls are where this agent's own member listens: "
            "give them with --cluster or --initial-cluster"
        )
    if member and getattr(args, "noop", False):
        raise UsageError(
            "--noop changes nothing, so it starts no etcd member: read a running cluster "
            "with --seeds or --etcd-endpoints"
        )
    scheme = "http" if args.insecure else "https"
    initial: dict[str, tuple[str, ...]] = dict(args.initial_cluster or {})
    if initial and hostname not in initial:
        raise UsageError(
            f"--initial-cluster names {', '.join(sorted(initial))}, not this host "
            f"{hostname!r}: add {hostname}=PEER_URL, or give --hostname"
        )
    client_urls = tuple(args.client_urls or (f"{scheme}://127.0.0.1:2379",)) if member else ()
    peer_urls: tuple[str, ...] = ()
    if member:
        peer_urls = tuple(
            args.peer_urls or initial.get(hostname) or (f"{scheme}://127.0.0.1:2380",)
        )
    every = [
        *client_urls,
        *peer_urls,
        *(args.seeds or ()),
        *(args.etcd_endpoints or ()),
        *(u for urls in initial.values() for u in urls),
    ]
    for url in every:
        if not url.startswith(f"{scheme}://"):
            raise UsageError(
                f"{url}: with --insecure every URL is http:// (plaintext)"
                if args.insecure
                else f"{url}: traffic is encrypted unless you give --insecure; write https:// URLs"
            )
    token = None
    if args.join_token:
        if args.insecure:
            raise UsageError("--join-token brings certificates; --insecure uses none")
        token = _read_token(args.join_token)
    return ClusterConfig(
        hostname=hostname,
        state_dir=state_dir,
        member=member,
        initial_cluster=initial,
        client_urls=client_urls,
        peer_urls=peer_urls,
        seeds=tuple(args.seeds or ()),
        endpoints=tuple(args.etcd_endpoints or ()),
        insecure=bool(args.insecure),
        token=token,
    )


def _read_token(path: str) -> str:
    if path == "-":
        return sys.stdin.read(1 << 16)
    from convergent.host import fs

    try:
        with fs.locate(os.path.abspath(path), follow=True) as at:
            data, _ = fs.read_regular(at)
    except OSError as exc:
        raise UsageError(f"--join-token {path}: {exc.strerror or exc}") from None
    return data.decode("utf-8", "replace")


# -- convergent cluster status | token ------------------------------------------------


def cluster_command(args: argparse.Namespace) -> int:
    """Run ``convergent cluster ACTION``."""
    from convergent.errors import ConvergentError
    from convergent.render import say
    from convergent.state.statedir import default_state_dir

    state_dir = os.path.abspath(args.state_dir or default_state_dir())
    try:
        if args.action == "token":
            import asyncio

            from convergent.world.tls import make_token

            urls = [*(args.client_urls or ()), *(args.peer_urls or ())]
            token = make_token(state_dir, args.hostname, urls)
            asyncio.run(_grant(state_dir, args.hostname, list(args.endpoints or ())))
            print(token, flush=True)
            return 0
        return _status(args, state_dir)
    except ConvergentError as exc:
        say(f"convergent: {exc}")
        return 2


async def _grant(state_dir: str, host: str, endpoints: list[str]) -> None:
    """Give ``host`` its role now if this host's cluster runs (else its agent does at its
    next start: the host is in ``tls/issued``)."""
    from convergent.render import say
    from convergent.world.base import WorldError
    from convergent.world.cluster import grant_hosts
    from convergent.world.tls import CA_NAMES, host_files, tls_dir

    base = tls_dir(state_dir)
    own = [n[:-4] for n in sorted(os.listdir(base)) if n.endswith(".crt") and n not in CA_NAMES]
    if not own:
        return  # no member ran here yet: its first start gives every issued host its role
    files = host_files(state_dir, own[0])
    endpoints = endpoints or ["https://127.0.0.1:2379"]
    try:
        await grant_hosts(endpoints, files, own[0], [host])
    except WorldError:
        say(
            f"convergent: no member answered at {', '.join(endpoints)}: {host} gets its role "
            f"when the agent of {state_dir} next starts (or give --endpoints)"
        )


def _status(args: argparse.Namespace, state_dir: str) -> int:
    import asyncio
    import json
    import socket

    from convergent.world.tls import host_files

    tls = None
    if not args.insecure:
        tls = host_files(state_dir, args.hostname or socket.gethostname())
        if not os.path.exists(tls.cert):
            from convergent.world.cluster import ClusterError

            raise ClusterError(
                f"no {tls.cert}: give the --state-dir and --hostname of an agent of the "
                "cluster (its certificate is the way in), or --insecure"
            )
    scheme = "http" if args.insecure else "https"
    endpoints = list(args.endpoints or (f"{scheme}://127.0.0.1:2379",))
    report = asyncio.run(status(endpoints, tls))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True), flush=True)
    else:
        _print_status(report)
    healthy = report["leader"] is not None and all(m["healthy"] for m in report["members"])
    return 0 if healthy else 1


async def status(endpoints: list[str], tls: Any) -> dict[str, Any]:
    """Members (name, id, URLs, health, leader), the leader's name, and the agents
    (host, alive, converged) of the cluster ``endpoints`` belong to."""
    import asyncio

    from convergent.world.cluster import ClusterError, discover, member_list, member_status

    await discover(endpoints, tls)  # ClusterError naming each endpoint when none answers
    members: list[dict[str, Any]] = []
    for url in endpoints:
        try:
            members = await member_list(url, tls)
            break
        except ClusterError:
            continue

    async def health(member: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        urls = member["client_urls"]
        entry: dict[str, Any] = {
            "name": member["name"],
            "id": f"{member['id']:x}",
            "client_urls": urls,
            "peer_urls": member["peer_urls"],
            "healthy": False,
            "leader": False,
            "error": None,
        }
        if not urls:
            entry["error"] = "not started yet"
            return entry, None
        try:
            answer = await member_status(urls[0], tls)
        except ClusterError as exc:
            entry["error"] = str(exc)
            return entry, None
        leader = answer["leader"]
        entry["healthy"] = bool(leader) and not answer["errors"]
        if not leader:
            entry["error"] = "no leader"
        elif answer["errors"]:
            entry["error"] = "; ".join(answer["errors"])
        return entry, (f"{leader:x}" if leader else None)

    checked = await asyncio.gather(*(health(m) for m in members))
    leaders = {leader for _, leader in checked if leader}
    leader_name = None
    for entry, _ in checked:
        entry["leader"] = entry["id"] in leaders
        if entry["leader"]:
            leader_name = entry["name"]
    return {
        "members": [entry for entry, _ in checked],
        "leader": leader_name,
        "agents": await _agents(endpoints, tls),
    }


async def _agents(endpoints: list[str], tls: Any) -> list[dict[str, Any]]:
    from convergent.world import keys
    from convergent.world.cluster import connect

    client = connect(endpoints, tls)
    try:
        alive = await client.members()
        found = await client.get_prefix(keys.CONVERGED_KEYS)
    finally:
        await client.aclose()
    converged = {keys.split_converged_key(key): value == "1" for key, value in found.items()}
    return [
        {"host": host, "alive": True, "converged": converged.get(host)} for host in sorted(alive)
    ]


def _print_status(report: dict[str, Any]) -> None:
    from convergent.render import escape

    rows: list[tuple[str, ...]] = [("MEMBER", "ID", "CLIENT URLS", "HEALTH", "LEADER")]
    for m in report["members"]:
        rows.append(
            (
                escape(m["name"]) or "-",
                m["id"],
                ",".join(escape(u) for u in m["client_urls"]) or "-",
                "healthy" if m["healthy"] else f"unhealthy: {escape(m['error'] or '?')}",
                "*" if m["leader"] else "",
            )
        )
    _table(rows)
    print(flush=True)
    agents: list[tuple[str, ...]] = [("AGENT", "CONVERGED")]
    for a in report["agents"]:
        converged = {True: "yes", False: "no", None: "unknown"}[a["converged"]]
        agents.append((escape(a["host"]), converged))
    _table(agents)
    if len(agents) == 1:
        print("(no agent connected)", flush=True)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.flush()
