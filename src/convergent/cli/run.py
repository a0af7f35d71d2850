"""``convergent run FILE``: converge this host to a policy, then keep it there.

While it runs (unless ``--converged-timeout 0``) the policy file is watched: when it is
saved, the new policy is loaded and validated; an invalid one is reported (every problem
with its ``file:line:col``) and the running graph keeps running, a valid one replaces it
as a diff (``Engine.swap``) and one line says what changed:
``policy reloaded: +2 -1 ~1 resources``. SIGHUP (``systemctl reload``) reloads it the
same way, even when it did not change.

Under systemd (``$NOTIFY_SOCKET`` set) the run tells systemd when it is ready, how it is
doing, that it is alive and when it reloads: :mod:`convergent.cli.notify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

from convergent.cli.load import CLUSTER_OPTIONS, load_graph, remote_key, settle
from convergent.errors import ConvergentError
from convergent.render import JsonRenderer, TextRenderer, outlive_readers, say

if TYPE_CHECKING:
    import argparse
    import socket
    from collections.abc import Callable

    from convergent.cli.notify import SystemdNotifier
    from convergent.cli.observe import Observer
    from convergent.engine.changeover import Swapped
    from convergent.engine.report import Report, Reporter, RunResult
    from convergent.engine.runner import Engine
    from convergent.graph.core import Graph
    from convergent.resources.base import Resource
    from convergent.state.db import StateDB
    from convergent.web.options import HttpOptions
    from convergent.world.base import World
    from convergent.world.cluster import ClusterConfig

__all__ = ["run_command", "run_with_signals"]

NOTHING_CHANGED = "nothing was changed"


def _may_keep(file: str) -> bool:
    """Whether the policy ``file`` is long enough to be kept between runs (a shorter one
    is read every time, and the cache is not imported for it)."""
    from convergent.policy.entries import CACHE_FROM

    try:
        return os.stat(file).st_size >= CACHE_FROM
    except OSError:
        return False  # load_graph says what is wrong


def run_command(args: argparse.Namespace) -> int:
    """Load, converge, print the summary; the exit code says converged (0) or not (1)."""
    began = time.monotonic()  # --max-runtime counts from here
    outlive_readers()  # an agent whose output lost its reader goes on
    if getattr(args, "remote", None) or getattr(args, "more_files", None) or remote_key(args.file):
        if getattr(args, "max_runtime", None) is not None:
            say(
                "convergent: --max-runtime bounds this host's own run; a run on remote "
                "hosts does not take it (leave it out; --converged-timeout ends them)"
            )
            print(NOTHING_CHANGED, file=sys.stderr, flush=True)
            return 2
        from convergent.cli.remote import remote_command  # the policy goes to other hosts

        return remote_command(args)
    from convergent.cli.inputs import read_inputs

    inputs, error = read_inputs(args)
    if error is not None:
        say(error)
        print(NOTHING_CHANGED, file=sys.stderr, flush=True)
        return 2
    from convergent.state.statedir import default_state_dir, open_state_dir

    state_dir = os.path.abspath(args.state_dir or default_state_dir())
    cache = None
    if not args.noop and _may_keep(args.file):  # noop writes nothing, not even the cache
        from convergent.policy.cache import PolicyCache

        cache = PolicyCache(state_dir)
    graph = load_graph(args.file, inputs, cache)
    if graph is None:
        print(NOTHING_CHANGED, file=sys.stderr, flush=True)
        return 2
    from convergent.host.children import reap_orphans

    cluster = None
    if any(getattr(args, name, None) for name in CLUSTER_OPTIONS):
        from convergent.cli.cluster import UsageError, cluster_config

        try:
            cluster = cluster_config(args, state_dir)
        except UsageError as exc:
            say(f"convergent: {exc}")
            print(NOTHING_CHANGED, file=sys.stderr, flush=True)
            return 2
    http = None
    if getattr(args, "http", None) is not None or getattr(args, "http_token", None) is not None:
        from convergent.web.options import check_options

        try:
            http = check_options(args.http or "127.0.0.1:0", args.http_token)
        except ValueError as exc:
            say(f"convergent: {exc}")
            print(NOTHING_CHANGED, file=sys.stderr, flush=True)
            return 2
    try:  # noop changes nothing on the host, convergent's own state included
        opened = open_state_dir(
            state_dir,
            mode="shared" if args.noop else "exclusive",
            after_lock=reap_orphans,  # what commands of a killed agent left running
        )
    except ConvergentError as exc:  # StateError: says which file and how to fix it
        say(f"convergent: {exc}")
        print(NOTHING_CHANGED, file=sys.stderr, flush=True)
        return 2
    if cache is not None:
        graph = settle(cache, opened, args.file, inputs, graph)
        if graph is None:  # the policy, read again, no longer loads
            opened.close()
            print(NOTHING_CHANGED, file=sys.stderr, flush=True)
            return 2
    state = opened.db
    world = None
    hostname = getattr(args, "hostname", None)
    if cluster is None and hostname is not None:  # this host alone, under that name
        from convergent.world.local import LocalWorld

        try:
            world = LocalWorld(state, hostname=hostname)
        except ValueError as exc:
            opened.close()
            say(f"convergent: --hostname: {exc}")
            print(NOTHING_CHANGED, file=sys.stderr, flush=True)
            return 2
    watching = args.converged_timeout is None
    renderer: TextRenderer
    if getattr(args, "log_format", None) == "json":
        renderer = JsonRenderer(watching=watching, diff=getattr(args, "diff", False))
    else:
        renderer = TextRenderer(watching=watching, diff=getattr(args, "diff", False))
    notifier = None
    if "NOTIFY_SOCKET" in os.environ:  # a Type=notify systemd service
        from convergent.cli.notify import SystemdNotifier

        notifier = SystemdNotifier.from_environment()
    from convergent.cli.observe import Observer, host_name

    renderer.quiet = bool(getattr(args, "quiet", False))
    observer = Observer(args, state_dir, host_name(args), watching=watching, renderer=renderer)
    result = None
    # Start-up's objects live on: collections during the run (and the one at exit) skip
    # them. Not unfrozen afterwards: that alone added 10-20 ms to a run's exit. The
    # collector stays off (main() turned it off) through the first pass: see
    # _collect_after_first_pass.
    gc.freeze()
    try:
        result = asyncio.run(
            run_with_signals(
                graph,
                noop=args.noop,
                converged_timeout=args.converged_timeout,
                max_runtime=getattr(args, "max_runtime", None),
                began=began,
                reporter=renderer,
                sema=args.sema,
                state=state,
                policy=args.file,
                notifier=notifier,
                world=world,
                cluster=cluster,
                observer=observer,
                http=http,
            )
        )
    except ConvergentError as exc:  # the cluster could not be started, found or reached
        say(f"convergent: {exc}")
        print(NOTHING_CHANGED, file=sys.stderr, flush=True)
        return 2
    finally:
        observer.finish(result)
        opened.close()
        if notifier is not None:
            notifier.close()
    renderer.note(result.summary(), event="summary")
    if args.noop:
        renderer.noop_summary(NOTHING_CHANGED)
    return result.exit_code or observer.code


async def run_with_signals(
    graph: Graph[Resource[Any]],
    *,
    noop: bool,
    converged_timeout: float | None,
    reporter: TextRenderer,
    max_runtime: float | None = None,
    began: float | None = None,
    sema: int | None = None,
    state: StateDB | None = None,
    policy: str | None = None,
    notifier: SystemdNotifier | None = None,
    world: World | None = None,
    cluster: ClusterConfig | None = None,
    observer: Observer | None = None,
    http: HttpOptions | None = None,
) -> RunResult:
    """Run the engine; SIGINT and SIGTERM stop it cleanly (workers cancelled, summary kept).

    ``policy``: the file ``graph`` was loaded from, reloaded whenever it is saved or on
    SIGHUP (not when ``converged_timeout`` is 0: that run is over before anyone could edit
    it). ``max_runtime``: stop that many seconds after ``began`` (``time.monotonic()``;
    default: now), as SIGTERM stops it, but the result says whether it converged (exit
    code 1 if not). ``notifier``: systemd's, told about readiness, state, reloads and
    liveness.
    ``world``: every resource's ``ctx.world`` (None: the local world). ``cluster``: the
    world is the cluster's (:func:`convergent.world.cluster.open_world`: the agent's
    etcd member, if it runs one, starts first and stops last); a ClusterError before
    the engine starts means nothing was applied. ``observer``: the run's events and what
    watches them (cli/observe.py). ``http``: serve the web view
    (:mod:`convergent.web`) while the engine runs.
    """
    if cluster is not None:
        from convergent.world.cluster import open_world

        def log(message: str) -> None:
            reporter.note(message, error=True)

        async with open_world(cluster, log) as opened:
            return await run_with_signals(
                graph,
                noop=noop,
                converged_timeout=converged_timeout,
                reporter=reporter,
                max_runtime=max_runtime,
                began=began,
                sema=sema,
                state=state,
                policy=policy,
                notifier=notifier,
                world=opened,
                observer=observer,
                http=http,
            )
    from convergent.engine.runner import Engine

    engine = Engine(
        graph,
        noop=noop,
        converged_timeout=converged_timeout,
        reporter=_collect_after_first_pass(
            reporter if notifier is None else notifier.reporter(reporter),
            ends=converged_timeout == 0,
        ),
        sema=sema,
        state=state,
        world=world,
        events=observer.events if observer is not None else None,
    )
    web = None
    if http is not None:  # before anything runs: an address in use changes nothing
        from convergent.web.serve import start

        web = await start(engine, http, say)  # its address, on stderr
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    reload = _Reload()

    stopped: list[str] = []  # why, first cause first

    def stop(sig: signal.Signals | str) -> None:
        engine.stop()  # first: nothing said about it may keep the run from stopping
        why = sig if isinstance(sig, str) else sig.name
        stopped.append(why)
        reporter.note(f"{why}: stopping", error=True, event="stopping")
        if notifier is not None:
            notifier.stopping(why)

    def hangup(sig: signal.Signals) -> None:
        if reload.follows:
            reload.forced = True
            reload.wake.set()
        else:
            reporter.note(f"{sig.name}: this run ends when it converges; nothing to reload")

    restore = _on_signals(loop, {sig: hangup if sig == signal.SIGHUP else stop for sig in signals})
    tasks: list[asyncio.Task[None]] = []
    if policy is not None and converged_timeout != 0:
        reload.follows = True
        tasks.append(
            asyncio.create_task(
                _follow(engine, policy, reporter, reload, notifier), name="policy reload"
            )
        )
    if notifier is not None and notifier.watchdog is not None:
        tasks.append(asyncio.create_task(notifier.keep_alive(), name="systemd watchdog"))
    if observer is not None:
        tasks.extend(observer.start(engine, reporter.note))
    limit = reason = None
    if max_runtime is not None:
        reason = f"max runtime ({max_runtime:g} s) reached"

        def out_of_time() -> None:
            if stopped or engine.ended:  # a signal stopped it, or it ended and cleans up
                return
            left = _unsettled(engine.vertex_states())
            if left:
                stop(f"{reason} before {left} settled")
            elif engine.converged:
                stop(reason)
            else:  # a swap (policy reload) under way, or the world not yet in step
                stop(f"{reason} before the run converged")

        spent = 0.0 if began is None else time.monotonic() - began
        limit = loop.call_later(max(0.0, max_runtime - spent), out_of_time)
    try:
        result = await engine.run()
        if reason is not None and stopped and stopped[0].startswith(reason):
            # not an interruption: its exit code says whether it converged
            result = msgspec.structs.replace(result, interrupted=False)
        return result
    finally:
        if limit is not None:
            limit.cancel()
        if web is not None:
            await web.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        restore()


def _unsettled(states: dict[str, str], shown: int = 5) -> str:
    """``exec[a] (running), file[/b] (retrying) and 7 waiting``: the vertices at work
    (checking or applying: running) or retrying, the first ``shown`` of them and how many
    more, then how many wait for them; empty when none is unsettled."""
    busy = [
        f"{vid} ({'retrying' if state == 'retrying' else 'running'})"
        for vid, state in states.items()
        if state in ("checking", "applying", "retrying")
    ]
    waiting = sum(state == "waiting" for state in states.values())
    parts = busy[:shown]
    if len(busy) > shown:
        parts.append(f"{len(busy) - shown} more")
    if waiting:
        noun = "" if busy else " resource" if waiting == 1 else " resources"
        parts.append(f"{waiting} waiting{noun}")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)


def _on_signals(
    loop: asyncio.AbstractEventLoop,
    handlers: dict[signal.Signals, Callable[[signal.Signals], None]],
) -> Callable[[], None]:
    """Run ``handlers[sig](sig)`` in ``loop`` when ``sig`` arrives, as
    ``loop.add_signal_handler`` does; return what puts the previous handlers back.

    ``add_signal_handler`` and ``remove_signal_handler`` each list every valid signal as
    enum members (``signal.valid_signals()``): 4.6 M instructions for three signals, 1.5%
    of a 10-file run. Here the Python handler only schedules the call in the loop; a
    wake-up descriptor (unless the process has one) wakes the loop when the signal lands
    on another thread, and system calls restart (``siginterrupt(sig, False)``) as with
    asyncio's own handlers. The handlers are set through ``_signal``: ``signal.signal``
    turns the previous handler into a ``Handlers`` member when it can, and when it is a
    function (asyncio.run's for SIGINT, which holds the main task) it builds the
    ``ValueError`` that says it is not one, with the function's repr: the task's, its
    callbacks' and their source lines (``inspect``)."""
    import _signal  # type: ignore[import-not-found]  # no stub: the C half of signal
    import socket

    def deliver(number: int, frame: object) -> None:
        sig = signal.Signals(number)
        loop.call_soon_threadsafe(handlers[sig], sig)

    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    try:
        previous_fd = signal.set_wakeup_fd(writer.fileno())
    except ValueError as exc:  # not the main thread: as add_signal_handler says it
        reader.close()
        writer.close()
        raise RuntimeError(str(exc)) from None
    if previous_fd != -1:  # the process already has one (its loop wakes): keep it
        signal.set_wakeup_fd(previous_fd)
        reader.close()
        writer.close()
    else:
        loop.add_reader(reader.fileno(), _drain, reader)
    previous: dict[signal.Signals, Any] = {}

    def restore() -> None:
        for sig, handler in previous.items():
            _signal.signal(sig, handler)
        if previous_fd == -1:
            signal.set_wakeup_fd(-1)
            loop.remove_reader(reader.fileno())
            reader.close()
            writer.close()

    try:
        for sig in handlers:
            previous[sig] = _signal.signal(sig, deliver)
            signal.siginterrupt(sig, False)
    except BaseException:
        restore()  # what was set so far: the process is left as it was
        raise
    return restore


def _drain(reader: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while reader.recv(4096):
            pass


class _Reload:
    """What asks the policy to be read again: a save (``wake``), SIGHUP (``forced`` too)."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.forced = False
        self.follows = False


QUIET = 0.05  # seconds without another event before a saved policy is read: editors
# write in steps (truncate, write, rename) and the first event may come mid-way


async def _follow(
    engine: Engine,
    policy: str,
    reporter: TextRenderer,
    reload: _Reload,
    notifier: SystemdNotifier | None = None,
) -> None:
    """Reload ``policy`` each time it is saved with new content, or on SIGHUP (``reload``),
    and swap it in."""
    from convergent.resources.fswatch import FsWatcher

    path = _absolute(policy)
    watcher = FsWatcher()
    saved = reload.wake
    unsubscribe = None
    try:
        unsubscribe = watcher.watch(path, saved.set)
    except OSError as exc:
        watcher.close()
        _say(
            reporter,
            f"convergent: cannot watch {policy} ({exc}); edits are reloaded on SIGHUP only",
        )
    last = _content(path)
    refused = f"policy not reloaded: fix {policy}; still running the last one"

    said = ["policy reloaded"]

    def announce(swapped: Swapped) -> None:  # before the reports the swap causes
        said[0] = f"policy reloaded: {swapped.text()}"
        reporter.note(said[0], event="reloaded")

    try:
        while True:
            await saved.wait()
            while saved.is_set():  # until the file has been quiet for a moment
                saved.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(saved.wait(), QUIET)
            forced, reload.forced = reload.forced, False
            data = _content(path)
            if data is None or (data == last and not forced):
                continue  # gone (mid-rename) or touched without a change: nothing to do
            last = data
            if notifier is not None:
                notifier.reloading("SIGHUP" if forced else "saved")
            graph = await asyncio.to_thread(load_graph, policy)  # problems go to stderr
            if graph is None:
                _refused(reporter, notifier, refused)
                continue
            said[0] = "policy reloaded"
            try:
                await engine.swap(graph, planned=announce)
            except ConvergentError as exc:
                _say(reporter, f"{policy}: {exc}")
                _refused(reporter, notifier, refused)
                continue
            except RuntimeError:  # the run ended meanwhile
                return
            if notifier is not None:  # the new graph is in place
                notifier.reloaded(said[0])
    finally:
        if unsubscribe is not None:
            unsubscribe()
            watcher.close()


def _refused(reporter: TextRenderer, notifier: SystemdNotifier | None, message: str) -> None:
    _say(reporter, message)
    if notifier is not None:
        notifier.reloaded(message)


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _content(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _say(reporter: TextRenderer, message: str) -> None:
    reporter.note(message, error=True)


FIRST_PASS_BOUND = 60.0  # seconds the collector may stay off for a first pass


def _collect_after_first_pass(reporter: Reporter, ends: bool = False) -> Reporter:
    """``reporter``, and the cyclic garbage collector turned on at the first ``Converged``
    (or after :data:`FIRST_PASS_BOUND` s, for a run that does not converge).

    ``ends``: the run ends at its first convergence (``--converged-timeout 0``); the
    collector stays off then, as nothing is left to collect for: turned on, its first
    young collection scans every object the first pass made (~4 ms and ~14 M
    instructions at 1,000 files), and the process ends right after without a teardown.

    The first pass makes every worker's objects at once and almost no garbage (~200
    objects in a 50,000-file check); with the collector on, its full collections scan
    them again and again: 9 of 25 s of that check, growing faster than N
    (docs/performance.md)."""
    from convergent.engine.report import Converged

    def turn_on() -> None:
        if not gc.isenabled():
            gc.freeze()  # what the first pass made lives on: no collection walks it again
            gc.enable()

    asyncio.get_running_loop().call_later(FIRST_PASS_BOUND, turn_on)

    def report(record: Report) -> None:
        if isinstance(record, Converged) and not ends:
            turn_on()
        reporter(record)

    return report
