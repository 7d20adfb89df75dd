"""Which route reads each channel, and why: the pure decision behind ``channels``' ``route`` and
``route_reason``, the coordinator's subscriptions and the workers' choice of sender.

Two routes read chat (see docs/routes.md):

- ``irc``: a chat connection (anonymous for reading, the bot's own for sending), as Twitch has
  always served it; an authenticated account is capped at 100 channels it does not moderate.
- ``eventsub``: a subscription of the application's conduit, read by the shards the worker
  processes hold, sent to through Helix with the app token (the Chat Bot badge). It needs the
  application (``twitch.client_id`` and ``twitch.client_secret``), the bot's grant of
  :data:`BOT_SCOPES` (the bot signs in on the invite screen) and the broadcaster's grant of
  ``channel:bot`` (the invite screen's default scope), or, in a channel the bot moderates,
  nothing more: the coordinator lists the bot's moderated channels when the bot granted
  :data:`MODERATED_SCOPE` too (``moderated``).

:class:`Routing` decides from the settings and the stored grants (their scopes are stored in
clear; no token is opened). It never raises on bad data: a grant without the scope is no grant.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tmi_cluster.config import Settings
from tmi_cluster.store import SealedGrant, Store

__all__ = [
    "BOT_SCOPES",
    "BROADCASTER_SCOPE",
    "MODERATED_KEY",
    "MODERATED_SCOPE",
    "Route",
    "RouteChoice",
    "Routing",
    "eventsub_configured",
    "stored_moderated",
]

#: What the bot's own account grants the application for the EventSub route (reading as the
#: bot through a conduit, and sending through Helix with the app token).
BOT_SCOPES = ("user:bot", "user:read:chat", "user:write:chat")
#: What a broadcaster grants so that the bot reads and sends in their chat through EventSub.
BROADCASTER_SCOPE = "channel:bot"
#: What the bot may grant too, so that the channels it moderates are read through EventSub
#: without the broadcaster's grant (Get Moderated Channels).
MODERATED_SCOPE = "user:read:moderated_channels"
#: The key of the stored moderated channels (the cluster's state in SQL): ``{"channels":
#: {login: broadcaster id}}``, written by the coordinator, read by ``tmi-cluster channels``
#: and by the next leader.
MODERATED_KEY = "eventsub.moderated"


def eventsub_configured(settings: Settings) -> bool:
    """Whether the EventSub route may run: an application, an identity, not forced to IRC
    (whether the grants are there is the keeper's to see, step by step)."""
    twitch = settings.twitch
    return (
        settings.tmi.transport.route != "irc"
        and twitch.has_app
        and not settings.tmi.identity.anonymous
    )


class Route(enum.StrEnum):
    """How a channel is read (the values are ``channels --json``'s ``route``: a contract)."""

    IRC = "irc"
    EVENTSUB = "eventsub"


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The route a channel should have, why, and its broadcaster's Twitch user id (EventSub)."""

    route: Route
    reason: str
    broadcaster_id: str | None = None


class Routing:
    """The routes of ``settings``' cluster given the stored ``grants``; see the module."""

    def __init__(
        self,
        settings: Settings,
        grants: Iterable[SealedGrant],
        moderated: Mapping[str, str] | None = None,
    ) -> None:
        self.forced = settings.tmi.transport.route
        self.bot_login = settings.tmi.identity.username
        by_login = {grant.login: grant for grant in grants}
        bot = by_login.get(self.bot_login) if self.bot_login else None
        #: The bot's Twitch user id (from its grant), None without one.
        self.bot_id: str | None = bot.user_id if bot is not None else None
        self._broadcasters = {
            login: grant.user_id
            for login, grant in by_login.items()
            if BROADCASTER_SCOPE in grant.scopes
        }
        #: The channels the bot moderates -> their broadcaster's id (as last listed).
        self.moderated: dict[str, str] = dict(moderated or {})
        #: Whether the bot granted :data:`MODERATED_SCOPE` (its moderated channels are listed).
        self.lists_moderated = bot is not None and MODERATED_SCOPE in bot.scopes
        #: Why no channel can be read through EventSub (None: it can be).
        self.unavailable = self._why_not(settings, bot)

    def _why_not(self, settings: Settings, bot: SealedGrant | None) -> str | None:
        twitch = settings.twitch
        if self.forced == "irc":
            return 'tmi.transport.route = "irc"'
        if not twitch.has_app:
            return "EventSub needs a Twitch application: twitch.client_id and twitch.client_secret"
        if not self.bot_login:
            return "EventSub reads as the bot: tmi.identity.username is not set"
        if bot is None:
            return (
                f"the bot ({self.bot_login}) has not signed in on the invite screen "
                f"(/invite/bot) to grant {', '.join(BOT_SCOPES)}"
            )
        lacking = [scope for scope in BOT_SCOPES if scope not in bot.scopes]
        if lacking:
            return f"the bot's grant lacks {', '.join(lacking)}: sign it in again on /invite/bot"
        return None

    @property
    def available(self) -> bool:
        """Whether any channel can be read through EventSub."""
        return self.unavailable is None

    def choose(self, channel: str) -> RouteChoice:
        """The route ``channel`` (a login) should have, and why."""
        broadcaster = self._broadcasters.get(channel)
        if self.unavailable is not None:
            if self.forced == "eventsub":
                return RouteChoice(Route.EVENTSUB, f"waiting: {self.unavailable}")
            return RouteChoice(Route.IRC, self.unavailable)
        if broadcaster is not None:
            return RouteChoice(
                Route.EVENTSUB, f"the broadcaster granted {BROADCASTER_SCOPE}", broadcaster
            )
        moderated = self.moderated.get(channel)
        if moderated is not None:
            return RouteChoice(Route.EVENTSUB, "the bot moderates the channel", moderated)
        if self.forced == "eventsub":
            return RouteChoice(
                Route.EVENTSUB,
                f"waiting for the broadcaster's {BROADCASTER_SCOPE} grant "
                '(tmi.transport.route = "eventsub" reads no channel through IRC)',
            )
        unmoderated = "" if self.lists_moderated else f"; the bot's grant lacks {MODERATED_SCOPE}"
        return RouteChoice(
            Route.IRC,
            f"the broadcaster has not granted {BROADCASTER_SCOPE} (invite screen) and the bot "
            f"does not moderate the channel{unmoderated}",
        )

    def eventsub_channels(self, channels: Iterable[str]) -> dict[str, str]:
        """Of ``channels``, those to read through EventSub -> their broadcaster's user id."""
        if self.unavailable is not None:
            return {}
        found: dict[str, str] = {}
        for channel in channels:
            broadcaster = self._broadcasters.get(channel) or self.moderated.get(channel)
            if broadcaster is not None:
                found[channel] = broadcaster
        return found

    def waiting(self, channels: Iterable[str]) -> set[str]:
        """Of ``channels``, those read by no route: ``route = "eventsub"`` without a grant."""
        if self.forced != "eventsub":
            return set()
        return {
            c
            for c in channels
            if self.unavailable is not None
            or (c not in self._broadcasters and c not in self.moderated)
        }


def stored_moderated(store: Store) -> dict[str, str]:
    """The channels the bot moderates as the coordinator last stored them (login ->
    broadcaster id); empty when never listed."""
    value = store.state(MODERATED_KEY) or {}
    channels = value.get("channels")
    if not isinstance(channels, dict):
        return {}
    return {str(login): str(broadcaster) for login, broadcaster in channels.items()}
