"""Auto-scaling as a pure function: the cluster's load in, a decision out (no I/O).

The original's rule, cluster-wide and without its defects: usage is the wanted channels over
the capacity of the live processes (``auto_scale.thresholds.channels`` per process = 100 %).

- Below ``processes.min`` or above ``processes.max``: towards the bound, at once (no cooldown).
- Paused (manual control): no change.
- Within ``auto_scale.cooldown`` seconds of the last change: no change.
- Usage above ``scale_out`` %: one process more (up to ``max``).
- Usage below ``scale_in`` % and still not above ``scale_out`` % once one process is gone (so
  that the scale-in is never undone by the next decision): one process less (down to ``min``).
  Scale-in drains the least-loaded process (the caller picks it), not the oldest.
- ``restore`` (:func:`initial_size`): a restarted cluster starts at its recent size, then the
  same rule applies, so it scales in again when the load says so (the original's ratchet kept
  the recent size as a floor for ever).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from tmi_cluster.config import Settings

__all__ = ["Cause", "Decision", "ScalePolicy", "decide", "initial_size"]


class Cause(enum.StrEnum):
    """Why a decision is what it is (``ProcessScaled`` events carry it)."""

    BELOW_MINIMUM = "below_minimum"
    ABOVE_MAXIMUM = "above_maximum"
    PAUSED = "paused"
    COOLDOWN = "cooldown"
    SCALE_OUT = "scale_out"
    SCALE_IN = "scale_in"
    STEADY = "steady"
    #: A restarted cluster came back at its recent size (``restore``).
    RESTORE = "restore"
    #: Set by hand (``tmi-cluster scale``).
    MANUAL = "manual"
    #: One worker moved from the supervisor with the most to the one with the fewest.
    SPREAD = "spread"


@dataclass(frozen=True)
class ScalePolicy:
    """The ``auto_scale`` settings as numbers."""

    minimum: int = 2
    maximum: int = 25
    capacity: int = 50
    scale_in_percent: float = 50.0
    scale_out_percent: float = 70.0
    cooldown_s: float = 60.0
    restore: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.minimum <= self.maximum:
            raise ValueError(f"need 0 <= minimum <= maximum, got {self.minimum}, {self.maximum}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        if not 0 <= self.scale_in_percent < self.scale_out_percent:
            raise ValueError(
                "need 0 <= scale_in < scale_out, got "
                f"{self.scale_in_percent:g}, {self.scale_out_percent:g}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> ScalePolicy:
        """The policy of ``settings.auto_scale``."""
        scale = settings.auto_scale
        return cls(
            minimum=scale.processes.min,
            maximum=scale.processes.max,
            capacity=scale.thresholds.channels,
            scale_in_percent=scale.thresholds.scale_in,
            scale_out_percent=scale.thresholds.scale_out,
            cooldown_s=scale.cooldown,
            restore=scale.restore,
        )

    def usage(self, processes: int, channels: int) -> float:
        """Channels over capacity, in percent (infinite with channels and no process)."""
        if processes <= 0:
            return math.inf if channels else 0.0
        return 100.0 * channels / (processes * self.capacity)


@dataclass(frozen=True)
class Decision:
    """How many processes there should be, the change (+1, -1, 0 or a jump to a bound), and
    why, with the usage that decided it."""

    processes: int
    change: int
    cause: Cause
    usage_percent: float


def decide(
    policy: ScalePolicy,
    processes: int,
    channels: int,
    *,
    since_last_change_s: float = math.inf,
    paused: bool = False,
) -> Decision:
    """The scale decision for ``processes`` live processes holding or owing ``channels``
    wanted channels, ``since_last_change_s`` after the last change."""
    usage = policy.usage(processes, channels)
    shrinkable = (
        processes > policy.minimum
        and usage < policy.scale_in_percent
        and policy.usage(processes - 1, channels) <= policy.scale_out_percent
    )
    rules = (  # the first that holds decides
        (processes < policy.minimum, policy.minimum, Cause.BELOW_MINIMUM),
        (processes > policy.maximum, policy.maximum, Cause.ABOVE_MAXIMUM),
        (paused, processes, Cause.PAUSED),
        (since_last_change_s < policy.cooldown_s, processes, Cause.COOLDOWN),
        (
            usage > policy.scale_out_percent and processes < policy.maximum,
            processes + 1,
            Cause.SCALE_OUT,
        ),
        (shrinkable, processes - 1, Cause.SCALE_IN),
    )
    target, cause = next(((t, c) for holds, t, c in rules if holds), (processes, Cause.STEADY))
    return Decision(target, target - processes, cause, usage)


def initial_size(policy: ScalePolicy, remembered: int | None) -> int:
    """How many processes a (re)started cluster starts with: its remembered recent size with
    ``restore`` (within min and max), else ``min``. Only the start: the rule applies after."""
    if not policy.restore or remembered is None:
        return policy.minimum
    return max(policy.minimum, min(policy.maximum, remembered))
