"""The commands that set up a cluster's files and tables: ``install`` and ``migrate``."""

from __future__ import annotations

from pathlib import Path

import click

from tmi_cluster.cli.common import settings
from tmi_cluster.config import CONFIG_FILE_NAME, mask_url
from tmi_cluster.errors import TmiClusterError

__all__ = ["install", "migrate"]


@click.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or update the database tables (idempotent)."""
    from tmi_cluster.store import Store

    loaded = settings(ctx)
    with Store.from_settings(loaded) as store:
        applied = store.migrate()
        revision = store.revision()
    where = mask_url(loaded.database.url)
    if applied:
        click.echo(f"migrated {where} to revision {revision} (applied {', '.join(applied)})")
    else:
        click.echo(f"{where} is up to date (revision {revision})")


@click.command()
@click.option("--force", is_flag=True, help="Overwrite an existing configuration file.")
@click.pass_context
def install(ctx: click.Context, force: bool) -> None:
    """Write a commented starter tmi-cluster.toml (an existing one is kept unless --force) and
    create the database tables."""
    from tmi_cluster.config.reference import starter_toml

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
