"""The ``tmi-cluster`` command: a thin click group over the library.

The group and :func:`main` live here; the commands live in a module per family:

- :mod:`~tmi_cluster.cli.running`: ``run``, ``demo``, ``simulate`` (in the foreground until
  Ctrl-C);
- :mod:`~tmi_cluster.cli.control`: ``terminate``, ``scale``, ``purge`` (steer a running cluster);
- :mod:`~tmi_cluster.cli.channels`: ``join``, ``part``, ``authorize``, ``channels``;
- :mod:`~tmi_cluster.cli.messages`: ``send``, ``dead-letters``;
- :mod:`~tmi_cluster.cli.observe`: ``features``, ``list``, ``health``, ``tail``;
- :mod:`~tmi_cluster.cli.database`: ``install``, ``migrate``;
- :mod:`~tmi_cluster.cli.web`: ``dashboard`` (the web pages);
- :mod:`~tmi_cluster.cli.common`: what they share (exit codes, errors, settings, tables).

Commands import the heavy parts of the library (SQLAlchemy, Alembic, redis, asyncio, the
simulator) inside their body, so that ``--help`` and the commands that do not need them start
fast; ``tests/test_cli.py`` pins which modules loading the group and running ``health`` or
``list`` may import.

Exit codes (:class:`ExitCode`): 0 success, 1 failure, 2 usage error (click's, an invalid
channel name or event type), 65 text that cannot be sent (CR, LF or NUL, too long), 69 a
service or feature is unavailable (also: no worker can send), 75 try again later (a send
rate-limited or timed out), 77 not permitted (Twitch refused the bot's login), 78 the
configuration is invalid. Errors print one ``error:`` line per
problem on stderr, never a traceback and never a secret.
"""

from __future__ import annotations

from pathlib import Path

import click

from tmi_cluster import __version__
from tmi_cluster.cli import channels, control, database, messages, observe, running, web
from tmi_cluster.cli.common import ExitCode, Group, collect_lazily
from tmi_cluster.config import CONFIG_FILE_NAME

__all__ = ["ExitCode", "cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
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

for _command in (
    running.run,
    running.demo,
    running.simulate,
    database.install,
    database.migrate,
    observe.features,
    observe.list_,
    observe.health,
    observe.tail,
    control.terminate,
    control.scale,
    control.purge,
    channels.join,
    channels.part,
    channels.authorize,
    channels.channels,
    messages.send,
    messages.dead_letters,
    web.dashboard,
):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``tmi-cluster`` script (and of ``python -m tmi_cluster.cli``). The
    cycle collector runs lazily while a command starts (:func:`~tmi_cluster.cli.common.
    collect_lazily`); the long-running commands go back to the usual thresholds."""
    collect_lazily()
    cli.main(prog_name="tmi-cluster")
