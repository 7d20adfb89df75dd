"""The ``tmi-cluster`` command: a thin click group over the library.

Commands import the heavy parts of the library (SQLAlchemy, Alembic, redis) inside their body,
so that ``--help`` and the commands that do not need them start fast.

Exit codes (:class:`ExitCode`): 0 success, 1 failure, 2 usage error (click's, an invalid
channel name or event type), 65 text that cannot be sent (CR, LF or NUL, too long), 69 a
service or feature is unavailable (also: no worker can send), 75 try again later (a send
rate-limited or timed out), 77 not permitted (Twitch refused the bot's login), 78 the
configuration is invalid. Errors print one ``error:`` line per
problem on stderr, never a traceback and never a secret.
"""

from __future__ import annotations

import asyncio
import enum
import math
import signal
from pathlib import Path
from typing import Any, NoReturn

import click

from tmi_cluster import __version__
from tmi_cluster.config import CONFIG_FILE_NAME, Settings, load_settings, mask_url, settings_json
from tmi_cluster.configref import starter_toml
from tmi_cluster.errors import (
    ConfigError,
    EmbeddedRedisError,
    InvalidChannelError,
    MessageTooLongError,
    NotAvailableError,
    RedisUnavailableError,
    StorageError,
    TmiClusterError,
    UnknownEventTypeError,
    UnsafeLineError,
)

__all__ = ["ExitCode", "cli", "main"]


class ExitCode(enum.IntEnum):
    """Exit statuses of the command."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    DATAERR = 65  # sysexits EX_DATAERR
    UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE
    TEMPFAIL = 75  # sysexits EX_TEMPFAIL
    NOPERM = 77  # sysexits EX_NOPERM
    CONFIG = 78  # sysexits EX_CONFIG


class _Seconds(click.FloatRange):
    """Seconds on the command line: a finite number above 0, at most ``max`` (nan and inf are
    refused, naming the option)."""

    name = "seconds"

    def __init__(self, *, max: float) -> None:  # click's own name
        super().__init__(min=0, min_open=True, max=max)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(super().convert(value, param, ctx))
        except click.BadParameter:
            if isinstance(value, str) and _is_number(value):
                raise  # out of the range: click says which
            self.fail(f"expected a number of seconds, got {value!r}", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"expected a number of seconds, got {value!r}", param, ctx)
        return seconds


def _exit_code(error: TmiClusterError) -> ExitCode:
    if isinstance(error, ConfigError):
        return ExitCode.CONFIG
    if isinstance(error, InvalidChannelError | UnknownEventTypeError):
        return ExitCode.USAGE
    if isinstance(error, UnsafeLineError | MessageTooLongError):
        return ExitCode.DATAERR
    if isinstance(error, NotAvailableError | RedisUnavailableError | EmbeddedRedisError):
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILURE


def _fail(message: str, code: ExitCode) -> NoReturn:
    """Print one ``error:`` line and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(int(code))


class _Group(click.Group):
    """A click group that turns our errors into ``error:`` lines and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TmiClusterError as error:
            lines = error.problems if isinstance(error, ConfigError) else str(error).splitlines()
            for line in lines or [error.__class__.__name__]:
                click.echo(f"error: {line}", err=True)
            ctx.exit(_exit_code(error))


def _settings(ctx: click.Context) -> Settings:
    """The settings for this invocation, loaded once (``--config`` honoured)."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config"))
    settings: Settings = obj["settings"]
    return settings


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="tmi-cluster")
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TMI_CLUSTER_CONFIG",
    help=f"Configuration file (default: ./{CONFIG_FILE_NAME} when it exists).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Keep a Twitch bot connected to any number of chat channels."""
    ctx.ensure_object(dict)["config"] = config


# -- commands of this release ---------------------------------------------------------------


def _supervisor_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from tmi_cluster.supervisor import check_supervisor_id

    if value is None:
        return None
    try:
        return check_supervisor_id(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@cli.command()
@click.option(
    "--id",
    "supervisor_id",
    callback=_supervisor_id,
    help="The supervisor's id (default: <host>-<random>): 1 to 48 ASCII letters, "
    "digits, '.', '_' or '-'.",
)
@click.pass_context
def run(ctx: click.Context, supervisor_id: str | None) -> None:
    """Start a supervisor on this host (the main job) with its worker processes; Ctrl-C or
    SIGTERM stops it gracefully, a second one at once. SIGUSR1 restarts the workers one by one,
    SIGUSR2 pauses them, SIGCONT lets them go on.

    With redis.url empty it starts a private Redis server for the host, and stops it on exit.
    The workers read Twitch (anonymously when no identity is configured); with
    tmi.connection.simulate = "always" they read the built-in simulator, which the supervisor
    runs ('tmi-cluster demo' does that in a folder of its own).
    """
    import os
    import sys

    from tmi_cluster.logs import configure_logging
    from tmi_cluster.supervisor import Supervisor

    settings = _settings(ctx)
    configure_logging(settings)
    config = ctx.obj.get("config")
    supervisor = Supervisor(
        settings, supervisor_id=supervisor_id, config_path=str(config) if config else None
    )

    def ready(line: str) -> None:
        click.echo(line + "; press Ctrl-C to stop")

    asyncio.run(supervisor.run_until_signalled(on_ready=ready))
    click.echo(f"supervisor {supervisor.id} stopped")
    if supervisor.restart_wanted:  # over memory_limit: the same supervisor, a fresh process
        click.echo(f"supervisor {supervisor.id} starts again (memory_limit)")
        argv = [*_without_id(sys.argv[1:]), "--id", supervisor.id]
        os.execv(sys.executable, [sys.executable, "-m", "tmi_cluster.cli", *argv])  # noqa: S606


def _without_id(args: list[str]) -> list[str]:
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


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing configuration file.")
@click.pass_context
def install(ctx: click.Context, force: bool) -> None:
    """Write a commented starter tmi-cluster.toml (an existing one is kept unless --force) and
    create the database tables."""
    config: Path | None = ctx.ensure_object(dict).get("config")
    target = config or Path(CONFIG_FILE_NAME)
    if target.exists() and not force:
        # Never overwritten without --force; keeping it is not an error, so that the README's
        # "install && run" works on every run, not only the first.
        click.echo(f"kept the existing {target} (--force writes a fresh starter file)")
    else:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(starter_toml(), encoding="utf-8")
        except OSError as exc:
            raise TmiClusterError(f"cannot write {target}: {exc.strerror}") from exc
        click.echo(f"wrote {target}")
    ctx.ensure_object(dict)["config"] = target
    ctx.invoke(migrate)


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or update the database tables (idempotent)."""
    from tmi_cluster.store import Store

    settings = _settings(ctx)
    with Store.from_settings(settings) as store:
        applied = store.migrate()
        revision = store.revision()
    where = mask_url(settings.database.url)
    if applied:
        click.echo(f"migrated {where} to revision {revision} (applied {', '.join(applied)})")
    else:
        click.echo(f"{where} is up to date (revision {revision})")


@cli.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print the settings as JSON (secrets masked)."
)
@click.pass_context
def features(ctx: click.Context, as_json: bool) -> None:
    """Print the active setup: config file, database, Redis, identity, limits (secrets masked)."""
    from tmi_cluster.features import describe

    settings = _settings(ctx)
    if as_json:
        click.echo(settings_json(settings))
        return
    rows = describe(settings)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {value}")


@cli.command(name="list")
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

    from tmi_cluster.listing import check_liveness, cluster_json, process_rows, supervisor_rows

    if show_all and alive:
        raise click.UsageError("--all and --alive exclude each other")
    settings = _cluster_settings(ctx)
    supervisors, processes = _records(settings)
    liveness = check_liveness(settings, supervisors, processes)
    if liveness.warning:
        click.echo(f"warning: {liveness.warning}", err=True)
    hidden = {"stopped", "dead"} if alive else set() if show_all or as_json else {"stopped"}
    if as_json:
        shown = cluster_json(supervisors, processes, liveness)
        for kind in ("supervisors", "processes"):
            shown[kind] = [row for row in shown[kind] if row["state"] not in hidden]
        click.echo(json.dumps(shown, indent=2))
        return
    supervisor_table = [
        r for r in supervisor_rows(supervisors, processes, liveness) if r[3] not in hidden
    ]
    process_table = [r for r in process_rows(processes, liveness) if r[3] not in hidden]
    click.echo(
        _table(
            ["supervisor", "host", "pid", "state", "age", "last heartbeat", "processes"],
            supervisor_table,
            "no supervisors",
        )
    )
    click.echo()
    click.echo(
        _table(
            [
                "process",
                "supervisor",
                "pid",
                "state",
                "last heartbeat",
                "channels",
                "connections",
                "memory",
                "messages/s",
            ],
            process_table,
            "no processes",
        )
    )
    simulated = sorted(
        i for i, b in (liveness.supervisors or {}).items() if b.status.chat == "simulator"
    )
    if simulated:
        click.echo(
            f"\nsimulated chat, not Twitch: {', '.join(simulated)} "
            f"{'reads' if len(simulated) == 1 else 'read'} the built-in "
            "simulator (tmi.connection.simulate)"
        )
    left_out = len(supervisors) + len(processes) - len(supervisor_table) - len(process_table)
    if left_out:
        what = "stopped or dead" if alive else "stopped"
        click.echo(f"\n({_plural(left_out, 'record')} {what} not shown: --all shows them)")


def _cluster_settings(ctx: click.Context) -> Settings:
    """The settings of a command about an existing cluster: StorageError when its database
    has no tables, or there is no SQLite file (such a command never creates one: it most
    likely runs in the wrong folder)."""
    from sqlalchemy.engine import make_url

    from tmi_cluster.store import Store

    settings = _settings(ctx)
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise StorageError(
            f"no database at {url.database}: run this where the cluster's tmi-cluster.toml is "
            "(or give --config), or 'tmi-cluster install' to start a cluster here"
        )
    with Store.from_settings(settings) as store:
        if store.revision() is None:
            raise StorageError("the database has no tables yet: run 'tmi-cluster migrate'")
    return settings


def _records(settings: Settings) -> tuple[list[Any], list[Any]]:
    """The supervisor and process records."""
    from tmi_cluster.store import Store

    with Store.from_settings(settings) as store:
        return store.supervisors(), store.processes()


@cli.command()
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

    from tmi_cluster import listing

    if host_only and hostname is not None:
        raise click.UsageError("give --host-only (this host) or --hostname NAME, not both")
    host = hostname if hostname is not None else (socket.gethostname() if host_only else None)
    try:
        settings = _cluster_settings(ctx)
        supervisors, processes = _records(settings)
    except StorageError as error:
        click.echo(f"unhealthy: {error}")
        ctx.exit(ExitCode.FAILURE)
    liveness = listing.check_liveness(settings, supervisors, processes)
    ok, reason = listing.health(
        supervisors,
        processes,
        liveness,
        hostname=host,
        at_least_one=at_least_one,
        minimum=settings.auto_scale.processes.min,
    )
    click.echo(("healthy: " if ok else "unhealthy: ") + reason)
    ctx.exit(ExitCode.OK if ok else ExitCode.FAILURE)


@cli.command()
@click.argument("supervisor", required=False)
@click.pass_context
def terminate(ctx: click.Context, supervisor: str | None) -> None:
    """Ask one supervisor (or every live one) to stop gracefully, as on a deploy, and wait
    until it has (unless fast_termination is set)."""
    from tmi_cluster import admin

    settings = _cluster_settings(ctx)
    stopped = asyncio.run(admin.terminate(settings, supervisor))
    for supervisor_id, done in stopped.items():
        click.echo(f"{supervisor_id}: {'stopped' if done else 'asked to stop'}")
    if not stopped:
        click.echo("no live supervisor")
    if not all(stopped.values()) and not settings.fast_termination:
        ctx.exit(ExitCode.FAILURE)


@cli.command()
@click.argument("supervisor", required=False)
@click.argument("processes", metavar="N", required=False, type=click.IntRange(min=0, max=10_000))
@click.option("--pause", is_flag=True, help="Pause the auto-scaler.")
@click.option("--resume", is_flag=True, help="Let the auto-scaler go on.")
@click.pass_context
def scale(
    ctx: click.Context, supervisor: str | None, processes: int | None, pause: bool, resume: bool
) -> None:
    """Set a supervisor's number of worker processes (SUPERVISOR N), pause or resume the
    auto-scaler, or show its state (no argument)."""
    from tmi_cluster import admin

    if pause and resume:
        raise click.UsageError("give --pause or --resume, not both")
    if (pause or resume) and supervisor is not None:
        raise click.UsageError("--pause and --resume take no SUPERVISOR or N")
    if supervisor is not None and processes is None:
        raise click.UsageError("give the number of worker processes: scale SUPERVISOR N")
    settings = _cluster_settings(ctx)
    if pause or resume:
        asyncio.run(admin.pause_scaling(settings, pause))
        click.echo("auto-scaling paused" if pause else "auto-scaling goes on")
        return
    if supervisor is not None and processes is not None:
        before = asyncio.run(admin.scale(settings, supervisor, processes))
        shown = _plural(processes, "worker process", "worker processes")
        click.echo(f"{supervisor}: {before} -> {shown}")
        return
    state = asyncio.run(admin.scaling(settings))
    click.echo(
        f"auto-scaling {'paused' if state['paused'] else 'on'}; "
        + _plural(state["processes"], "worker process", "worker processes")
        + (f" (last change: {state['cause']})" if state["cause"] else "")
    )
    for supervisor_id, target in state["targets"].items():
        click.echo(f"{supervisor_id}: {target}")


@cli.command()
@click.pass_context
def purge(ctx: click.Context) -> None:
    """Forget dead supervisors and processes and release their channels (the supervisors also
    do this by themselves, once for the whole cluster)."""
    from tmi_cluster import admin

    result = asyncio.run(admin.purge(_cluster_settings(ctx)))
    click.echo(
        f"dead: {_plural(len(result.dead_supervisors), 'supervisor')}, "
        f"{_plural(len(result.dead_processes), 'process', 'processes')}; "
        f"{_plural(result.released, 'channel')} released; {_plural(result.deleted, 'record')} "
        "deleted"
    )


@cli.command()
@click.argument("channels", nargs=-1, required=True)
@click.option(
    "--timeout",
    "timeout_s",
    type=_Seconds(max=3600),
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
    from tmi_cluster import admin

    settings = _cluster_settings(ctx)
    if grant:  # the channels authorized already keep their grant (and its reconnect)
        changes = asyncio.run(admin.authorize(settings, list(channels), only_new=True))
        for channel, change in changes.items():
            click.echo(f"#{channel}: {change}")
    outcomes = asyncio.run(admin.join(settings, list(channels), timeout_s=timeout_s))
    for channel, outcome in outcomes.items():
        click.echo(f"#{channel}: {outcome}")
    if any(not o.ok for o in outcomes.values()):
        ctx.exit(ExitCode.FAILURE)


@cli.command()
@click.argument("channels", nargs=-1, required=True)
@click.option("--revoke", is_flag=True, help="Withdraw the authorization (parts the channels).")
@click.option("--reconnect", is_flag=True, help="Wanted again after any restart.")
@click.pass_context
def authorize(ctx: click.Context, channels: tuple[str, ...], revoke: bool, reconnect: bool) -> None:
    """Grant channels their authorization through the channel manager (channel_manager.use),
    or withdraw it with --revoke (their workers part them within seconds); prints what
    changed for each."""
    from tmi_cluster import admin

    if revoke and reconnect:
        _fail("--revoke and --reconnect do not go together", ExitCode.USAGE)
    changes = asyncio.run(
        admin.authorize(_cluster_settings(ctx), list(channels), revoke=revoke, reconnect=reconnect)
    )
    for channel, change in changes.items():
        click.echo(f"#{channel}: {change}")
    changed = sum(1 for c in changes.values() if c in admin.AUTHORIZE_CHANGES)
    click.echo(f"{_plural(changed, 'channel')} changed, {len(changes) - changed} unchanged")


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


@cli.command()
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
    owner process, since when, and its last failure; every known channel, or the ones named.
    While the cluster is down, the database's states, marked '?', with a warning."""
    import json

    from tmi_cluster import admin

    def warn(text: str) -> None:
        click.echo(f"warning: {text}", err=True)

    settings = _cluster_settings(ctx)
    shown = asyncio.run(admin.channels(settings, list(names), state=states or None, warn=warn))
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    rows = [
        [
            str(c["channel"]),
            str(c["state"]) + ("" if c["live"] else "?"),
            c["process"] or "",
            str(c["since"]),
            _failure_shown(c),
        ]
        for c in shown
    ]
    click.echo(
        _table(["channel", "state", "process", "since", "last failure"], rows, "no channels")
    )


@cli.command()
@click.argument("channels", nargs=-1, required=True)
@click.pass_context
def part(ctx: click.Context, channels: tuple[str, ...]) -> None:
    """Part channels now (their worker processes part them within a second or two)."""
    from tmi_cluster import admin

    parted = asyncio.run(admin.part(_cluster_settings(ctx), list(channels)))
    for channel, owner in parted.items():
        click.echo(f"#{channel}: {'parted from ' + owner if owner else 'was not joined'}")


#: The exit code of each send result (status, or refusal reason).
_SEND_EXIT = {
    "written": ExitCode.OK,
    "too_long": ExitCode.DATAERR,
    "unauthorized": ExitCode.NOPERM,
    "rate_limited": ExitCode.TEMPFAIL,
    "no_identity": ExitCode.UNAVAILABLE,
    "not_connected": ExitCode.UNAVAILABLE,
    "failed": ExitCode.FAILURE,
    "timed_out": ExitCode.TEMPFAIL,
}


@cli.command()
@click.argument("channel")
@click.argument("text")
@click.option("--reply-to", help="The id of the message to answer (a reply in its thread).")
@click.option("--action", is_flag=True, help="Send it as a /me action.")
@click.option(
    "--timeout",
    "timeout_s",
    type=_Seconds(max=300),
    default=10.0,
    show_default=True,
    help="Seconds to wait for a worker to write it.",
)
@click.option(
    "--key",
    help="Idempotency key: another send with this key within an hour sends "
    "nothing and answers this one's result.",
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
    as_json: bool,
) -> None:
    """Send TEXT to CHANNEL through a worker with the bot's identity, and say what became of
    it: written, refused (and why) or timed out. The exit code follows the result (0 written;
    65 too long; 69 no identity or not connected; 75 rate limited or timed out; 77 the login
    was refused; 1 failed)."""
    import msgspec

    from tmi_cluster.cluster import Cluster

    async def go() -> Any:
        async with Cluster(_settings(ctx)) as cluster:
            return await cluster.send(
                channel, text, reply_to=reply_to, action=action, timeout_s=timeout_s, key=key
            )

    try:
        result = asyncio.run(go())
    except ValueError as error:
        if isinstance(error, TmiClusterError):
            raise
        _fail(str(error), ExitCode.USAGE)
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
    else:
        if result.ok:
            shown = f"written ({_plural(result.parts, 'part')}, by {result.process})"
        else:
            reason = f" ({result.reason})" if result.reason else ""
            shown = f"{result.status.value}{reason}: {result.detail}"
        click.echo(f"#{result.channel}: {shown}")
    ctx.exit(_SEND_EXIT.get(result.reason or result.status.value, ExitCode.FAILURE))


@cli.command()
@click.option("--channel", "channels", multiple=True, help="Only this channel (repeatable).")
@click.option(
    "--type", "types", multiple=True, help="Only this event type, subclasses included (repeatable)."
)
@click.option("--group", help="Read as a member of this consumer group (shared, resumable).")
@click.option("--since", help="Start at this stream entry id (0 for the oldest kept).")
@click.option("--limit", type=click.IntRange(min=1, max=10**9), help="Stop after this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
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
    import json

    from tmi_cluster.cluster import Cluster
    from tmi_cluster.events import to_json

    async def go() -> None:
        async with Cluster(_settings(ctx)) as cluster:
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
                        line = _event_line(event, reader.last_id)
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
        _fail(str(error), ExitCode.USAGE)
    finally:
        loop.close()


def _generic_companion(event: Any) -> bool:
    """Whether ``event`` is the generic event of a line that has a specific one too: a cheer's
    MessageEvent (its CheerEvent follows), a sub's UserNoticeEvent (its SubEvent...)."""
    from tmi_cluster.events import MessageEvent, UserNoticeEvent

    kind = type(event)
    return kind is UserNoticeEvent or (kind is MessageEvent and bool(getattr(event, "bits", 0)))


def _event_line(event: Any, stream_id: str = "") -> str:
    """One event as a readable, coloured line: when Twitch sent it, or (marked) when it was
    received (its stream entry's time), for the events Twitch does not stamp."""
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
    if not sent_ms.isdigit():
        stamp += " (received)"
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


@cli.command(name="dead-letters")
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
    import msgspec

    from tmi_cluster.cluster import Cluster

    async def go() -> tuple[list[Any], dict[str, int]]:
        async with Cluster(_settings(ctx)) as cluster:
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
    click.echo(_table(["at", "channel", "process", "reads", "reason"], rows, "no dead letters"))
    waiting = {p: n for p, n in pending.items() if n}
    if waiting:
        click.echo("unanswered: " + ", ".join(f"{p} {n}" for p, n in sorted(waiting.items())))


def _table(header: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return empty
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {plural or word + 's'}"


@cli.command()
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
def simulate(
    host: str,
    port: int,
    tls_port: int | None,
    websocket_port: int | None,
    control_port: int | None,
    channels: str,
    rate: float,
    accounts: Path | None,
    seed: int | None,
    limits: tuple[str, ...],
) -> None:
    """Run the built-in Twitch chat simulator until Ctrl-C.

    It behaves like Twitch's chat servers: login (anonymous justinfan or accounts), CAP, JOIN
    and PART, generated chat with realistic tags, relay of PRIVMSG, Twitch's limits per account,
    PING; TLS, WebSocket and an HTTP control port on request.
    """
    from tmi_cluster.simulator import ChatSimulator
    from tmi_cluster.simulator.options import parse_channels, parse_limits, read_accounts

    try:  # what the command line says: a usage error (exit 2), as for every command
        names = parse_channels(channels)
        specs = read_accounts(accounts) if accounts is not None else []
        settings = parse_limits(limits)
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
            limits=settings,
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
            f"simulator listening on {host}:{simulator.port} ({_plural(len(names), 'channel')}, "
            f"{rate:g} messages/s, {_plural(len(specs), 'account')}); press Ctrl-C to stop"
        )
        if simulator.tls_port is not None:
            click.echo(f"TLS on {host}:{simulator.tls_port}, CA file {simulator.ca_file}")
        if simulator.websocket_port is not None:
            click.echo(f"WebSocket on ws://{host}:{simulator.websocket_port}")
        if simulator.control_port is not None:
            click.echo(f"control port on http://{host}:{simulator.control_port}")
        await stop.wait()
        await simulator.aclose()
        click.echo("simulator stopped")

    asyncio.run(serve())


@cli.command()
@click.option(
    "--channels",
    "count",
    type=click.IntRange(min=1, max=5_000),
    default=300,
    show_default=True,
    help="How many simulated channels to join.",
)
def demo(count: int) -> None:
    """Run a whole cluster on this machine, set up by nothing and leaving nothing: a private
    Redis server and a SQLite database in a temporary folder, a supervisor with two worker
    processes reading the built-in Twitch chat simulator (never Twitch), channels joined, a
    live summary. Ctrl-C stops everything and deletes the folder."""
    import signal

    from tmi_cluster.demo import Demo

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a closed terminal too
            loop.add_signal_handler(signum, stop.set)
        await Demo(channels=count).run(stop, on_ready=click.echo)

    asyncio.run(main())
    click.echo("demo stopped; nothing left behind")


# -- commands that later releases fill ------------------------------------------------------

_LATER = {
    "dashboard": ("Serve the dashboard, statistics, metrics and invite screen.", "the web pages"),
}


def _later_command(name: str, summary: str, arrives_with: str) -> click.Command:
    def callback(**_: Any) -> NoReturn:
        raise NotAvailableError(
            f"'tmi-cluster {name}' is not in this release yet; it arrives with {arrives_with}"
        )

    return click.Command(
        name,
        callback=callback,
        help=f"{summary}\n\nNot in this release yet: arrives with {arrives_with}.",
        short_help=f"{summary.rstrip('.')} (not yet available).",
        params=[click.Argument(["args"], nargs=-1, required=False)],
        context_settings={"ignore_unknown_options": True},
    )


for _name, (_summary, _arrives) in _LATER.items():
    cli.add_command(_later_command(_name, _summary, _arrives))


def main() -> None:
    """Entry point of the ``tmi-cluster`` script."""
    cli.main(prog_name="tmi-cluster")


if __name__ == "__main__":  # pragma: no cover
    main()
