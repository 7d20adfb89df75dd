"""``tmi-cluster dashboard``: the web pages of the cluster (dashboard, JSON API, metrics,
health check), served until interrupted."""

from __future__ import annotations

import click

from tmi_cluster.cli.common import ExitCode, cluster_settings, fail, long_running

__all__ = ["dashboard"]


@click.command()
@click.option("--host", help="Address to listen on (default: web.host, 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    help="Port to listen on (default: web.port, 8080; 0: any free one).",
)
@click.pass_context
@long_running
def dashboard(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the dashboard, statistics API, Prometheus metrics, health check and invite screen
    of the cluster until interrupted, under the URL path 'path' (default /tmi-cluster/).
    Everything but the health check and the invite screen asks for credentials: web.username
    and web.password (HTTP Basic) or web.token (a bearer token); with neither, a password is
    made for this run and printed here. The invite screen's address is printed when it is set
    up (channel_manager.use = 'database' and twitch.*), or why it is off."""
    import asyncio

    from tmi_cluster.logs import configure_logging
    from tmi_cluster.web import create_app, mount_path, serve

    loaded = cluster_settings(ctx)
    configure_logging(loaded)
    app = create_app(loaded)
    host = host or loaded.web.host
    port = loaded.web.port if port is None else port
    credentials = app.state.credentials

    def started(bound_host: str, bound_port: int) -> None:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        click.echo(
            f"the dashboard: http://{shown}:{bound_port}{mount_path(loaded)}/ (Ctrl-C to stop)"
        )
        if credentials.generated:
            click.echo(
                f"sign in as {credentials.username!r} with the password "
                f"{credentials.password!r}, made for this run (set web.password or web.token "
                "to choose your own)"
            )
        elif credentials.public:
            click.echo("public: no credentials are asked (web.public)")
        invite = app.state.invite
        closed = invite.closed_reason()
        if closed is None:
            click.echo(f"the invite screen: {invite.address}")
            if mismatch := invite.path_mismatch(mount_path(loaded)):
                click.echo(f"warning: {mismatch}", err=True)
        elif loaded.channel_manager.use != "dummy":  # off by mistake, not by the default
            click.echo(f"the invite screen: off. {closed}", err=True)

    try:
        asyncio.run(serve(loaded, app, host=host, port=port, started=started))
    except OSError as error:
        fail(f"cannot serve the dashboard on {host}:{port}: {error}", ExitCode.UNAVAILABLE)
    except KeyboardInterrupt:
        pass
