"""Twitch's EventSub route for chat: the messages of its WebSocket sessions
(:mod:`~tmi_cluster.eventsub.messages`) and their notifications as the same typed events as
IRC's (:mod:`~tmi_cluster.eventsub.mapping`).

The route itself (conduit shards in the workers, the coordinator's conduit and subscriptions,
sending through Helix) builds on these; see DESIGN.md, "Twitch today".
"""

from tmi_cluster.eventsub.mapping import (
    MAPPED_TYPES,
    notification_events,
    to_events,
    to_message,
)
from tmi_cluster.eventsub.messages import Envelope, decode

__all__ = [
    "MAPPED_TYPES",
    "Envelope",
    "decode",
    "notification_events",
    "to_events",
    "to_message",
]
