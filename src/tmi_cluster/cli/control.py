"""The commands that steer a running cluster's supervisors and workers: ``terminate``,
``scale`` and ``purge``."""

from __future__ import annotations

import click

from tmi_cluster.cli.common import ExitCode, cluster_settings, plural

__all__ = ["purge", "scale", "terminate"]


@click.command()
@click.argument("supervisor", required=False)
@click.pass_context
def terminate(ctx: click.Context, supervisor: str | None) -> None:
    """Ask one supervisor (or every live one) to stop gracefully, as on a deploy, and wait
    until it has (unless fast_termination is set)."""
    import asyncio

    from tmi_cluster.cluster import admin

    settings = cluster_settings(ctx)
    stopped = asyncio.run(admin.terminate(settings, supervisor))
    for supervisor_id, done in stopped.items():
        click.echo(f"{supervisor_id}: {'stopped' if done else 'asked to stop'}")
    if not stopped:
        click.echo("no live supervisor")
    if not all(stopped.values()) and not settings.fast_termination:
        ctx.exit(ExitCode.FAILURE)


def _workers(count: int) -> str:
    return plural(count, "worker process", "worker processes")


@click.command()
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
    import asyncio

    from tmi_cluster.cluster import admin

    if pause and resume:
        raise click.UsageError("give --pause or --resume, not both")
    if (pause or resume) and supervisor is not None:
        raise click.UsageError("--pause and --resume take no SUPERVISOR or N")
    if supervisor is not None and processes is None:
        raise click.UsageError("give the number of worker processes: scale SUPERVISOR N")
    settings = cluster_settings(ctx)
    if pause or resume:
        asyncio.run(admin.pause_scaling(settings, pause))
        click.echo("auto-scaling paused" if pause else "auto-scaling goes on")
        return
    if supervisor is not None and processes is not None:
        before = asyncio.run(admin.scale(settings, supervisor, processes))
        click.echo(f"{supervisor}: {before} -> {_workers(processes)}")
        return
    state = asyncio.run(admin.scaling(settings))
    click.echo(
        f"auto-scaling {'paused' if state['paused'] else 'on'}; "
        + _workers(state["processes"])
        + (f" (last change: {state['cause']})" if state["cause"] else "")
    )
    for supervisor_id, target in state["targets"].items():
        click.echo(f"{supervisor_id}: {target}")
    for supervisor_id, count in state["fixed"].items():
        click.echo(f"{supervisor_id}: {count} (fixed: supervisor.processes)")


@click.command()
@click.pass_context
def purge(ctx: click.Context) -> None:
    """Forget dead supervisors and processes and release their channels (the supervisors also
    do this by themselves, once for the whole cluster)."""
    import asyncio

    from tmi_cluster.cluster import admin

    result = asyncio.run(admin.purge(cluster_settings(ctx)))
    click.echo(
        f"dead: {plural(len(result.dead_supervisors), 'supervisor')}, "
        f"{plural(len(result.dead_processes), 'process', 'processes')}; "
        f"{plural(result.released, 'channel')} released; {plural(result.deleted, 'record')} "
        "deleted"
    )
