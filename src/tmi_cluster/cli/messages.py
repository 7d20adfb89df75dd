"""The commands about chat messages the cluster sends: ``send`` and ``dead-letters`` (the
sends that could not be carried out)."""

from __future__ import annotations

from typing import Any

import click

from tmi_cluster.cli.common import ExitCode, Seconds, fail, plural, settings, table
from tmi_cluster.errors import TmiClusterError

__all__ = ["SEND_EXIT", "dead_letters", "send"]

#: The exit code of each send result (status, or refusal reason).
SEND_EXIT = {
    "written": ExitCode.OK,
    "too_long": ExitCode.DATAERR,
    "unauthorized": ExitCode.NOPERM,
    "rate_limited": ExitCode.TEMPFAIL,
    "no_identity": ExitCode.UNAVAILABLE,
    "not_connected": ExitCode.UNAVAILABLE,
    "failed": ExitCode.FAILURE,
    "timed_out": ExitCode.TEMPFAIL,
}


@click.command()
@click.argument("channel")
@click.argument("text")
@click.option("--reply-to", help="The id of the message to answer (a reply in its thread).")
@click.option("--action", is_flag=True, help="Send it as a /me action.")
@click.option(
    "--timeout",
    "timeout_s",
    type=Seconds(max=300),
    default=10.0,
    show_default=True,
    help="Seconds to wait for a worker to write it.",
)
@click.option(
    "--key",
    help="Idempotency key: another send with this key within an hour sends "
    "nothing and answers this one's result.",
)
@click.option(
    "--sender",
    metavar="LOGIN",
    help="The bot account that sends it (tmi.identity or one of tmi.identities); "
    "default: the channel's sender.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def send(
    ctx: click.Context,
    channel: str,
    text: str,
    reply_to: str | None,
    action: bool,
    timeout_s: float,
    key: str | None,
    sender: str | None,
    as_json: bool,
) -> None:
    """Send TEXT to CHANNEL through a worker with the bot's identity, and say what became of
    it: written, refused (and why) or timed out. The exit code follows the result (0 written;
    65 too long; 69 no identity or not connected; 75 rate limited or timed out; 77 the login
    was refused; 1 failed)."""
    import asyncio

    import msgspec

    from tmi_cluster.cluster.client import Cluster

    async def go() -> Any:
        async with Cluster(settings(ctx)) as cluster:
            return await cluster.send(
                channel,
                text,
                reply_to=reply_to,
                action=action,
                timeout_s=timeout_s,
                key=key,
                sender=sender,
            )

    try:
        result = asyncio.run(go())
    except ValueError as error:
        if isinstance(error, TmiClusterError):
            raise
        fail(str(error), ExitCode.USAGE)
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
    else:
        if result.ok:
            shown = f"written ({plural(result.parts, 'part')}, by {result.process})"
        else:
            reason = f" ({result.reason})" if result.reason else ""
            shown = f"{result.status.value}{reason}: {result.detail}"
        click.echo(f"#{result.channel}: {shown}")
    ctx.exit(SEND_EXIT.get(result.reason or result.status.value, ExitCode.FAILURE))


@click.command(name="dead-letters")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=100_000),
    default=100,
    show_default=True,
    help="The newest this many.",
)
@click.pass_context
def dead_letters(ctx: click.Context, as_json: bool, limit: int) -> None:
    """The send commands that could not be carried out (newest first), with the reason, and
    the commands workers hold unanswered."""
    import asyncio

    import msgspec

    from tmi_cluster.cluster.client import Cluster

    async def go() -> tuple[list[Any], dict[str, int]]:
        async with Cluster(settings(ctx)) as cluster:
            await cluster.ping()
            return await cluster.dead_letters(limit), await cluster.pending_sends()

    letters, pending = asyncio.run(go())
    if as_json:
        click.echo(msgspec.json.encode(letters).decode())
        return
    import datetime as dt

    rows = [
        [
            dt.datetime.fromtimestamp(d.at, dt.UTC).isoformat(timespec="seconds"),
            f"#{d.command.channel}",
            d.process,
            str(d.deliveries),
            d.reason,
        ]
        for d in letters
    ]
    click.echo(table(["at", "channel", "process", "reads", "reason"], rows, "no dead letters"))
    waiting = {p: n for p, n in pending.items() if n}
    if waiting:
        click.echo("unanswered: " + ", ".join(f"{p} {n}" for p, n in sorted(waiting.items())))
