"""The coordinator: under the lease, the cluster's assignment made to follow what is wanted,
failed joins retried or given up, and the cluster's size decided.

Every supervisor runs :meth:`Coordinator.run`; the one that holds the lease
(:mod:`tmi_cluster.bus.lease`, renewed every pass, lost ``lease_s`` after its holder stops
renewing) acts, the others only try to take it. Each pass (:meth:`Coordinator.run_once`), once
a second or at once when woken (:func:`~tmi_cluster.bus.wake`: a join or part asked for, a
worker process gone):

1. take or renew the lease; without it, do nothing;
2. read the workers' reports since the last pass (a cursor in Redis, so that a new leader goes
   on where the last one stopped): a join confirmed ends a channel's failures; a failed join of
   the channel's owner is recorded with its reason and retried after a delay that the reason
   demands, or given up (:func:`retry_delay`); records go to SQL, and wait in memory while the
   database is away;
3. read the snapshot: the wanted channels (SQL, cached, read again when ``P wanted:version``
   changes or every :data:`WANTED_REFRESH_S`; while the database is away the cached set is
   used, and with none the pass does nothing rather than unassign anything), the live worker
   processes and supervisors (their heartbeats in Redis alone), which are being emptied
   (``P draining``, a stopping supervisor or process), what each holds, and the assignment;
4. plan (:func:`tmi_cluster.coordinator.planner.plan`, pure), within the join budgets
   (:class:`JoinBudget`);
5. write the plan fenced by the lease's token: if another coordinator took over meanwhile,
   :class:`~tmi_cluster.errors.StaleLeaseError`, nothing is written and this one steps down.
   Every other write of the pass (the epoch, the reports' cursor, targets and orders, draining
   marks, the cleanup's schedule) is fenced the same way (:mod:`tmi_cluster.bus.coordination`);
6. decide the cluster's size (:mod:`tmi_cluster.coordinator.sizing`): each supervisor's
   target in ``P scale:targets``, told to it by an order.

With a channel manager that cleans up, the leader also runs the stale cleanup beside the passes
(:mod:`tmi_cluster.coordinator.cleanup`), once per period for the whole cluster. Failed joins
are kept by :mod:`tmi_cluster.coordinator.failures`.

The wanted channels the plan places are those the channel manager authorizes
(:func:`tmi_cluster.channels.joinable`): a revoked channel is unassigned, so parted, in the
next pass.

An unexpected error in a pass is logged with its traceback and shown as :attr:`problem` (the
supervisor's status carries it); the next pass runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from tmi_cluster.bus import (
    Assignment,
    AsyncRedis,
    Coordination,
    Keys,
    Outage,
)
from tmi_cluster.bus.heartbeat import (
    Beat,
    ProcessStatus,
    SupervisorStatus,
    live,
    of_live_supervisors,
)
from tmi_cluster.bus.keys import ADOPT_GRACE_S
from tmi_cluster.bus.lease import Lease
from tmi_cluster.channels import ChannelManager, DummyChannelManager, cleans_up, joinable
from tmi_cluster.chat.ratelimit import AccountRates
from tmi_cluster.config import Settings
from tmi_cluster.coordinator.autoscale import ScalePolicy
from tmi_cluster.coordinator.cleanup import StaleCleanup
from tmi_cluster.coordinator.eventsub import ConduitKeeper
from tmi_cluster.coordinator.failures import JoinFailures
from tmi_cluster.coordinator.planner import Member, Plan, Snapshot, plan
from tmi_cluster.coordinator.sizing import Sizing
from tmi_cluster.errors import (
    RedisUnavailableError,
    StaleLeaseError,
    StorageError,
)
from tmi_cluster.store import Store
from tmi_cluster.tasks import cancel_and_wait

__all__ = [
    "ADOPT_GRACE_S",
    "ADOPT_MIN_S",
    "LEASE_S",
    "PASS_S",
    "WANTED_REFRESH_S",
    "Coordinator",
    "JoinBudget",
]

log = logging.getLogger(__name__)

#: Seconds the lease lives without renewal: how long losing the leader costs at most.
LEASE_S = 3.0
#: Seconds between two passes when nothing wakes the coordinator.
PASS_S = 1.0
#: Seconds after which the wanted channels are read from SQL again even without a change.
WANTED_REFRESH_S = 30.0
#: ADOPT_GRACE_S (:mod:`tmi_cluster.bus.keys`, which the workers read too): a new assignment's
#: adoption ends sooner once every worker the supervisors run has said what it holds (and
#: ADOPT_MIN_S has passed, so that their heartbeats are back).
ADOPT_MIN_S = 2.0
#: Seconds until a stale cleanup that failed is tried again.
CLEANUP_RETRY_S = 30.0


@dataclass(frozen=True)
class JoinBudget:
    """How many joins may be under way (assigned, not yet confirmed) at once: ``account`` for
    the whole cluster (the bot's account, whose JOIN window every process shares), and
    ``per_process`` for each worker (its anonymous connections, each its own identity with
    its own window). None: no limit of that kind. The windows themselves keep every JOIN
    within Twitch's limits; these keep enough work queued for the windows to be used fully,
    and no more, so that a backlog is spread over the identities."""

    account: int | None = None
    per_process: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> JoinBudget:
        """One window's worth of the account's JOINs when it reads with the account, else
        one window's worth of each anonymous connection a worker opens at its capacity."""
        connection = settings.tmi.connection
        if settings.tmi.identity.anonymous or connection.read_anonymously:
            per_connection = settings.throttle.join.anonymous_allow
            connections = math.ceil(
                settings.auto_scale.thresholds.channels / connection.channels_per_connection
            )
            return cls(per_process=per_connection * max(1, connections))
        return cls(account=AccountRates.from_settings(settings).join.allow)


@dataclass(frozen=True)
class _View:
    """What one pass read: the plan's snapshot, the live supervisors' targets (see
    :meth:`Sizing.targets`), the channels to place, whether the adoption grace runs."""

    snapshot: Snapshot
    targets: dict[str, int]
    placeable: int
    adopting: bool
    #: Workers of supervisors that size themselves (``supervisor.processes``).
    fixed: int = 0


class Coordinator:
    """The coordinator candidate ``holder`` (a supervisor's id) of one cluster."""

    def __init__(
        self,
        client: AsyncRedis,
        store: Store,
        keys: Keys,
        holder: str,
        *,
        capacity: int,
        budget: JoinBudget | None = None,
        policy: ScalePolicy | None = None,
        lease_s: float = LEASE_S,
        max_moves: int = 100,
        pass_s: float = PASS_S,
        adopt_grace_s: float = ADOPT_GRACE_S,
        supervisor_fresh_s: float = 10.0,
        manager: ChannelManager | None = None,
        cleanup_every: tuple[float, float] | None = None,
        eventsub: ConduitKeeper | None = None,
        copies: int = 1,
    ) -> None:
        self.client = client
        self.store = store
        self.keys = keys
        self.capacity = capacity
        #: How many processes hold each channel (``coordinator.replicas``).
        self.copies = copies
        self.budget = budget or JoinBudget()
        #: The auto-scaler's policy; None: the coordinator does not scale.
        self.policy = policy
        self.max_moves = max_moves
        self.pass_s = pass_s
        self.adopt_grace_s = adopt_grace_s
        #: A supervisor whose last beat is older counts as gone for the cluster's size.
        self.supervisor_fresh_s = supervisor_fresh_s
        self.lease = Lease(client, keys, holder, lease_s)
        #: Which channels may be joined; the Dummy manager (all) by default.
        self.manager: ChannelManager = manager or DummyChannelManager()
        #: The stale cleanup's (interval, max_delay) in seconds; None: no cleanup.
        self.coordination = Coordination(client, keys)
        #: The stale cleanup (None: the manager does not clean up, or no ``cleanup_every``).
        self.cleanup: StaleCleanup | None = None
        if cleanup_every is not None and cleans_up(self.manager):
            self.cleanup = StaleCleanup(
                self.manager,
                store,
                client=client,
                keys=keys,
                coordination=self.coordination,
                lease=self.lease,
                every=cleanup_every,
            )
        #: The EventSub route (None: off, or no Twitch application configured).
        self.eventsub = eventsub
        self._manager_problem: str | None = None
        #: Whether the last pass held the lease.
        self.leading = False
        #: The passes this coordinator made as the leader (for the metrics).
        self.passes = 0
        #: Why the last pass failed (an unexpected error), else None.
        self.problem: str | None = None
        #: Live workers whose ``coordinator.replicas`` differs from this one's (see
        #: :meth:`_copies_now`), and what is said of it (None: nothing wrong).
        self._differing: list[str] = []
        self._copies_problem: str | None = None
        self._seconds_problem: str | None = None
        #: The last plan carried out.
        self.last_plan: Plan | None = None
        #: Live workers whose supervisor has no heartbeat, and since when (monotonic, here).
        self._orphans: dict[str, float] = {}
        self.outage = Outage()
        self._wanted: frozenset[str] | None = None
        self._version: bytes | None = None
        self._loaded_at = 0.0
        #: The failed joins: retried after their delay, or given up.
        self.failures = JoinFailures(store, holder)
        self._db_failing = False
        self._adopt_until = 0.0
        self._adopt_since = 0.0
        #: The cluster's size (None: the coordinator does not scale).
        self.sizing = (
            Sizing(
                self.coordination,
                store,
                self.lease,
                policy,
                supervisor_fresh_s=supervisor_fresh_s,
            )
            if policy is not None
            else None
        )

    @property
    def copies_problem(self) -> str | None:
        """Why channels have one copy while ``coordinator.replicas`` says two (a worker with
        another setting, or no room for the second copies), else None."""
        return self._copies_problem or self._seconds_problem

    @property
    def cleanup_problem(self) -> str | None:
        """Why the last stale cleanup run failed, else None."""
        return self.cleanup.problem if self.cleanup is not None else None

    @classmethod
    def from_settings(
        cls,
        client: AsyncRedis,
        store: Store,
        settings: Settings,
        holder: str,
        *,
        manager: ChannelManager | None = None,
    ) -> Coordinator:
        """A coordinator as the settings describe it (capacity, budgets, auto-scaling, the
        stale cleanup), with the channel manager ``manager``."""
        keys = Keys.from_settings(settings)
        beat_s = min(settings.process.periodic_timer, keys.supervisor_ttl_s / 3)
        auto = settings.channel_manager.auto_cleanup
        coordinator = cls(
            client,
            store,
            keys,
            holder,
            capacity=settings.auto_scale.thresholds.channels,
            budget=JoinBudget.from_settings(settings),
            policy=ScalePolicy.from_settings(settings),
            supervisor_fresh_s=3 * beat_s + 1.0,
            manager=manager,
            cleanup_every=(auto.interval, auto.max_delay) if auto.enabled else None,
            copies=settings.coordinator.replicas,
        )
        if settings.twitch.has_app:  # also to wind the route down when it is turned off
            coordinator.eventsub = ConduitKeeper(settings, client, keys, store, coordinator.lease)
        return coordinator

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Make a pass every ``pass_s`` seconds, or at once when woken, until ``stop`` is set;
        then give the lease up. Never raises: an outage is waited out, an error shown."""
        after = "$"
        keeper = None
        if self.eventsub is not None:
            keeper = asyncio.create_task(
                self.eventsub.run(lambda: self.leading, stop), name="EventSub route"
            )
        while not stop.is_set():
            if keeper is not None and keeper.done() and not keeper.cancelled():
                self.problem = f"the EventSub route stopped: {keeper.exception()!r}"  # a bug
            try:
                await self.run_once()
                self.outage.ended()
                self.problem = self._manager_problem
            except RedisUnavailableError as error:
                self.outage.began(error, f"coordinator {self.lease.holder}")
                self.leading = False
            except Exception as error:  # a bug: visible, and the next pass goes on
                log.exception("coordinator %s: a pass failed", self.lease.holder)
                self.problem = f"{type(error).__name__}: {error}"
            try:
                after = await self._wait(after)
            except RedisUnavailableError:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.pass_s)
        if self.cleanup is not None:
            await self.cleanup.aclose()
        await cancel_and_wait(keeper, what="the EventSub route")
        with contextlib.suppress(RedisUnavailableError):
            if self.leading:
                await self.lease.release()
        self.leading = False

    async def _wait(self, after: str) -> str:
        """Wait for a wake-up after id ``after`` or ``pass_s``; the last id seen."""
        return await self.coordination.wait_for_wake(after, self.pass_s)

    # -- one pass -------------------------------------------------------------------------------

    async def run_once(self) -> Plan | None:
        """One pass; the plan carried out, or None when another coordinator holds the lease
        (or took it over before the writes), or no wanted channels could be read yet."""
        token = await self.lease.acquire()
        if not token:
            if self.leading:
                log.info("coordinator %s: no longer leading", self.lease.holder)
            self.leading = False
            return None
        if not self.leading:
            log.info("coordinator %s leads (fencing token %d)", self.lease.holder, token)
            self.leading = True
        try:
            done = await self._pass(token)
            self.passes += 1
            return done
        except StaleLeaseError as error:  # every write of the pass is fenced: none was made
            log.warning("coordinator %s steps down: %s", self.lease.holder, error)
            self.lease.token = 0
            self.leading = False
            return None

    async def _pass(self, token: int) -> Plan | None:
        """The pass of a leader holding ``token``; StaleLeaseError once it is not current."""
        wanted = await self._load_wanted()
        if wanted is None:
            return None
        if self.eventsub is not None:  # EventSub's channels leave IRC; its shards are placed
            wanted = self.eventsub.placed(wanted)
        view = await self._read(wanted)
        if self.eventsub is not None:
            self.eventsub.saw(len(view.snapshot.members))
        snapshot = view.snapshot
        # no moves while the workers report what they hold
        result = plan(snapshot, max_moves=0 if view.adopting else self.max_moves)
        fenced = Assignment(self.client, self.keys, token=token)
        alive = {m.id for m in snapshot.members}
        orphans = [
            c
            for c, owner in result.assign.items()
            if (before := snapshot.assignment.get(c)) and before not in alive and before != owner
        ]
        if orphans:  # their old owner may only be cut off: the new one checks their events
            await self.coordination.mark_orphans(token, orphans)
        if result.unassign:
            await fenced.unassign(sorted(result.unassign))
        seconds: dict[str, str | None] = dict(result.replicas)
        seconds.update(dict.fromkeys(result.unreplicate))
        if result.assign or seconds:
            await fenced.assign(result.assign, seconds)
        self.last_plan = result
        self._note_seconds(result, snapshot.copies)
        if result.assign or result.unassign or seconds:
            log.debug(
                "coordinator: %d assigned (%d moves, %d adopted, %d promoted), %d unassigned, "
                "%d waiting, %d paced; second copies: %d placed (%d adopted), %d removed, "
                "%d waiting, %d paced",
                len(result.assign),
                result.moves,
                result.adopted,
                result.promoted,
                len(result.unassign),
                len(result.waiting),
                len(result.paced),
                len(result.replicas),
                result.replicas_adopted,
                len(result.unreplicate),
                len(result.replicas_waiting),
                len(result.replicas_paced),
            )
        await self.failures.write()
        if self.cleanup is not None:
            await self.cleanup.maybe_start()
        if self.sizing is not None:
            load = Counter(result.applied(snapshot.assignment).values())
            load.update(result.applied_replicas(snapshot.replicas).values())
            await self.sizing.scale(
                list(snapshot.members),
                view.targets,
                # what the self-sized supervisors' workers hold is not the auto-scaler's
                channels=max(0, view.placeable * self.copies - view.fixed * self.capacity),
                load=load,
            )
        return result

    async def _read(self, wanted: frozenset[str]) -> _View:
        """What the pass acts on: the plan's snapshot, the supervisors' targets."""
        epoch = await self._epoch()
        members, supervisors = await self._members()
        adopting = await self._adopting(epoch, members, supervisors)
        reader = Assignment(self.client, self.keys)
        assignment = await reader.all()
        replicas = await reader.replicas()  # also with one copy: to remove what is left
        await self._read_reports(assignment, members)
        held = await reader.held_of([m.id for m in members])
        # a failed join waits for its retry, unless a live worker holds the channel all the same
        # (its old owner, handing it over): unassigned, it would be parted there, read by nobody
        blocked = self.failures.blocked() - {c for channels in held.values() for c in channels}
        members = self._with_slots(members, assignment, held, replicas)
        takers = [m for m in members if not m.draining]
        targets = await self.sizing.targets(supervisors) if self.sizing is not None else {}
        fixed = sum(b.status.processes for b in supervisors.values() if b.status.fixed)
        # no more processes to come from the auto-scaler: at its maximum, or nothing to size
        at_max = (
            self.policy is None
            or sum(targets.values()) >= self.policy.maximum
            or (fixed > 0 and not targets)
        )
        placeable = len(wanted - blocked)
        if takers and at_max and placeable * self.copies > self.capacity * len(takers):
            # no more processes: overload evenly
            even = math.ceil(placeable * self.copies / len(takers))
            members = [replace(m, capacity=even) for m in members]
        holders = {c: p for p, channels in held.items() for c in channels if c not in assignment}
        if adopting:  # a new assignment: keep what is held where it is, place the rest later
            blocked |= wanted - holders.keys() - assignment.keys()
        everyone: dict[str, set[str]] = {}
        if self.copies > 1:  # who holds what, to adopt second copies
            for process_id, channels in held.items():
                for channel in channels:
                    everyone.setdefault(channel, set()).add(process_id)
        snapshot = Snapshot.of(
            wanted,
            members,
            assignment,
            blocked,
            holders=holders,
            budget=self._account_budget(assignment, held, replicas),
            replicas=replicas,
            copies=self._copies_now(),
            held=everyone,
        )
        return _View(snapshot, targets, placeable, adopting, fixed)

    # -- reading --------------------------------------------------------------------------------

    async def _epoch(self) -> str:
        """The assignment's epoch; a new one (Redis had none) starts the adoption grace."""
        # a new epoch also marks the assignment fresh: no one is judged dead by a missing beat
        epoch, created = await self.coordination.ensure_epoch(
            self.lease.token, secrets.token_hex(8)
        )
        if created:
            log.info(
                "coordinator %s: a new assignment (a first start, or Redis forgot it): "
                "adopting what the workers hold first",
                self.lease.holder,
            )
            self._adopt_since = time.monotonic()
            self._adopt_until = self._adopt_since + self.adopt_grace_s
        return epoch

    async def _adopting(
        self, epoch: str, members: list[Member], supervisors: Mapping[str, Beat[SupervisorStatus]]
    ) -> bool:
        """Whether the adoption grace goes on: within ``adopt_grace_s`` of a new epoch, until
        the workers the supervisors run have all said what they hold under it."""
        now = time.monotonic()
        if now >= self._adopt_until:
            return False
        if now - self._adopt_since < min(ADOPT_MIN_S, self.adopt_grace_s):
            return True
        expected = sum(beat.status.processes for beat in supervisors.values())
        reported = await Assignment(self.client, self.keys).reported([m.id for m in members])
        if len(members) >= expected and all(e == epoch for e in reported.values()):
            self._adopt_until = 0.0  # everyone said: the grace is over
            return False
        return True

    async def _load_wanted(self) -> frozenset[str] | None:
        version = await self.coordination.wanted_version()
        fresh = time.monotonic() - self._loaded_at < WANTED_REFRESH_S
        if self._wanted is not None and version == self._version and fresh:
            return self._wanted
        try:
            wanted = await joinable(self.manager, self.store)
            failures = await asyncio.to_thread(self.store.failures)
        except Exception as error:  # the database, or a manager of one's own, does not answer
            reason = str(error)
            if not isinstance(error, StorageError):
                log.exception("coordinator %s: the channel manager failed", self.lease.holder)
                reason = self._manager_problem = (
                    f"the channel manager failed: {type(error).__name__}: {error}"
                )
            if not self._db_failing:
                log.warning(
                    "coordinator %s: no wanted channels read (%s); %s",
                    self.lease.holder,
                    reason,
                    "going on with the wanted channels read before"
                    if self._wanted is not None
                    else "waiting for it",
                )
            self._db_failing = True
            self._loaded_at = time.monotonic() - WANTED_REFRESH_S + 5.0  # try again in 5 s
            return self._wanted
        if self._db_failing:
            log.warning("coordinator %s: the wanted channels are read again", self.lease.holder)
            self._db_failing = False
        self._manager_problem = None
        self._wanted, self._version, self._loaded_at = frozenset(wanted), version, time.monotonic()
        self.failures.loaded(failures)
        return self._wanted

    async def _members(self) -> tuple[list[Member], dict[str, Beat[SupervisorStatus]]]:
        processes: dict[str, Beat[ProcessStatus]] = await live(self.client, self.keys, "process")
        self._differing = sorted(
            p for p, b in processes.items() if b.status.replicas != self.copies
        )
        supervisors: dict[str, Beat[SupervisorStatus]] = await live(
            self.client, self.keys, "supervisor"
        )
        draining = await self.coordination.draining()
        members = []
        orphans = sorted(processes.keys() - of_live_supervisors(processes, supervisors).keys())
        now = time.monotonic()
        self._orphans = {p: self._orphans.get(p, now) for p in orphans}  # first seen without one
        for process_id, beat in sorted(processes.items()):
            status = beat.status
            if now - self._orphans.get(process_id, now) >= self.keys.supervisor_ttl_s:
                continue  # its supervisor is dead (not only slow to beat again): so is it
            supervisor = supervisors.get(status.supervisor)
            members.append(
                Member(
                    process_id,
                    supervisor=status.supervisor,
                    host=supervisor.status.host if supervisor is not None else "",
                    capacity=self.capacity,
                    draining=status.state == "stopping"
                    or (supervisor is not None and supervisor.status.state == "stopping")
                    or process_id in draining,
                    slots=0 if status.state == "paused" else None,
                )
            )
        return members, supervisors

    def _copies_now(self) -> int:
        """The copies this pass places: :attr:`copies`, or one while a live worker's
        ``coordinator.replicas`` differs (an old worker during a rolling change, a setting
        that differs: a worker with 1 does not check every event), said once as a warning and
        as the problem until every worker has this coordinator's setting."""
        if not self._differing:
            if self._copies_problem is not None:
                log.warning("coordinator: every worker has coordinator.replicas = %d", self.copies)
            self._copies_problem = None
            return self.copies
        shown = ", ".join(self._differing[:5]) + (" ..." if len(self._differing) > 5 else "")
        problem = (
            f"coordinator.replicas is {self.copies} here but not on worker(s) {shown}: one copy "
            "of each channel until every process has the same setting"
        )
        if problem != self._copies_problem:
            log.warning("coordinator: %s", problem)
        self._copies_problem = problem
        return 1

    def _note_seconds(self, result: Plan, copies: int) -> None:
        """Say once (a warning, and the problem) when channels wait for a second copy that no
        worker has room for, and once when none waits any more."""
        waiting = len(result.replicas_waiting) if copies > 1 else 0
        problem = None
        if waiting:
            problem = (
                f"{waiting} channel(s) without a second copy: no other worker has room "
                "(more workers: auto_scale.processes.max, or more supervisors)"
            )
        if (problem is None) != (self._seconds_problem is None):
            if problem is not None:
                log.warning("coordinator: %s", problem)
            else:
                log.warning("coordinator: every channel has its second copy again")
        self._seconds_problem = problem

    def _with_slots(
        self,
        members: list[Member],
        assignment: Mapping[str, str],
        held: Mapping[str, set[str]],
        replicas: Mapping[str, str],
    ) -> list[Member]:
        """Each member's slots: the per-process budget less its joins under way (either
        copy)."""
        if self.budget.per_process is None:
            return members
        pending = Counter(p for c, p in assignment.items() if c not in held.get(p, ()))
        pending.update(p for c, p in replicas.items() if c not in held.get(p, ()))
        room = self.budget.per_process
        return [
            replace(m, slots=0 if m.slots == 0 else max(0, room - pending[m.id])) for m in members
        ]

    def _account_budget(
        self,
        assignment: Mapping[str, str],
        held: Mapping[str, set[str]],
        replicas: Mapping[str, str],
    ) -> int | None:
        if self.budget.account is None:
            return None
        pending = sum(1 for c, p in assignment.items() if c not in held.get(p, ()))
        pending += sum(1 for c, p in replicas.items() if c not in held.get(p, ()))
        return max(0, self.budget.account - pending)

    async def _read_reports(self, assignment: Mapping[str, str], members: list[Member]) -> None:
        """Follow the workers' reports since the last pass (see the module's docstring)."""
        cursor = await self.coordination.reports_cursor()
        after = cursor or "0-0"
        reader = Assignment(self.client, self.keys)
        active = {m.id for m in members if not m.draining}
        now = datetime.now(UTC)
        for _ in range(20):  # at most 20,000 reports a pass: the rest next time
            reports = await reader.reports(after, 0.0)
            if not reports:
                break
            after = reports[-1].id
            for report in reports:
                self.failures.note(report, assignment, active, now)
        if after != cursor:
            await self.coordination.set_reports_cursor(self.lease.token, after)
