"""A RECONNECT from the server, handled make-before-break for one
:class:`~tmi_cluster.chat.connection.Connection` (the contract is the connection module's): a new
session logs in and joins every channel (or ``overlap_timeout_s`` passes) and takes over; the
old one is closed once it has caught up (a PING answered on it) and ``overlap_linger_s`` has
passed; events are de-duplicated by ``dedupe_key`` while the two links overlap, and only then;
a channel the replacement is refused while the old link holds it is lost only once the old
link is closed (it delivers the channel until then); a replacement lost before it took over
leaves the old link in place, its channels made to match.

:class:`Reconnect` is a part of its connection, not a library of its own: it reads and sets
the connection's sessions and joins through the connection's own methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from tmi_cluster.chat.session import RETRIABLE, Session, join_lines
from tmi_cluster.errors import LoginError
from tmi_cluster.events import Event
from tmi_cluster.outcomes import JoinResult

if TYPE_CHECKING:
    from tmi_cluster.chat.connection import Connection

__all__ = ["Reconnect"]

log = logging.getLogger("tmi_cluster.chat.connection")  # the connection's log, as before

#: At most this many event keys are kept for de-duplication during one overlap.
_DEDUPE_MEMORY = 50_000


class Reconnect:
    """The RECONNECTs of ``connection``; see the module."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        #: The replacement session joining the channels, while it does.
        self.incoming: Session | None = None
        #: The replaced session delivering its last lines, while it does.
        self.leaving: Session | None = None
        #: The replacement under way, if any.
        self.task: asyncio.Task[None] | None = None
        #: Whether events are de-duplicated now (only while two links overlap).
        self.deduping = False
        self._again = False  # a RECONNECT came on the new session while the last one settled
        # Keys of the events delivered while two sessions overlap, and only then: one session
        # never delivers an event twice, so nothing is kept the rest of the time.
        self._seen: OrderedDict[str, None] = OrderedDict()
        # Channels the replacement was refused while the old link still holds them: lost
        # once the old link is closed, with these results.
        self._deferred: dict[str, JoinResult] = {}

    @property
    def dedupe_keys(self) -> int:
        """Event keys kept for de-duplication now."""
        return len(self._seen)

    def asked(self, session: Session) -> None:
        """The server told the current ``session`` to RECONNECT: replace it (after the
        replacement under way, if one is)."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._replace(session))
        else:  # the last replacement is still settling: this one follows it
            self._again = True

    async def settled(self) -> None:
        """Return once no replacement is under way."""
        task = self.task
        if task is not None and not task.done():
            await task

    def defer(self, session: Session, channel: str, result: JoinResult) -> bool:
        """While two links overlap: a JOIN of ``channel`` refused (or timed out) on
        ``session`` while the other link still holds the channel is kept for later (True):
        the channel is lost only once that link is closed. False otherwise (lose it now)."""
        current = self.connection._session
        if session is self.incoming:
            other = current
        elif session is current:
            other = self.leaving
        else:
            other = None
        if other is None or other is session or other.closed.is_set():
            return False
        if channel not in other.joined:
            return False
        self._deferred[channel] = result
        return True

    def seen_before(self, event: Event) -> bool:
        """During a RECONNECT's overlap: whether the other link delivered ``event`` already
        (remembered if not)."""
        key = event.dedupe_key
        if key is None:
            return False
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > _DEDUPE_MEMORY:
            self._seen.popitem(last=False)
        return False

    async def _replace(self, old: Session) -> None:
        """Make-before-break: log a new session in, join everything there, then drop the old;
        again if the new one was told to RECONNECT meanwhile."""
        c = self.connection
        while True:
            self._again = False
            self.deduping = True
            try:
                await self._overlap(old)
            finally:
                self.incoming = self.leaving = None
                self.deduping = False
                self._seen.clear()
                self._deferred.clear()
            current = c._session
            if (
                not self._again
                or c._closing
                or current is None
                or current is old
                or current.closed.is_set()
            ):
                return
            old = current

    async def _overlap(self, old: Session) -> None:
        c = self.connection
        new = Session(c.options, c._deliver, c._sent_hook)
        try:
            await c._open(new)
        except (*RETRIABLE, LoginError) as exc:
            log.warning("%s: replacement after RECONNECT failed: %s", c.name, exc)
            return  # the old session's end will trigger a normal reconnect
        self.incoming = new
        await c._join_on(new, sorted(c.channels))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + c.options.overlap_timeout_s
        while not c.channels - self._deferred.keys() <= new.joined and not new.closed.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            new.join_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(new.join_changed.wait(), remaining)
        if new.closed.is_set() and not old.closed.is_set():
            log.warning("%s: the replacement after RECONNECT was lost: %s", c.name, new.reason)
            c._retire(new)
            self.incoming = None
            self._deferred.clear()  # the old link goes on holding them
            await self._restore(old)
            return
        c._retire(old)
        c._session = new
        self.incoming = None
        self.leaving = old
        c.reconnects += 1
        # The old link is closed once it has delivered everything the server sent it before
        # the new one covered its channels (a PING answered there), and not before the linger
        # (margin for lines that reach the two links by different ways).
        lingered = loop.time() + c.options.overlap_linger_s
        if not await old.caught_up(c.options.overlap_timeout_s) and not old.closed.is_set():
            log.warning(
                "%s: the old link did not catch up within %g s after RECONNECT",
                c.name,
                c.options.overlap_timeout_s,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(old.closed.wait(), max(0.0, lingered - loop.time()))
        self.leaving = None
        await old.close("replaced after RECONNECT")
        # What the replacement was refused is lost now that no link holds it.
        deferred, self._deferred = self._deferred, {}
        for channel, result in deferred.items():
            if channel in c.channels and channel not in new.joined:
                c._fail(channel, result)
        # De-duplication ends once the new link has delivered what it still owed of the lines
        # the old one delivered (a PING answered on it).
        await new.caught_up(c.options.overlap_timeout_s)

    async def _restore(self, old: Session) -> None:
        """Go on with ``old`` after its replacement was lost: the channels that changed during
        the overlap are made to match (failed ones parted there, new ones joined there)."""
        c = self.connection
        gone = sorted(old.joined - c.channels)
        if gone:
            old.parting.update(gone)
            with contextlib.suppress(ConnectionError):
                await old.send_lines(join_lines("PART", gone))
        await c._join_on(old, sorted(c.channels - (old.joined - old.parting) - old.awaiting.keys()))
