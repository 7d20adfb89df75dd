"""A bot that answers !ping in every channel the cluster holds (run inside the workers)."""

from typing import Any

import tmi_cluster
from tmi_cluster.events import Event, MessageEvent


class PingBot(tmi_cluster.Subscriber):
    def __init__(self) -> None:
        self.cluster = tmi_cluster.Cluster.from_config()  # the worker's own settings

    def subscribe(self) -> dict[type[Event], Any]:
        return {MessageEvent: self.on_message}

    async def on_message(self, event: MessageEvent) -> None:
        if event.channel and event.text.strip() == "!ping":
            result = await self.cluster.send(event.channel, "pong", reply_to=event.message_id)
            if not result:
                print(f"no pong in #{event.channel}: {result.status} {result.reason}")
