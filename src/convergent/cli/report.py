"""``convergent report [--since 1h] [--json]``, and the run report of ``--report-json``.

Both are made from events (:mod:`convergent.engine.events`): the history in the state
directory for ``report``, the run's own events for ``run --report-json FILE``. The
figures:

- per resource: how many passes were kept, repaired, failed, blocked (would-change under
  noop), its longest and total pass time, its last outcome and summary;
- **compliance**, as CFEngine counts promises: kept + repaired over every outcome
  (failed, blocked and would-change are "not kept"), as a percentage; none without events;
- **drift hot spots**: the resources repaired most often after their first check;
- **slowest**: the resources with the longest pass.

The JSON form is versioned (``"version": 1``) and described in docs/report-schema.md,
with a JSON Schema in docs/report-schema.json. Every text in it comes from the events,
whose secrets the engine hid; the text form escapes control characters as every line of
convergent does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from convergent.engine.report import RunResult

__all__ = [
    "REPORT_VERSION",
    "TOP",
    "build_report",
    "parse_duration",
    "render_text",
    "report_command",
    "write_report",
]

REPORT_VERSION = 1
TOP = 10  # resources listed as hot spots and as slowest
_OUTCOMES = ("kept", "repaired", "failed", "blocked", "would-change")
_COLUMNS = ("time", "host", "resource", "outcome", "seconds", "summary", "cause")

Row = Sequence[Any]  # (time, host, resource, outcome, seconds, summary, cause)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``1h``, ``7d``, ``2w`` as seconds (ValueError says why)."""
    value = text.strip()
    unit = _UNITS.get(value[-1:].lower()) if value else None
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration: give seconds, or a number with s, m, h, d or w "
            "(e.g. 1h, 7d)"
        ) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{text!r}: give a duration of 0 or more")
    return seconds


def build_report(
    rows: Iterable[Row],
    *,
    host: str,
    since: float | None,
    until: float,
    run: RunResult | None = None,
    noop: bool = False,
    with_events: bool = False,
) -> dict[str, Any]:
    """The report of ``rows`` as a JSON-ready dict (see docs/report-schema.md).

    ``run``: the result of the run the rows are from (a run report; else a history
    report). ``with_events``: list every event too.
    """
    totals = dict.fromkeys(_OUTCOMES, 0)
    per: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    hosts: set[str] = set()
    for row in rows:
        when, on, resource, outcome, seconds, summary, cause = row
        hosts.add(on)
        totals[outcome] = totals.get(outcome, 0) + 1
        entry = per.get(resource)
        if entry is None:
            entry = per[resource] = {
                "resource": resource,
                **{name.replace("-", "_"): 0 for name in _OUTCOMES},
                "seconds_max": 0.0,
                "seconds_total": 0.0,
                "last_outcome": outcome,
                "last_summary": summary,
                "last_time": when,
                "drifted": 0,
            }
        entry[outcome.replace("-", "_")] += 1
        if outcome == "repaired" and cause != "start-up":
            entry["drifted"] += 1
        entry["seconds_total"] += seconds
        entry["seconds_max"] = max(entry["seconds_max"], seconds)
        entry["last_outcome"], entry["last_summary"], entry["last_time"] = outcome, summary, when
        if with_events:
            events.append(dict(zip(_COLUMNS, row, strict=True)))
    good = totals["kept"] + totals["repaired"]
    counted = sum(totals.values())
    drifted = {e["resource"]: e.pop("drifted") for e in per.values()}
    resources = sorted(per.values(), key=lambda e: e["resource"])
    hot = sorted((r for r, n in drifted.items() if n), key=lambda r: (-drifted[r], r))[:TOP]
    slow = sorted(resources, key=lambda e: -e["seconds_max"])[:TOP]
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "kind": "run" if run is not None else "history",
        "host": host,
        "hosts": sorted(hosts),
        "since": since,
        "until": until,
        "noop": noop,
        "totals": {name.replace("-", "_"): count for name, count in totals.items()},
        "compliance": round(100.0 * good / counted, 2) if counted else None,
        "resources": resources,
        "hot_spots": [{"resource": r, "repaired": drifted[r]} for r in hot],
        "slowest": [{"resource": e["resource"], "seconds": e["seconds_max"]} for e in slow],
        "run": None,
    }
    if run is not None:
        report["run"] = {
            "resources": run.resources,
            "repairs": run.repairs,
            "repaired_resources": run.changed,
            "failed": run.failed,
            "blocked": run.blocked,
            "seconds": run.seconds,
            "converged": run.converged,
            "exit_code": run.exit_code,
        }
    if with_events:
        report["events"] = events
    return report


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def render_text(report: dict[str, Any], window: str | None = None) -> str:
    """The report for people: compliance, per-resource counts, hot spots, slowest."""
    from convergent.render import escape

    lines: list[str] = []
    since = report["since"]
    span = f"since {_stamp(since)}" + (f" ({window})" if window else "") if since else "all"
    totals = report["totals"]
    lines.append(f"events on {report['host']}: {span}, until {_stamp(report['until'])}")
    compliance = report["compliance"]
    if compliance is None:
        lines.append("no events in this window")
        return "\n".join(lines) + "\n"
    not_kept = totals["failed"] + totals["blocked"] + totals["would_change"]
    lines.append(
        f"compliance: {compliance:.1f}% (kept {totals['kept']}, repaired "
        f"{totals['repaired']}, not kept {not_kept})"
    )
    lines.append("")
    width = max(len("resource"), *(len(escape(e["resource"])) for e in report["resources"]))
    head = f"{'resource':<{width}}  {'kept':>6}  {'repaired':>8}  {'failed':>6}  {'blocked':>7}"
    lines.append(head + "  last")
    for e in report["resources"]:
        last = e["last_outcome"]
        if last in ("failed", "blocked", "would-change"):
            last += ": " + e["last_summary"]
        lines.append(
            f"{escape(e['resource']):<{width}}  {e['kept']:>6}  {e['repaired']:>8}  "
            f"{e['failed']:>6}  {e['blocked']:>7}  {escape(last)}"
        )
    if report["hot_spots"]:
        lines.append("")
        lines.append("drift hot spots (repaired most often after start-up):")
        for spot in report["hot_spots"]:
            lines.append(f"  {escape(spot['resource'])}: {spot['repaired']}")
    lines.append("")
    lines.append("slowest (longest check/apply):")
    for slow in report["slowest"][:5]:
        lines.append(f"  {escape(slow['resource'])}: {slow['seconds']:.3f} s")
    return "\n".join(lines) + "\n"


def write_report(path: str, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``path`` atomically (mode 0600: what a host did is its
    owner's business); ``-`` prints it."""
    text = json.dumps(report, ensure_ascii=True, indent=2) + "\n"
    if path == "-":
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from convergent.cli.files import write_text

    write_text(path, text, mode=0o600)


def report_command(args: argparse.Namespace) -> int:
    """``convergent report``: 0, or 2 when the history cannot be read."""
    import os

    from convergent.errors import ConvergentError
    from convergent.render import say
    from convergent.state.events import read_events
    from convergent.state.statedir import default_state_dir

    state_dir = os.path.abspath(args.state_dir or default_state_dir())
    now = time.time()
    since = None
    if args.since is not None:
        try:
            since = now - parse_duration(args.since)
        except ValueError as exc:
            say(f"convergent report: --since: {exc}")
            return 2
    try:
        rows = read_events(state_dir, since)
    except ConvergentError as exc:
        say(f"convergent report: {exc}")
        return 2
    report = build_report(rows, host=os.uname().nodename, since=since, until=now)
    if args.json:
        write_report("-", report)
    else:
        import sys

        sys.stdout.write(render_text(report, args.since))
        sys.stdout.flush()
    return 0
