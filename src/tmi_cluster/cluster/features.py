"""What ``tmi-cluster features`` prints: the active setup, one line per aspect, secrets masked.

A part that this release does not have yet says "not available yet" or "not enforced yet" and
what it arrives with, then what is configured for it, so that nobody takes a setting for a
working feature.
"""

from __future__ import annotations

from tmi_cluster.channels import (
    ChannelManager,
    DatabaseChannelManager,
    cleans_up,
    invite_screen_off,
    load_manager,
)
from tmi_cluster.chat.ratelimit import AccountRates, Rate
from tmi_cluster.config import Settings, mask_url
from tmi_cluster.embedded import find_embedded
from tmi_cluster.errors import TmiClusterError
from tmi_cluster.routes import eventsub_configured

__all__ = ["describe"]


def _listed(channels: list[str]) -> str:
    """An account's listed channels, in a few words."""
    if not channels:
        return "where the channel manager says"
    shown = ", ".join(f"#{c}" for c in channels[:3])
    return f"in {shown}" + (f" and {len(channels) - 3} more" if len(channels) > 3 else "")


def describe(settings: Settings) -> list[tuple[str, str]]:
    """(aspect, description) pairs of the active setup; never contains a secret."""
    connection = settings.tmi.connection
    identity = settings.tmi.identity
    scale = settings.auto_scale
    rates = AccountRates.from_settings(settings)
    messages = settings.throttle.messages
    handlers = settings.handlers.modules
    manager, problem = _load(settings)
    return [
        ("config file", str(settings.config_file) if settings.config_file else "none (defaults)"),
        ("database", mask_url(settings.database.url)),
        ("redis", _redis(settings)),
        ("key prefix", settings.prefix),
        (
            "identity",
            f"{identity.username} (token set)"
            + (", reading anonymously" if connection.read_anonymously else "")
            + "".join(
                f"; also sends as {a.username} ({_listed(a.channels)})"
                for a in settings.tmi.identities
            )
            if not identity.anonymous
            else "anonymous justinfan (read only)"
            + (" - a token is set but no username" if identity.token else ""),
        ),
        (
            "connection",
            (
                "not used now (the workers read from the built-in simulator): "
                if _simulated(settings)
                else ""
            )
            + f"{connection.transport} {connection.server}:{connection.effective_port} "
            f"{'TLS' if connection.secure else 'plain'}, reconnect {_on(connection.reconnect)}, "
            f"rejoin {_on(connection.rejoin)}, ping every {connection.ping_interval:g} s "
            f"(timeout {connection.ping_timeout:g} s), "
            f"{connection.channels_per_connection} channels per connection",
        ),
        ("chat", _chat(settings)),
        ("channel manager", settings.channel_manager.use + (f" - {problem}" if problem else "")),
        ("auto cleanup", _cleanup(settings, manager)),
        ("restrict messages", _on(settings.channel_manager.channel.restrict_messages)),
        (
            "auto scale",
            f"{scale.processes.min}-{scale.processes.max} processes, "
            f"{scale.thresholds.channels} channels = 100 %, in below "
            f"{scale.thresholds.scale_in:g} %, out above {scale.thresholds.scale_out:g} %, "
            f"cooldown {scale.cooldown:g} s, restore {_on(scale.restore)}"
            + (
                f"; this supervisor runs a fixed {settings.supervisor.processes} "
                "(supervisor.processes: the auto-scaler sizes only the others)"
                if settings.supervisor.processes
                else ""
            ),
        ),
        (
            "copies",
            "2 of each channel, on two hosts where there are several (every event checked: "
            "a host's death loses nothing)"
            if settings.coordinator.replicas > 1
            else "1 of each channel (coordinator.replicas)",
        ),
        (
            "limits",
            f"preset {settings.throttle.preset}: join {_rate(rates.join)}, "
            f"login {_rate(rates.auth)}, messages {_rate(rates.messages)} "
            f"({_rate(rates.moderator_messages)} as moderator), "
            f"{messages.channel_interval:g} s between messages in a channel, "
            f"{messages.max_length} characters (longer text: {messages.long_text})",
        ),
        (
            "memory limit",
            f"supervisor {settings.memory_limit} MB (then it starts itself again), worker "
            f"{settings.process.memory} MB (then it is replaced)",
        ),
        (
            "handlers",
            (f"{', '.join(settings.handlers.modules)}, " if handlers else "none, ")
            + f"loaded in every worker; up to {settings.handlers.queue_size} events wait per "
            f"channel ({settings.handlers.queue_full} beyond), {settings.handlers.threads} "
            "threads for plain functions",
        ),
        (
            "event stream",
            (
                f"on: about {settings.handlers.stream_maxlen} events, "
                f"{settings.handlers.stream_max_age:g} s at most"
                + (", raw lines kept" if settings.handlers.stream_raw else "")
                if settings.handlers.stream
                else "off"
            )
            + f"; Shared Chat copies: {settings.handlers.shared_chat}",
        ),
        ("web", _web(settings)),
        ("invite screen", _invite(settings, manager)),
        ("EventSub route", _eventsub(settings, manager)),
        ("sending", _sending(settings)),
        ("notifications", _notifications(settings)),
        ("log level", settings.log.level),
    ]


def _web(settings: Settings) -> str:
    """Where the web pages are served and who may see them."""
    web = settings.web
    path = "/" + settings.path.strip("/") + ("/" if settings.path.strip("/") else "")
    where = (
        f"served by each supervisor at http://{web.host}:{web.port}{path}"
        if web.enabled
        else f"'tmi-cluster dashboard' serves them at http://{web.host}:{web.port}{path} "
        "(web.enabled: each supervisor too)"
    )
    if web.public:
        who = "public: no credentials asked (web.public)"
    elif web.password.get_secret_value() or web.token.get_secret_value():
        ways = [
            f"HTTP Basic as {web.username!r}" if web.password.get_secret_value() else "",
            "a bearer token" if web.token.get_secret_value() else "",
        ]
        who = "credentials: " + " or ".join(w for w in ways if w)
    else:
        who = "credentials: a password made at each start, printed once"
    domain = f"; only for host {settings.domain}" if settings.domain else ""
    return f"{where}; {who}; /health public{domain}"


def _eventsub(settings: Settings, manager: ChannelManager | None) -> str:
    """Whether channels may be read through EventSub, and how (docs/routes.md)."""
    transport = settings.tmi.transport
    off = invite_screen_off(manager) if manager is not None else "the channel manager fails"
    if eventsub_configured(settings) and off is not None:
        return (
            "off in practice: it reads with the grants the invite screen stores, and the "
            f"invite screen is off ({off})"
        )
    if not eventsub_configured(settings):
        if transport.route == "irc":
            return 'off: tmi.transport.route = "irc"'
        if settings.tmi.identity.anonymous:
            return "off: it reads as the bot, and tmi.identity.username is not set"
        return "off: twitch.client_id and twitch.client_secret are not set (docs/routes.md)"
    shards = f"{transport.shards} shards" if transport.shards else "a shard per worker"
    kinds = len(transport.subscriptions)
    return (
        f"on ({transport.route}): channels whose broadcaster granted channel:bot or the bot "
        f"moderates, once the bot signed in at /invite/bot; {transport.eventsub_url}, {shards}, "
        f"{kinds} subscription type{'' if kinds == 1 else 's'} per channel; 'tmi-cluster "
        "channels' says each channel's route"
    )


def _sending(settings: Settings) -> str:
    """How the bot sends (``tmi.transport.send_with``)."""
    if settings.tmi.identity.anonymous:
        return "off: no identity (tmi.identity)"
    how = {
        "app": "Twitch's API with the app token in EventSub channels (the Chat Bot badge), "
        "the bot's IRC connection elsewhere",
        "user": "Twitch's API with the bot's own user token in every channel (no badge)",
        "irc": "the bot's IRC connection in every channel",
    }[settings.tmi.transport.send_with]
    more = " (further accounts: IRC)" if settings.tmi.identities else ""
    return f"{how} (tmi.transport.send_with = {settings.tmi.transport.send_with!r}){more}"


def _invite(settings: Settings, manager: ChannelManager | None) -> str:
    """Whether the invite screen is open, and where (or why not)."""
    path = "/" + settings.path.strip("/") + ("/" if settings.path.strip("/") else "")
    if manager is None:
        return "off: the channel manager does not load (see 'channel manager')"
    off = invite_screen_off(manager)
    if off is not None:
        return f"off: {off}"
    missing = settings.twitch.missing()
    if missing:
        return f"not set up: {', '.join(missing)} missing (docs/web.md, the invite screen)"
    return (
        f"at {path}invite/ (the web pages' server), signing in with Twitch's application "
        f"{settings.twitch.client_id!r}, scopes {' '.join(settings.twitch.scopes)}; grants "
        "stored encrypted"
    )


def _notifications(settings: Settings) -> str:
    """Where incidents are notified (the URLs are secrets: only their number and services)."""
    n = settings.notifications
    if not n.urls:
        return "off (notifications.urls is empty)"
    services = sorted({url.split("://", 1)[0] for url in n.urls})
    return (
        f"{len(n.urls)} URL(s) ({', '.join(services)}), a look every {n.every:g} s; incidents: "
        f"a supervisor lost or with a problem, workers with a problem, no coordinator, "
        f"{n.failing_channels}+ channels failing, a join waiting over {n.join_backlog:g} s; "
        f"once per incident for the cluster, again after {n.quiet_period:g} s"
    )


def _not_yet(arrives_with: str, what: str = "not available yet") -> str:
    """The honest state of a part that this release does not have yet."""
    return f"{what} (arrives with {arrives_with})"


def _simulated(settings: Settings) -> bool:
    from tmi_cluster.supervisor.chat import wants_simulator  # noqa: PLC0415 - heavy, only here

    return wants_simulator(settings)


def _chat(settings: Settings) -> str:
    from tmi_cluster.supervisor.chat import wants_simulator  # noqa: PLC0415 - heavy, only here

    mode = settings.tmi.connection.simulate
    if wants_simulator(settings):
        return f"the built-in simulator, run by the supervisor (tmi.connection.simulate = {mode})"
    connection = settings.tmi.connection
    default_server = type(connection).model_fields["server"].default
    if connection.server != default_server:
        where = f"{connection.server}:{connection.effective_port}"
        return f"the server at {where} (tmi.connection.simulate = {mode})"
    if not settings.tmi.identity.username:
        return (
            f"Twitch, read anonymously: no identity configured (tmi.connection.simulate = {mode})"
        )
    return f"Twitch (tmi.connection.simulate = {mode})"


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _redis(settings: Settings) -> str:
    if settings.redis.url:
        return mask_url(settings.redis.url)
    state = find_embedded(settings.redis.embedded_dir)
    where = f"running at 127.0.0.1:{state.port}" if state else "started by 'tmi-cluster run'"
    return f"embedded private server, {where} (state in {settings.redis.embedded_dir})"


def _rate(rate: Rate) -> str:
    return f"{rate.allow} / {rate.every_s:g} s"


def _load(settings: Settings) -> tuple[ChannelManager | None, str | None]:
    """The channel manager, or why it does not load (``run`` refuses to start then)."""
    try:
        manager = load_manager(settings)
    except TmiClusterError as error:
        return None, f"does not load, so the cluster does not start: {error}"
    if isinstance(manager, DatabaseChannelManager):
        manager.store.close()  # made, never connected
    return manager, None


def _cleanup(settings: Settings, manager: ChannelManager | None) -> str:
    """The stale cleanup's line: when it runs, or why it does not."""
    cleanup = settings.channel_manager.auto_cleanup
    if not cleanup.enabled:
        return "off"
    if manager is not None and not cleans_up(manager):
        return (
            f"enabled, but the {settings.channel_manager.use} channel manager has no auto "
            "join and part"
        )
    return (
        f"every {cleanup.interval:g} s plus up to {cleanup.max_delay:g} s, once for the "
        f"cluster; parts channels {settings.channel_manager.channel.stale:g} h after their "
        "last acknowledgement, and those no longer authorized"
    )
