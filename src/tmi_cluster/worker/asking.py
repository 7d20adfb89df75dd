"""Asking a channel manager about many channels at once: :class:`Batched`.

A send asks about its channel (may it go there? which bot account sends it?); hundreds of
sends at once must not become hundreds of calls to the manager (a database round trip each).
:class:`Batched` gathers the channels asked in one turn of the event loop into one call, one
call at a time, and keeps each answer ``keep_s`` seconds. A call that fails answers
``fallback`` for its channels (logged, not kept: the next send asks again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from tmi_cluster.tasks import cancel_and_wait

__all__ = ["Batched"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Answers kept at most; beyond, the cache starts again.
_MAX_KEPT = 10_000


class Batched(Generic[T]):
    """``ask(channels)`` answers a mapping channel -> answer (a channel left out answers
    ``missing``); see the module. ``what`` names the question in the log."""

    def __init__(
        self,
        ask: Callable[[Sequence[str]], Awaitable[Mapping[str, T]]],
        *,
        missing: T,
        fallback: T,
        keep_s: float,
        what: str,
    ) -> None:
        self._ask_manager = ask
        self.missing = missing
        self.fallback = fallback
        self.keep_s = keep_s
        self.what = what
        self._kept: dict[str, tuple[float, T]] = {}  # channel -> (asked at, answer)
        self._asking: dict[str, asyncio.Future[T]] = {}  # channels for the next call
        self._answering: dict[str, asyncio.Future[T]] = {}  # channels of the call under way
        self._asker: asyncio.Task[None] | None = None

    async def get(self, channel: str) -> T:
        """The answer for ``channel``: kept, or asked together with the others waiting."""
        kept = self._kept.get(channel)
        if kept is not None and time.monotonic() - kept[0] < self.keep_s:
            return kept[1]
        future = self._asking.get(channel) or self._answering.get(channel)
        if future is None:
            future = self._asking[channel] = asyncio.get_running_loop().create_future()
        if self._asker is None or self._asker.done():
            self._asker = asyncio.create_task(self._ask(), name=f"asking {self.what}")
        return await asyncio.shield(future)

    async def aclose(self) -> None:
        """Stop a call under way (its sends answer the fallback). Idempotent."""
        if self._asker is not None:
            await cancel_and_wait(self._asker)
        for future in [*self._asking.values(), *self._answering.values()]:
            if not future.done():
                future.set_result(self.fallback)

    async def _ask(self) -> None:
        """Ask about the channels waiting, in calls, until none waits."""
        await asyncio.sleep(0)  # the sends started in this turn ask together
        while self._asking:
            batch = self._answering = self._asking
            self._asking = {}
            try:
                answers = await self._ask_manager(sorted(batch))
            except Exception as error:  # the database, a manager of one's own: the fallback
                log.warning(
                    "cannot ask the channel manager %s %d channel(s) (%s): %s",
                    self.what,
                    len(batch),
                    ", ".join(sorted(batch)[:5]),
                    error,
                )
                for future in batch.values():
                    future.set_result(self.fallback)
                continue
            finally:
                self._answering = {}
            if len(self._kept) > _MAX_KEPT:
                self._kept.clear()
            now = time.monotonic()
            for channel, future in batch.items():
                answer = answers.get(channel, self.missing)
                self._kept[channel] = (now, answer)
                future.set_result(answer)
