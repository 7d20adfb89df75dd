"""The commands that run something in the foreground until Ctrl-C: ``run`` (a supervisor with
its workers), ``demo`` (a whole throwaway cluster) and ``simulate`` (the chat simulator)."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import click

from tmi_cluster.cli.common import long_running, plural, settings
from tmi_cluster.errors import ConfigError, TmiClusterError

__all__ = ["demo", "run", "simulate"]


def _supervisor_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from tmi_cluster.supervisor.claims import check_supervisor_id

    if value is None:
        return None
    try:
        return check_supervisor_id(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@click.option(
    "--id",
    "supervisor_id",
    callback=_supervisor_id,
    help="The supervisor's id (default: <host>-<random>): 1 to 48 ASCII letters, "
    "digits, '.', '_' or '-'.",
)
@click.pass_context
@long_running
def run(ctx: click.Context, supervisor_id: str | None) -> None:
    """Start a supervisor on this host (the main job) with its worker processes; Ctrl-C or
    SIGTERM stops it gracefully, a second one at once. SIGUSR1 restarts the workers one by one,
    SIGUSR2 pauses them, SIGCONT lets them go on.

    With redis.url empty it starts a private Redis server for the host, and stops it on exit.
    The workers read Twitch (anonymously when no identity is configured); with
    tmi.connection.simulate = "always" they read the built-in simulator, which the supervisor
    runs ('tmi-cluster demo' does that in a folder of its own).
    """
    import asyncio
    import os
    import sys

    from tmi_cluster.logs import configure_logging
    from tmi_cluster.supervisor.supervisor import Supervisor

    loaded = settings(ctx)
    configure_logging(loaded)
    config = ctx.obj.get("config")
    supervisor = Supervisor(
        loaded, supervisor_id=supervisor_id, config_path=str(config) if config else None
    )

    def ready(line: str) -> None:
        click.echo(line + "; press Ctrl-C to stop")
        if supervisor.web is not None and supervisor.web.sign_in:
            click.echo(supervisor.web.sign_in)

    asyncio.run(supervisor.run_until_signalled(on_ready=ready))
    click.echo(f"supervisor {supervisor.id} stopped")
    if supervisor.restart_wanted:  # over memory_limit: the same supervisor, a fresh process
        click.echo(f"supervisor {supervisor.id} starts again (memory_limit)")
        argv = [*without_id(sys.argv[1:]), "--id", supervisor.id]
        os.execv(sys.executable, [sys.executable, "-m", "tmi_cluster.cli", *argv])  # noqa: S606


def without_id(args: list[str]) -> list[str]:
    """Command-line arguments without ``--id X`` / ``--id=X``."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--id":
            skip = True
        elif not arg.startswith("--id="):
            kept.append(arg)
    return kept


@click.command()
@click.option(
    "--channels",
    "count",
    type=click.IntRange(min=1, max=5_000),
    default=2_000,  # demo.DEMO_CHANNELS (not imported: --help stays fast)
    show_default=True,
    help="How many simulated channels to join.",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1, max=2),
    default=1,
    show_default=True,
    help="Copies of each channel (coordinator.replicas): 2 holds each one on both workers, "
    "every event delivered once.",
)
@long_running
def demo(count: int, replicas: int) -> None:
    """Run a whole cluster on this machine, set up by nothing and leaving nothing: a private
    Redis server and a SQLite database in a temporary folder, a supervisor with two worker
    processes reading the built-in Twitch chat simulator (never Twitch), channels joined with a
    progress bar, the dashboard (its address and a password made for the run are printed), a
    live summary. Ctrl-C stops everything and deletes the folder. It runs on its own settings
    (TMI_CLUSTER_* variables and tmi-cluster.toml are not read)."""
    import asyncio

    from tmi_cluster.cli.demo import Demo

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a closed terminal too
            loop.add_signal_handler(signum, stop.set)
        await Demo(channels=count, replicas=replicas).run(stop, on_ready=click.echo)

    asyncio.run(main())
    click.echo("demo stopped; nothing left behind")


class _Port(click.IntRange):
    """A TCP port on the command line: 0 to 65535, 0 letting the system pick a free one."""

    name = "port"

    def __init__(self) -> None:
        super().__init__(0, 65535)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return int(super().convert(value, param, ctx))
        except click.BadParameter:
            self.fail(f"expected a port from 0 to 65535 (0: any free), got {value!r}", param, ctx)


class _Rate(click.FloatRange):
    """Messages per second on the command line: a finite number >= 0."""

    name = "rate"

    def __init__(self) -> None:
        super().__init__(min=0)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            rate = float(super().convert(value, param, ctx))
        except click.BadParameter:
            rate = math.nan
        if not math.isfinite(rate):
            self.fail(f"expected a number of messages per second >= 0, got {value!r}", param, ctx)
        return rate


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=_Port(),
    default=6667,
    show_default=True,
    help="IRC port (plain TCP); 0: any free.",
)
@click.option(
    "--tls-port",
    type=_Port(),
    help="Also serve TLS on this port (0: any free), with a self-signed certificate whose CA "
    "file is printed. Needs the 'tls' extra.",
)
@click.option(
    "--websocket-port",
    type=_Port(),
    help="Also serve IRC over WebSocket on this port (0: any free).",
)
@click.option(
    "--control-port",
    type=_Port(),
    help="Serve the HTTP control port (faults, traffic, accounting as JSON) here (0: any free).",
)
@click.option(
    "--eventsub-port",
    type=_Port(),
    help="Serve EventSub WebSocket sessions here (0: any free); Helix is on the control port.",
)
@click.option(
    "--channels",
    default="10",
    show_default=True,
    help="A count (channel1 ... channelN), names separated by commas, or @FILE (a name a line).",
)
@click.option(
    "--rate",
    type=_Rate(),
    default=10.0,
    show_default=True,
    help="Generated messages per second, in all.",
)
@click.option(
    "--accounts",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Accounts file: login:token or login:token:chan1,chan2 (moderator there), a line each.",
)
@click.option("--seed", type=int, help="Seed for reproducible traffic (an integer).")
@click.option(
    "--limit",
    "limits",
    multiple=True,
    metavar="NAME=VALUE",
    help="Change one of Twitch's limits, for example join_allow=40 (repeatable).",
)
@long_running
def simulate(
    host: str,
    port: int,
    tls_port: int | None,
    websocket_port: int | None,
    control_port: int | None,
    eventsub_port: int | None,
    channels: str,
    rate: float,
    accounts: Path | None,
    seed: int | None,
    limits: tuple[str, ...],
) -> None:
    """Run the built-in Twitch chat simulator until Ctrl-C.

    It behaves like Twitch's chat servers: login (anonymous justinfan or accounts), CAP, JOIN
    and PART, generated chat with realistic tags, relay of PRIVMSG, Twitch's limits per account,
    PING; TLS, WebSocket and an HTTP control port on request (with Twitch's OAuth, users and
    EventSub API), and EventSub WebSocket sessions.
    """
    import asyncio

    from tmi_cluster.simulator import ChatSimulator
    from tmi_cluster.simulator.options import parse_channels, parse_limits, read_accounts

    try:  # what the command line says: a usage error (exit 2), as for every command
        names = parse_channels(channels)
        specs = read_accounts(accounts) if accounts is not None else []
        limit_settings = parse_limits(limits)
    except ConfigError as error:
        raise click.UsageError("; ".join(error.problems)) from error

    async def serve() -> None:
        simulator = ChatSimulator(
            host=host,
            port=port,
            channels=names,
            rate=rate,
            seed=seed,
            tls_port=tls_port,
            websocket_port=websocket_port,
            control_port=control_port,
            eventsub_port=eventsub_port,
            limits=limit_settings,
        )
        for spec in specs:
            simulator.add_account(spec.login, spec.token, moderator_in=spec.moderator_in)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await simulator.start()
        except OSError as exc:
            await simulator.aclose()
            raise TmiClusterError(f"cannot listen on {host}: {exc.strerror}") from exc
        click.echo(
            f"simulator listening on {host}:{simulator.port} ({plural(len(names), 'channel')}, "
            f"{rate:g} messages/s, {plural(len(specs), 'account')}); press Ctrl-C to stop"
        )
        if simulator.tls_port is not None:
            click.echo(f"TLS on {host}:{simulator.tls_port}, CA file {simulator.ca_file}")
        if simulator.websocket_port is not None:
            click.echo(f"WebSocket on ws://{host}:{simulator.websocket_port}")
        if simulator.control_port is not None:
            click.echo(f"control port on http://{host}:{simulator.control_port}")
        if simulator.eventsub_port is not None:
            click.echo(f"EventSub on ws://{host}:{simulator.eventsub_port}/ws")
        await stop.wait()
        await simulator.aclose()
        click.echo("simulator stopped")

    asyncio.run(serve())
