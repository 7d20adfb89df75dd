"""The commands that look at a cluster without changing it: ``features`` (the settings),
``list`` (supervisors and processes), ``health`` (one line and an exit code, for monitors) and
``tail`` (the event stream).

``list`` and ``health`` are called often (a monitor runs ``health`` every few seconds): they
import the store and the heartbeat reader, and never the asyncio cluster client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from tmi_cluster.cli.common import (
    ExitCode,
    cluster_settings,
    fail,
    long_running,
    plural,
    records,
    settings,
    table,
)
from tmi_cluster.errors import StorageError, TmiClusterError

if TYPE_CHECKING:
    from tmi_cluster.cluster.listing import Liveness

__all__ = ["event_line", "features", "health", "list_", "tail"]


@click.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print the settings as JSON (secrets masked)."
)
@click.pass_context
def features(ctx: click.Context, as_json: bool) -> None:
    """Print the active setup: config file, database, Redis, identity, limits (secrets masked)."""
    from tmi_cluster.cluster.features import describe
    from tmi_cluster.config import settings_json

    loaded = settings(ctx)
    if as_json:
        click.echo(settings_json(loaded))
        return
    rows = describe(loaded)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {value}")


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--all", "show_all", is_flag=True, help="Show the stopped too (kept for history).")
@click.option("--alive", is_flag=True, help="Only the live ones (no stopped, no dead).")
@click.pass_context
def list_(ctx: click.Context, as_json: bool, show_all: bool, alive: bool) -> None:
    """List supervisors and processes, with their state, last heartbeat and figures.

    Liveness comes from the Redis heartbeats: a record that says running without a heartbeat is
    shown dead. When Redis cannot be reached, the records are listed with a warning. The table
    hides the cleanly stopped (their rows are kept for history: --all shows them); --alive
    shows only the live ones. --json lists every record unless --alive.
    """
    import json

    from tmi_cluster.cluster.listing import check_liveness, cluster_json, eventsub_line

    if show_all and alive:
        raise click.UsageError("--all and --alive exclude each other")
    loaded = cluster_settings(ctx)
    supervisors, processes = records(loaded)
    liveness = check_liveness(loaded, supervisors, processes)
    if liveness.warning:
        click.echo(f"warning: {liveness.warning}", err=True)
    hidden = {"stopped", "dead"} if alive else set() if show_all or as_json else {"stopped"}
    if as_json:
        shown = cluster_json(supervisors, processes, liveness)
        for kind in ("supervisors", "processes"):
            shown[kind] = [row for row in shown[kind] if row["state"] not in hidden]
        click.echo(json.dumps(shown, indent=2))
        return
    shown_count = _echo_tables(supervisors, processes, liveness, hidden)
    _echo_simulated(liveness)
    route = eventsub_line(liveness.eventsub)
    if route is not None:
        click.echo(f"\n{route}")
    left_out = len(supervisors) + len(processes) - shown_count
    if left_out:
        what = "stopped or dead" if alive else "stopped"
        click.echo(f"\n({plural(left_out, 'record')} {what} not shown: --all shows them)")


_SUPERVISOR_HEADER = ["supervisor", "host", "pid", "state", "age", "last heartbeat", "processes"]
_PROCESS_HEADER = [
    "process",
    "supervisor",
    "pid",
    "state",
    "last heartbeat",
    "channels",
    "connections",
    "memory",
    "messages/s",
]


def _echo_tables(
    supervisors: Sequence[Any], processes: Sequence[Any], liveness: Liveness, hidden: set[str]
) -> int:
    """Print ``list``'s two tables without the states in ``hidden``; return the rows shown."""
    from tmi_cluster.cluster.listing import process_rows, supervisor_rows

    supervisor_table = [
        r for r in supervisor_rows(supervisors, processes, liveness) if r[3] not in hidden
    ]
    process_table = [r for r in process_rows(processes, liveness) if r[3] not in hidden]
    click.echo(table(_SUPERVISOR_HEADER, supervisor_table, "no supervisors"))
    click.echo()
    click.echo(table(_PROCESS_HEADER, process_table, "no processes"))
    return len(supervisor_table) + len(process_table)


def _echo_simulated(liveness: Liveness) -> None:
    """Say which supervisors read the built-in simulator, not Twitch (nothing when none)."""
    simulated = sorted(
        i for i, b in (liveness.supervisors or {}).items() if b.status.chat == "simulator"
    )
    if simulated:
        click.echo(
            f"\nsimulated chat, not Twitch: {', '.join(simulated)} "
            f"{'reads' if len(simulated) == 1 else 'read'} the built-in "
            "simulator (tmi.connection.simulate)"
        )


@click.command()
@click.option("--host-only", is_flag=True, help="Only the supervisors of this host.")
@click.option("--hostname", help="Only the supervisors of this host name (matched exactly).")
@click.option("--at-least-one", is_flag=True, help="Unhealthy when no supervisor is alive.")
@click.pass_context
def health(ctx: click.Context, host_only: bool, hostname: str | None, at_least_one: bool) -> None:
    """Exit 0 when the cluster is healthy, 1 when not, with a one-line reason.

    Unhealthy: a supervisor that should run has no heartbeat, or runs fewer than
    auto_scale.processes.min workers (the reason says why when it knows), Redis cannot be asked,
    or (--at-least-one) no supervisor is alive.
    """
    import socket

    from tmi_cluster.cluster import listing

    if host_only and hostname is not None:
        raise click.UsageError("give --host-only (this host) or --hostname NAME, not both")
    host = hostname if hostname is not None else (socket.gethostname() if host_only else None)
    try:
        loaded = cluster_settings(ctx)
        supervisors, processes = records(loaded)
    except StorageError as error:
        click.echo(f"unhealthy: {error}")
        ctx.exit(ExitCode.FAILURE)
    liveness = listing.check_liveness(loaded, supervisors, processes)
    ok, reason = listing.health(
        supervisors,
        processes,
        liveness,
        hostname=host,
        at_least_one=at_least_one,
        minimum=loaded.auto_scale.processes.min,
    )
    click.echo(("healthy: " if ok else "unhealthy: ") + reason)
    ctx.exit(ExitCode.OK if ok else ExitCode.FAILURE)


@click.command()
@click.option("--channel", "channels", multiple=True, help="Only this channel (repeatable).")
@click.option(
    "--type", "types", multiple=True, help="Only this event type, subclasses included (repeatable)."
)
@click.option("--group", help="Read as a member of this consumer group (shared, resumable).")
@click.option("--since", help="Start at this stream entry id (0 for the oldest kept).")
@click.option("--limit", type=click.IntRange(min=1, max=10**9), help="Stop after this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
@long_running
def tail(
    ctx: click.Context,
    channels: tuple[str, ...],
    types: tuple[str, ...],
    group: str | None,
    since: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Follow the cluster's event stream until interrupted: readable coloured lines, or JSON
    lines with --json (each with its "stream_id", which --since takes). Without --type, a
    cheer or a sub is one line (its own event; the generic MessageEvent or UserNoticeEvent of
    the same line only with --type)."""
    import asyncio
    import json
    import signal

    from tmi_cluster.cluster.client import Cluster
    from tmi_cluster.events import to_json

    async def go() -> None:
        async with Cluster(settings(ctx)) as cluster:
            reader = await cluster.events(
                channels=channels or None, types=types or None, group=group, since=since
            ).start()
            shown = 0
            try:
                async for event in reader:
                    if not types and _generic_companion(event):
                        continue  # its specific event (the cheer, the sub) follows
                    if as_json:
                        line = json.dumps(
                            {"stream_id": reader.last_id, **json.loads(to_json(event))}
                        )
                    else:
                        line = event_line(event, reader.last_id)
                    click.echo(line)
                    shown += 1
                    if limit is not None and shown >= limit:
                        return
            finally:
                await reader.aclose()

    loop = asyncio.new_event_loop()
    task = loop.create_task(go())
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    except ValueError as error:  # a bad --since: a usage error (ours are TmiClusterErrors)
        if isinstance(error, TmiClusterError):
            raise
        fail(str(error), ExitCode.USAGE)
    finally:
        loop.close()


def _generic_companion(event: Any) -> bool:
    """Whether ``event`` is the generic event of a line that has a specific one too: a cheer's
    MessageEvent (its CheerEvent follows), a sub's UserNoticeEvent (its SubEvent...)."""
    from tmi_cluster.events import MessageEvent, UserNoticeEvent

    kind = type(event)
    return kind is UserNoticeEvent or (kind is MessageEvent and bool(getattr(event, "bits", 0)))


def _stamp(event: Any, stream_id: str) -> str:
    """When Twitch sent ``event``, or (marked) when it was received (its stream entry's
    time), for the events Twitch does not stamp; local time, ``HH:MM:SS``."""
    import time

    sent_ms = event.tags.get("tmi-sent-ts", "")  # when Twitch sent it, if it says
    entry_ms = stream_id.partition("-")[0]
    if sent_ms.isdigit():
        at = int(sent_ms) / 1000
    elif entry_ms.isdigit():
        at = int(entry_ms) / 1000
    else:
        at = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(at))
    return stamp if sent_ms.isdigit() else stamp + " (received)"


def event_line(event: Any, stream_id: str = "") -> str:
    """One event as a readable, coloured line: when Twitch sent it, or (marked) when it was
    received (its stream entry's time), for the events Twitch does not stamp."""
    stamp = _stamp(event, stream_id)
    where = click.style(f"#{event.channel}", fg="cyan") if event.channel else ""
    kind = type(event).__name__
    user = getattr(event, "user", None)
    text = getattr(event, "text", None)
    if user and text is not None:
        body = f"{click.style(f'<{user}>', fg='green', bold=True)} {text}"
        if kind != "MessageEvent":
            body = f"{click.style(kind, fg='yellow')} {body}"
    else:
        detail = getattr(event, "reason", "") or getattr(event, "text", "") or ""
        body = click.style(kind, fg="yellow") + (f" {detail}" if detail else "")
    return f"{click.style(stamp, dim=True)} {where} {body}".replace("  ", " ")
