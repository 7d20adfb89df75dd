"""The cluster's size: each live supervisor's target number of worker processes.

The coordinator decides it once a pass (:class:`Sizing`): the auto-scaler's rule
(:mod:`tmi_cluster.coordinator.autoscale`) for the whole cluster; a scale-out goes to the
supervisor with the fewest workers, a scale-in drains the least-loaded worker of the cluster;
while the targets differ by more than one (a supervisor joined), one worker at a time moves
from the supervisor with the most to the one with the fewest (its least-loaded worker drains),
so that the workers are spread over the hosts; like a scale decision, not while paused or
within the cooldown (a size set by hand stays). A cluster starting from nothing comes back at
its recent size (``auto_scale.restore``, kept in SQL) or ``min``. Every write is fenced by the
lease's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from tmi_cluster.bus import Coordination
from tmi_cluster.bus.heartbeat import Beat, SupervisorStatus
from tmi_cluster.bus.lease import Lease
from tmi_cluster.coordinator.autoscale import Cause, ScalePolicy, decide, initial_size
from tmi_cluster.coordinator.planner import Member
from tmi_cluster.errors import StorageError
from tmi_cluster.store import Store

__all__ = ["Sizing"]

log = logging.getLogger(__name__)

#: The state key of the cluster's size in SQL (``auto_scale.restore``).
_SCALE_STATE = "scale"


class Sizing:
    """The size decisions of the coordinator holding ``lease``; see the module. A supervisor
    whose last beat is older than ``supervisor_fresh_s`` counts as gone."""

    def __init__(
        self,
        coordination: Coordination,
        store: Store,
        lease: Lease,
        policy: ScalePolicy,
        *,
        supervisor_fresh_s: float,
    ) -> None:
        self.coordination = coordination
        self.store = store
        self.lease = lease
        self.policy = policy
        self.supervisor_fresh_s = supervisor_fresh_s

    async def targets(self, supervisors: Mapping[str, Beat[SupervisorStatus]]) -> dict[str, int]:
        """The targets of the live supervisors that are not stopping and beat recently (one
        killed with SIGKILL keeps its key until ``supervisor.stale``, but its beats stop, and
        so do its workers, at once); ages on Redis's clock."""
        targets = await self.coordination.targets()
        gone = [s for s in targets if s not in supervisors or supervisors[s].status.fixed]
        if gone:  # supervisors that ended without saying so (or size themselves): no target
            await self.coordination.forget_targets(self.lease.token, gone)
        result = {}
        for supervisor, beat in supervisors.items():
            if beat.status.state == "stopping" or beat.age_s > self.supervisor_fresh_s:
                continue
            if beat.status.fixed:  # it sizes itself (supervisor.processes)
                continue
            shown = beat.status.target  # what it runs for: a Redis that forgot keeps it
            result[supervisor] = targets.get(supervisor, shown if shown > 0 else -1)
        return result

    async def scale(
        self,
        members: list[Member],
        targets: dict[str, int],
        *,
        channels: int,
        load: Mapping[str, int],
    ) -> None:
        """Decide the cluster's size and carry a change out (see the module's docstring):
        ``channels`` is the load to carry (each copy of a channel counts), ``load`` each
        member's after the pass's plan."""
        if not targets:
            return
        state, now = await self.coordination.scale_state()
        changes = await self._targets_for_new(targets)
        if changes:  # supervisors came: their workers start first, the rule applies after
            await self._apply_targets(changes, next(iter(changes.values()))[1], now)
            return
        since = now - state.last_change
        decision = decide(
            self.policy,
            sum(targets.values()),
            channels,
            since_last_change_s=since,
            paused=state.paused,
        )
        if decision.change > 0:
            for supervisor in _fewest(targets, decision.change):
                targets[supervisor] += 1
                changes[supervisor] = (targets[supervisor], decision.cause)
        elif decision.change < 0:
            await self._drain(
                members, targets, load, changes, count=-decision.change, cause=decision.cause
            )
        elif (
            decision.cause is Cause.STEADY
            and len(targets) > 1
            and not any(m.draining for m in members)
        ):
            most = max(targets, key=lambda t: (targets[t], t))
            least = min(targets, key=lambda t: (targets[t], t))
            if targets[most] - targets[least] > 1:  # spread over the hosts: one at a time
                moved = await self._drain(
                    members, targets, load, changes, count=1, cause=Cause.SPREAD, only=most
                )
                if moved:
                    targets[least] += 1
                    changes[least] = (targets[least], Cause.SPREAD)
        if changes:
            cause = decision.cause if decision.change else Cause.SPREAD
            await self._apply_targets(changes, cause, now)
            with contextlib.suppress(StorageError):
                await asyncio.to_thread(
                    self.store.set_state, _SCALE_STATE, {"processes": sum(targets.values())}
                )

    async def _drain(
        self,
        members: list[Member],
        targets: dict[str, int],
        load: Mapping[str, int],
        changes: dict[str, tuple[int, Cause]],
        *,
        count: int,
        cause: Cause,
        only: str | None = None,
    ) -> int:
        """Drain the ``count`` least-loaded workers (of supervisor ``only``, else of any with a
        target), their supervisors' targets one lower each; how many."""
        candidates = sorted(
            (
                m
                for m in members
                if not m.draining
                and targets.get(m.supervisor, 0) > 0
                and (only is None or m.supervisor == only)
            ),
            key=lambda m: (load.get(m.id, 0), m.id),
        )
        for member in candidates[:count]:
            targets[member.supervisor] -= 1
            changes[member.supervisor] = (targets[member.supervisor], cause)
            await self.coordination.drain(self.lease.token, member.id, cause.value)
            log.info(
                "coordinator: %s drains (%s, %d channels)", member.id, cause, load.get(member.id, 0)
            )
        return len(candidates[:count])

    async def _targets_for_new(self, targets: dict[str, int]) -> dict[str, tuple[int, Cause]]:
        """Targets for the supervisors without one (-1 in ``targets``): a cluster starting from
        nothing comes back at its recent size (``restore``) or ``min``; a supervisor joining a
        running cluster starts with none, and the workers are then spread over the
        supervisors one by one (scale-outs go to the one with the fewest)."""
        new = [s for s, t in targets.items() if t < 0]
        if not new:
            return {}
        known = sum(t for t in targets.values() if t >= 0)
        cause = Cause.STEADY
        total = known
        if known == 0:
            remembered = await self._remembered()
            total = initial_size(self.policy, remembered)
            cause = Cause.BELOW_MINIMUM if remembered is None else Cause.RESTORE
        for supervisor in new:
            targets[supervisor] = 0
        for supervisor in _fewest(targets, total - known):
            targets[supervisor] += 1
        return {supervisor: (targets[supervisor], cause) for supervisor in new}

    async def _apply_targets(
        self, changes: Mapping[str, tuple[int, Cause]], cause: Cause | None, now: float
    ) -> None:
        """Write the new targets (and the time of a decided change) and tell each one, at once
        and fenced."""
        targets = {s: (target, why.value) for s, (target, why) in changes.items()}
        change = (now, cause.value) if cause is not None else None
        await self.coordination.apply_targets(self.lease.token, targets, change=change)

    async def _remembered(self) -> int | None:
        try:
            value = await asyncio.to_thread(self.store.state, _SCALE_STATE)
        except StorageError:
            return None
        processes = (value or {}).get("processes")
        return int(processes) if isinstance(processes, int) else None


def _fewest(targets: dict[str, int], count: int) -> list[str]:
    """``count`` supervisors to give one worker more each, the fewest first (repeats allowed)."""
    picked: list[str] = []
    scratch = dict(targets)
    for _ in range(max(0, count)):
        supervisor = min(scratch, key=lambda s: (scratch[s], s))
        scratch[supervisor] += 1
        picked.append(supervisor)
    return picked
