"""Which bot account sends in each channel, when the cluster has several
(``tmi.identities``): :class:`SenderChoice`.

The rule, first match wins: the account a send command names (``Cluster.send(...,
sender=)``); the account the channel manager's optional ``senders()`` names (asked in batches
and kept :data:`KEEP_S` seconds, as :mod:`tmi_cluster.worker.asking` does); the account whose
``channels`` lists the channel; ``tmi.identity``. A manager that cannot answer leaves the
choice to the settings. An account the cluster does not have is refused ``no_identity`` by the
pool (nothing is sent as another account).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from tmi_cluster.config import Settings
from tmi_cluster.logins import normalise_login
from tmi_cluster.worker.asking import Batched

__all__ = ["KEEP_S", "SenderChoice"]

#: Seconds a channel manager's choice is kept (a change applies within it).
KEEP_S = 5.0


class SenderChoice:
    """The sending account of each channel for ``settings`` and ``manager`` (see the module)."""

    def __init__(self, settings: Settings, manager: object | None = None) -> None:
        self.tmi = settings.tmi
        self._asked: Batched[str | None] | None = None
        asks: Callable[[Sequence[str]], Awaitable[Mapping[str, str]]] | None = getattr(
            manager, "senders", None
        )
        if asks is not None:
            ask = asks

            async def senders(channels: Sequence[str]) -> dict[str, str | None]:
                return {
                    channel: normalise_login(login)
                    for channel, login in (await ask(channels)).items()
                    if login
                }

            self._asked = Batched(senders, missing=None, fallback=None, keep_s=KEEP_S, what="for")

    async def account(self, channel: str) -> str | None:
        """The account that sends in ``channel`` (a login; None: ``tmi.identity``)."""
        if self._asked is not None:
            chosen = await self._asked.get(channel)
            if chosen is not None:
                return chosen
        return self.tmi.sender_of(channel)

    async def aclose(self) -> None:
        """Stop a question under way. Idempotent."""
        if self._asked is not None:
            await self._asked.aclose()
