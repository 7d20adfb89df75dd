"""Every Redis key of a cluster, and its expiry, under the configured prefix.

No other module writes a key name (the bus, :mod:`tmi_cluster.bus`, is the only code that calls
Redis). The layout (``P`` is ``settings.prefix``, ``tmi-cluster:`` by
default; ``{x}`` a placeholder)::

    P supervisor:{id}:heartbeat      string (JSON status), expires after supervisor.stale s
    P process:{id}:heartbeat         string (JSON status), expires after process.stale s
    P live:supervisor                sorted set: supervisor id -> Redis time (ms) of its last beat
    P live:process                   sorted set: process id -> Redis time (ms) of its last beat
    P process:{id}:channels          set    the channels assigned to the process
    P process:{id}:held              set    the channels it holds, confirmed by Twitch
    P process:{id}:epoch             string: the assignment epoch it last reported its held set for
    P alive:workers                  string, expires after process.stale s: some worker is alive
    P alive:senders                  string, expires after process.stale s: some worker can send
    P coordinator:lease              string (holder id), expires after LEASE_S  the leader
    P coordinator:lease:token        string (its fencing token), expires with the lease
    P coordinator:fence              integer, no expiry: the token of the latest acquisition
    P coordinator:wake               stream (bounded): "look now" for the coordinator
    P coordinator:reports            string: the id of the last report the coordinator read
    P wanted:version                 integer: changed whenever the wanted channels change in SQL
    P cleanup:due                    string (holder), expires when the next stale cleanup is due
    P cleanup:runs                   stream (bounded length): one entry per stale cleanup run
    P assignment:epoch               string (random token): names this Redis's assignment
    P assignment:fresh               string, expires after supervisor.stale s: a new epoch
    P draining                       hash   process id -> why it is being emptied
    P scale:targets                  hash   supervisor id -> how many workers it should run
    P scale:state                    hash   paused (0/1), last change (Redis time), cause
    P scale:history                  list (the newest 50): the supervisors' ProcessScaled, stamped
    P assignment                     hash   channel login -> process id         who holds a channel
    P replicas                       hash   channel login -> process id         its second copy
                                     (coordinator.replicas = 2; never the same process)
    P commands:process:{id}          stream of notices for one worker (``op``: sync, pause, ...)
    P commands:supervisor:{id}       stream of commands for one supervisor (scale, terminate)
    P commands:send                  stream of chat messages to send; group "senders": the
                                     workers with a Twitch identity (trimmed by age)
    P commands:dead                  stream (bounded length): commands that could not be carried out
    P command:{id}                   string, expires after an hour: begun:{process}, abandoned,
                                     or the send's result (JSON): the idempotency key of a command
    P replies:{client}               list, expires 2 min after its last push: results for a caller
    P events                         stream of chat events for other processes (bounded length
                                     and age); readers in consumer groups of their own
    P guarding:{process}             set    channels a leaving worker checks against duplicates
    P reports                        stream of join outcomes and lost channels (bounded length)
    P ratelimit:{account}:{bucket}   sorted set, expires with its window         a rate window
    P ratelimit:epoch                string (random token), no expiry           Redis's memory
    P dedupe:{key}                   string, expires after DEDUPE_S             events seen once
                                     (RAW_DEDUPE_S for events known by their raw line only)
    P published:{key}                string, expires likewise: an event is on the stream
                                     (written with it, by the second copies' publishers)
    P orphan:{channel}               string, expires after ORPHAN_GUARD_S       taken from the dead
    P lock:{name}                    string (owner token), expires              a short lock
    P incident:{name}                string (who notified), expires after notifications.quiet_period
    P eventsub:conduit               string (JSON RouteStatus): the conduit, its shards, counts
    P eventsub:routes                hash   channel login -> broadcaster id: read through EventSub
    P eventsub:problems              hash   channel login -> why its subscription failed
    P eventsub:revoked               set    broadcaster ids whose subscriptions Twitch revoked
    P eventsub:disabled              hash   shard id -> the session id Twitch disabled it with
    P invite:ended:{session}         string, expires when the session would: an invite screen
                                     session signed out (its cookie's copies refused)

The assignment script (:mod:`tmi_cluster.bus.assignment`) builds the names of a process's set
and command stream from the prefix inside Redis, exactly as :meth:`Keys.process_channels` and
:meth:`Keys.process_commands` do; the checked publishing script (:mod:`tmi_cluster.bus.events`)
builds ``P published:{key}`` likewise (:meth:`Keys.published`). Command streams are read by
consumer groups (``XREADGROUP``) and acknowledged after execution, so that a command read by a
worker that then dies is claimed by another; heartbeats are keys with expiry, never SQL rows.
Only commands of Redis 6.2 are used.
"""

from __future__ import annotations

from dataclasses import dataclass

from tmi_cluster.config import Settings

__all__ = ["DEDUPE_S", "LEASE_S", "RAW_DEDUPE_S", "RAW_KEY_MARK", "Keys"]

#: Seconds a coordinator lease lives without renewal.
LEASE_S = 10
#: Seconds an event's de-duplication key lives (longer than any reconnect overlap).
DEDUPE_S = 120
#: Seconds the key of an event known only by its raw line lives (JOIN, PART, ROOMSTATE, ...,
#: which carry no id): long enough for the copies of one line on two connections (they arrive
#: within milliseconds of each other), short enough that the same line sent again (a slow mode
#: turned off and on again, a user joining again) is an event of its own. A copy read more
#: than this late is delivered twice; the same line within it, once.
RAW_DEDUPE_S = 3
#: What marks a dedupe key made from a raw line (``Class:raw:digest``).
RAW_KEY_MARK = ":raw:"
#: Seconds the new owner of a channel taken from a worker presumed dead checks its events
#: cluster-wide: the old worker may only have been cut off, and delivers what its connections
#: still read once it is back, until it has read its assignment. Beyond this, its connections
#: have failed their own PING (``tmi.connection.ping_interval`` + ``ping_timeout``, 35 s by
#: default) and rejoin nothing before it has read the assignment.
ORPHAN_GUARD_S = 60
#: Seconds at most that a new assignment (a first start, a Redis that forgot everything) only
#: adopts the channels the workers hold, before it places the others (the coordinator ends it
#: sooner once every worker has said what it holds). Meanwhile a channel that nobody owns may
#: only not be adopted yet: a worker handing it over keeps it until then.
ADOPT_GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names of one cluster. Build with :meth:`from_settings`."""

    prefix: str
    supervisor_ttl_s: float
    process_ttl_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        """Keys under ``settings.prefix``, with heartbeat expiries from the stale settings."""
        return cls(settings.prefix, settings.supervisor.stale, settings.process.stale)

    def supervisor_heartbeat(self, supervisor_id: str) -> str:
        """Heartbeat of one supervisor (expires after :attr:`supervisor_ttl_s`)."""
        return f"{self.prefix}supervisor:{supervisor_id}:heartbeat"

    def process_heartbeat(self, process_id: str) -> str:
        """Heartbeat of one worker process (expires after :attr:`process_ttl_s`)."""
        return f"{self.prefix}process:{process_id}:heartbeat"

    def process_channels(self, process_id: str) -> str:
        """Set of the channels assigned to one process (kept with :attr:`assignment`)."""
        return f"{self.prefix}process:{process_id}:channels"

    def process_held(self, process_id: str) -> str:
        """Set of the channels one process holds (confirmed by Twitch)."""
        return f"{self.prefix}process:{process_id}:held"

    def process_epoch(self, process_id: str) -> str:
        """The assignment epoch for which a process last recorded all it holds."""
        return f"{self.prefix}process:{process_id}:epoch"

    @property
    def alive_workers(self) -> str:
        """Set by every worker with its heartbeat: some worker is alive."""
        return f"{self.prefix}alive:workers"

    @property
    def alive_senders(self) -> str:
        """Set by every worker with a Twitch identity with its heartbeat: some can send."""
        return f"{self.prefix}alive:senders"

    @property
    def reports(self) -> str:
        """Stream of join outcomes and lost channels, from every worker."""
        return f"{self.prefix}reports"

    @property
    def coordinator_lease(self) -> str:
        """The coordinator's lease (expires after :data:`LEASE_S`)."""
        return f"{self.prefix}coordinator:lease"

    @property
    def coordinator_fence(self) -> str:
        """The fencing counter: incremented on every acquisition of the lease."""
        return f"{self.prefix}coordinator:fence"

    @property
    def coordinator_wake(self) -> str:
        """Stream of wake-ups for the coordinator (a change it should act on now)."""
        return f"{self.prefix}coordinator:wake"

    @property
    def coordinator_reports(self) -> str:
        """The id of the last report the coordinator read (a new leader goes on from it)."""
        return f"{self.prefix}coordinator:reports"

    @property
    def assignment_epoch(self) -> str:
        """A token the coordinator writes with a new assignment: a missing or new one means
        Redis forgot the assignment (workers then part nothing until it is rebuilt)."""
        return f"{self.prefix}assignment:epoch"

    @property
    def assignment_fresh(self) -> str:
        """Set with a new assignment epoch, expiring after ``supervisor_ttl_s``: while it
        lives, a missing heartbeat may only not be written again yet (Redis forgot them)."""
        return f"{self.prefix}assignment:fresh"

    @property
    def wanted_version(self) -> str:
        """A counter incremented whenever the wanted channels change in SQL."""
        return f"{self.prefix}wanted:version"

    @property
    def cleanup_due(self) -> str:
        """Set (``NX``) by the coordinator that runs a stale cleanup, expiring when the next
        one is due: one run per interval for the whole cluster."""
        return f"{self.prefix}cleanup:due"

    @property
    def cleanup_runs(self) -> str:
        """Stream of the stale cleanup's runs (at, by, checked, stale, unauthorized, seconds)."""
        return f"{self.prefix}cleanup:runs"

    @property
    def draining(self) -> str:
        """Hash of the processes being emptied (replaced, scaled in) to the reason."""
        return f"{self.prefix}draining"

    @property
    def scale_targets(self) -> str:
        """Hash of supervisor id to how many worker processes it should run."""
        return f"{self.prefix}scale:targets"

    @property
    def scale_state(self) -> str:
        """Hash of the auto-scaler's state: paused, the last change and its cause."""
        return f"{self.prefix}scale:state"

    def registry(self, kind: str) -> str:
        """Sorted set of the ids of ``kind`` ("process" or "supervisor") that beat recently,
        scored by the Redis time (ms) of their last beat: liveness found without SCAN."""
        return f"{self.prefix}live:{kind}"

    @property
    def assignment(self) -> str:
        """Hash of channel login to the id of the process that holds it."""
        return f"{self.prefix}assignment"

    @property
    def replicas(self) -> str:
        """Hash of channel login to the id of the process that holds its second copy."""
        return f"{self.prefix}replicas"

    def published(self, key: str) -> str:
        """Mark that the event of dedupe key ``key`` is on the stream (expires)."""
        return f"{self.prefix}published:{key}"

    def process_commands(self, process_id: str) -> str:
        """Command stream of one worker."""
        return f"{self.prefix}commands:process:{process_id}"

    def supervisor_commands(self, supervisor_id: str) -> str:
        """Command stream of one supervisor."""
        return f"{self.prefix}commands:supervisor:{supervisor_id}"

    @property
    def send_commands(self) -> str:
        """Shared stream of chat messages to send."""
        return f"{self.prefix}commands:send"

    @property
    def dead_letters(self) -> str:
        """Stream of commands that could not be carried out (bounded length)."""
        return f"{self.prefix}commands:dead"

    def command(self, command_id: str) -> str:
        """One command's marker: begun, abandoned, or its result (its idempotency key)."""
        return f"{self.prefix}command:{command_id}"

    def replies(self, client_id: str) -> str:
        """A caller's list of results."""
        return f"{self.prefix}replies:{client_id}"

    def guarding(self, process_id: str) -> str:
        """Set of the channels a worker checks for duplicates while it hands them over."""
        return f"{self.prefix}guarding:{process_id}"

    @property
    def eventsub_conduit(self) -> str:
        """The EventSub route's state: the conduit, its shards, the subscriptions' counts."""
        return f"{self.prefix}eventsub:conduit"

    @property
    def eventsub_routes(self) -> str:
        """Hash of the channels read through EventSub -> their broadcaster's user id."""
        return f"{self.prefix}eventsub:routes"

    @property
    def eventsub_problems(self) -> str:
        """Hash of the channels whose subscription failed -> why."""
        return f"{self.prefix}eventsub:problems"

    @property
    def eventsub_revoked(self) -> str:
        """Set of the broadcaster ids whose subscriptions Twitch revoked (workers add them)."""
        return f"{self.prefix}eventsub:revoked"

    @property
    def eventsub_disabled(self) -> str:
        """Hash of the conduit's shards Twitch disabled -> the session id it disabled (the
        coordinator's check and the workers' ``conduit.shard.disabled`` notifications add them;
        the holder of that session binds a new one and takes its entry away)."""
        return f"{self.prefix}eventsub:disabled"

    def invite_ended(self, session_id: str) -> str:
        """An invite screen session that was signed out, until it would have expired."""
        return f"{self.prefix}invite:ended:{session_id}"

    def incident(self, name: str) -> str:
        """An incident notified lately (by whom), until the quiet period ends."""
        return f"{self.prefix}incident:{name}"

    @property
    def scale_history(self) -> str:
        """The newest :data:`~tmi_cluster.bus.streams.SCALE_HISTORY` ProcessScaled events."""
        return f"{self.prefix}scale:history"

    @property
    def events(self) -> str:
        """Stream of chat events for other processes."""
        return f"{self.prefix}events"

    def ratelimit(self, account: str, bucket: str) -> str:
        """Sliding window ``bucket`` (join, auth, messages, moderator_messages) of one account."""
        return f"{self.prefix}ratelimit:{account}:{bucket}"

    @property
    def ratelimit_epoch(self) -> str:
        """A token naming the current memory of Redis: a new one means the windows were lost."""
        return f"{self.prefix}ratelimit:epoch"

    def orphan(self, channel: str) -> str:
        """Mark of a channel taken from a worker presumed dead (expires after
        :data:`ORPHAN_GUARD_S`): its new owner checks its events, for the old one may come back."""
        return f"{self.prefix}orphan:{channel}"

    def dedupe(self, key: str) -> str:
        """De-duplication marker of one event (expires after :data:`DEDUPE_S`)."""
        return f"{self.prefix}dedupe:{key}"

    def lock(self, name: str) -> str:
        """A short mutual-exclusion lock."""
        return f"{self.prefix}lock:{name}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this cluster."""
        return self.prefix.replace("*", r"\*").replace("?", r"\?").replace("[", r"\[") + "*"
