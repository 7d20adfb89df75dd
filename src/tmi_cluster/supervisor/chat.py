"""Where a supervisor's workers read chat: Twitch, another server, or the built-in simulator.

When ``tmi.connection.simulate`` asks for it (or ``tmi-cluster demo`` does), the supervisor
runs a Twitch chat simulator and its workers read and send there, never on Twitch; the banner,
``list`` and ``features`` say so.
"""

from __future__ import annotations

import secrets

from tmi_cluster.config import Settings
from tmi_cluster.simulator import ChatSimulator

__all__ = [
    "SIMULATED_BOT",
    "chat_of",
    "describe_chat",
    "start_simulator",
    "wants_simulator",
]


#: The bot's login on the built-in simulator when no identity is configured.
SIMULATED_BOT = "tmibot"


def wants_simulator(settings: Settings) -> bool:
    """Whether ``tmi.connection.simulate`` asks for the built-in simulator: 'always', or 'auto'
    with no identity and Twitch's own server."""
    mode = settings.tmi.connection.simulate
    if mode != "auto":
        return mode == "always"
    default_server = type(settings.tmi.connection).model_fields["server"].default
    return not settings.tmi.identity.username and settings.tmi.connection.server == default_server


async def start_simulator(settings: Settings) -> tuple[ChatSimulator, dict[str, str]]:
    """A running simulator (open channels, 20 lines a second), and the environment that points
    the workers at it with an account to send with (:func:`_simulated_identity`)."""
    simulator = await ChatSimulator(open_channels=True, rate=20.0).start()
    env = {
        "TMI_CLUSTER_TMI__CONNECTION__SERVER": simulator.host,
        "TMI_CLUSTER_TMI__CONNECTION__PORT": str(simulator.port),
        "TMI_CLUSTER_TMI__CONNECTION__SECURE": "false",
        "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "never",
    }
    env.update(_simulated_identity(settings, simulator))
    return simulator, env


def _simulated_identity(settings: Settings, simulator: ChatSimulator) -> dict[str, str]:
    """An account on the built-in simulator, so that sending works offline too: the
    configured identity, or :data:`SIMULATED_BOT` with a random token when none is (the
    workers then read anonymously, as without one, and send as that bot)."""
    identity = settings.tmi.identity
    if identity.username:
        for account in settings.tmi.accounts:
            simulator.add_account(account.username, account.token)
        return {}
    token = secrets.token_hex(12)
    simulator.add_account(SIMULATED_BOT, token)
    return {
        "TMI_CLUSTER_TMI__IDENTITY__USERNAME": SIMULATED_BOT,
        "TMI_CLUSTER_TMI__IDENTITY__PASSWORD": f"oauth:{token}",
        "TMI_CLUSTER_TMI__CONNECTION__READ_ANONYMOUSLY": "true",
    }


def chat_of(settings: Settings, simulator: ChatSimulator | None) -> str:
    """Where the workers read chat, for ``list``: ``simulator``, ``twitch``, or the server's
    ``host:port``."""
    if simulator is not None:
        return "simulator"
    connection = settings.tmi.connection
    if connection.server == type(connection).model_fields["server"].default:
        return "twitch"
    return f"{connection.server}:{connection.effective_port}"


def describe_chat(settings: Settings, simulator: ChatSimulator | None) -> str:
    """Where the workers read chat and as whom, for the supervisor's banner."""
    identity = settings.tmi.identity.username
    if simulator is not None:
        return (
            f"the built-in simulator at {simulator.host}:{simulator.port}, "
            f"sending as {identity or SIMULATED_BOT}"
        )
    where = chat_of(settings, None)
    if where == "twitch":
        return f"Twitch, {'as ' + identity if identity else 'read anonymously'}"
    return f"the server at {where}"
