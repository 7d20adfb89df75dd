"""The commands about channels: ``join``, ``part``, ``authorize`` and ``channels`` (their
states)."""

from __future__ import annotations

from typing import Any

import click

from tmi_cluster.cli.common import ExitCode, Seconds, cluster_settings, fail, plural, table
from tmi_cluster.errors import TmiClusterError

__all__ = ["authorize", "channels", "join", "part"]


@click.command()
@click.argument("channels", nargs=-1, required=True)
@click.option(
    "--timeout",
    "timeout_s",
    type=Seconds(max=3600),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the outcomes.",
)
@click.option(
    "--authorize",
    "grant",
    is_flag=True,
    help="Authorize the channels first (channel_manager.use = 'database').",
)
@click.pass_context
def join(ctx: click.Context, channels: tuple[str, ...], timeout_s: float, grant: bool) -> None:
    """Join channels now: each goes to the live worker process with the fewest channels, and
    its outcome is printed (exit 1 unless every channel joined). With the Database channel
    manager, a channel not authorized is refused (unauthorized) unless --authorize."""
    import asyncio

    from tmi_cluster.cluster import admin

    settings = cluster_settings(ctx)
    if grant:  # the channels authorized already keep their grant (and its reconnect)
        changes = asyncio.run(admin.authorize(settings, list(channels), only_new=True))
        for channel, change in changes.items():
            click.echo(f"#{channel}: {change}")
    outcomes = asyncio.run(admin.join(settings, list(channels), timeout_s=timeout_s))
    for channel, outcome in outcomes.items():
        click.echo(f"#{channel}: {outcome}")
    if any(not o.ok for o in outcomes.values()):
        ctx.exit(ExitCode.FAILURE)


@click.command()
@click.argument("channels", nargs=-1, required=True)
@click.option("--revoke", is_flag=True, help="Withdraw the authorization (parts the channels).")
@click.option("--reconnect", is_flag=True, help="Wanted again after any restart.")
@click.option(
    "--sender",
    metavar="LOGIN",
    help="The bot account that sends in the channels (tmi.identity or one of "
    "tmi.identities; channel_manager.use = 'database').",
)
@click.option(
    "--default-sender",
    is_flag=True,
    help="Forget the channels' recorded sender: the settings choose again.",
)
@click.pass_context
def authorize(
    ctx: click.Context,
    channels: tuple[str, ...],
    revoke: bool,
    reconnect: bool,
    sender: str | None,
    default_sender: bool,
) -> None:
    """Grant channels their authorization through the channel manager (channel_manager.use),
    or withdraw it with --revoke (their workers part them within seconds, and what their
    streamers granted on the invite screen is deleted; its token is not withdrawn at Twitch
    from here); prints what changed for each."""
    import asyncio

    from tmi_cluster.cluster import admin

    if revoke and reconnect:
        fail("--revoke and --reconnect do not go together", ExitCode.USAGE)
    if revoke and (sender is not None or default_sender):
        fail("--revoke and --sender do not go together", ExitCode.USAGE)
    if sender is not None and default_sender:
        fail("--sender and --default-sender do not go together", ExitCode.USAGE)
    if sender is not None and not sender.strip():
        fail("--sender needs a login (--default-sender forgets the sender)", ExitCode.USAGE)
    if default_sender:
        sender = ""
    try:
        changes = asyncio.run(
            admin.authorize(
                cluster_settings(ctx),
                list(channels),
                revoke=revoke,
                reconnect=reconnect,
                sender=sender,
            )
        )
    except ValueError as error:
        if isinstance(error, TmiClusterError):
            raise
        fail(str(error), ExitCode.USAGE)
    for channel, change in changes.items():
        shown = f", sent to by {sender.lower()}" if sender else ""
        click.echo(f"#{channel}: {change}{shown}" if sender != "" else f"#{channel}: {change}")
    changed = sum(1 for c in changes.values() if c in admin.AUTHORIZE_CHANGES)
    click.echo(f"{plural(changed, 'channel')} changed, {len(changes) - changed} unchanged")


def _failure_shown(channel: dict[str, Any]) -> str:
    """The last failure of a channel in words: its reason, how often, what happens next."""
    if not channel["failure"]:
        return ""
    attempts = int(channel["attempts"])
    text = str(channel["failure"]) + (f" ({attempts} times)" if attempts > 1 else "")
    if channel["given_up"]:
        return text + ", given up: join it again to retry"
    if channel["retry_at"]:
        return text + f", retry at {channel['retry_at']}"
    return text


@click.command()
@click.argument("names", nargs=-1)
@click.option(
    "--state",
    "states",
    multiple=True,
    help="Only the channels in this state (repeatable: any of them).",
    type=click.Choice(
        ["wanted", "joining", "joined", "moving", "failed", "parted", "unauthorized"]
    ),
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def channels(
    ctx: click.Context, names: tuple[str, ...], states: tuple[str, ...], as_json: bool
) -> None:
    """Each channel's state (wanted, joining, joined, moving, failed, parted, unauthorized),
    owner process, route (irc or eventsub) and why, since when, and its last failure; every
    known channel, or the ones named. While the cluster is down, the database's states, marked
    '?', with a warning."""
    import asyncio
    import json

    from tmi_cluster.cluster import admin

    def warn(text: str) -> None:
        click.echo(f"warning: {text}", err=True)

    settings = cluster_settings(ctx)
    shown = asyncio.run(admin.channels(settings, list(names), state=states or None, warn=warn))
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    rows = [
        [
            str(c["channel"]),
            str(c["state"]) + ("" if c["live"] else "?"),
            c["process"] or "",
            str(c["route"]),
            str(c["since"]),
            _failure_shown(c),
        ]
        for c in shown
    ]
    headers = ["channel", "state", "process", "route", "since", "last failure"]
    if settings.coordinator.replicas > 1:  # two copies: where the second one is
        headers.insert(3, "second copy")
        for row, c in zip(rows, shown, strict=True):
            row.insert(3, str(c["replica"] or ""))
    if len(settings.tmi.accounts) > 1:  # several bot accounts: which sends where
        at = headers.index("route") + 1
        headers.insert(at, "sender")
        for row, c in zip(rows, shown, strict=True):
            row.insert(at, str(c["sender"] or ""))
    click.echo(table(headers, rows, "no channels"))
    reasons = sorted({(str(c["route"]), str(c["route_reason"])) for c in shown})
    if len(reasons) > 1 or any(route != "irc" for route, _ in reasons):  # EventSub in play
        click.echo("routes (--json says each channel's):")
        for route, reason in reasons[:5]:
            click.echo(f"  {route}: {reason}")


@click.command()
@click.argument("channels", nargs=-1, required=True)
@click.pass_context
def part(ctx: click.Context, channels: tuple[str, ...]) -> None:
    """Part channels now (their worker processes part them within a second or two)."""
    import asyncio

    from tmi_cluster.cluster import admin

    parted = asyncio.run(admin.part(cluster_settings(ctx), list(channels)))
    for channel, owner in parted.items():
        click.echo(f"#{channel}: {'parted from ' + owner if owner else 'was not joined'}")
