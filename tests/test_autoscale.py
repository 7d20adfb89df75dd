"""The scale decision: a table of cases, and properties over random loads."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmi_cluster.config import Settings
from tmi_cluster.coordinator.autoscale import Cause, ScalePolicy, decide, initial_size

POLICY = ScalePolicy(
    minimum=2, maximum=10, capacity=50, scale_in_percent=50, scale_out_percent=70, cooldown_s=60
)


@pytest.mark.parametrize(
    "case",
    [
        (0, 0, math.inf, False, 2, Cause.BELOW_MINIMUM),
        (1, 500, 0.0, False, 2, Cause.BELOW_MINIMUM),  # bounds ignore the cooldown
        (12, 0, 0.0, True, 10, Cause.ABOVE_MAXIMUM),  # and a pause
        (2, 71, math.inf, False, 3, Cause.SCALE_OUT),  # 71 %
        (2, 70, math.inf, False, 2, Cause.STEADY),  # 70 %: not above
        (2, 71, 30.0, False, 2, Cause.COOLDOWN),
        (2, 71, math.inf, True, 2, Cause.PAUSED),
        (10, 1000, math.inf, False, 10, Cause.STEADY),  # 200 %, at the maximum
        (4, 99, math.inf, False, 3, Cause.SCALE_IN),  # 49.5 %; after: 66 %
        (4, 100, math.inf, False, 4, Cause.STEADY),  # 50 %: not below
        (2, 0, math.inf, False, 2, Cause.STEADY),  # at the minimum
        (3, 74, math.inf, False, 3, Cause.STEADY),  # 49 %, but 74 % on two: it would flap
        (3, 70, math.inf, False, 2, Cause.SCALE_IN),  # 46 %, 70 % on two: allowed
    ],
)
def test_decisions(case: tuple[int, int, float, bool, int, Cause]) -> None:
    processes, channels, since_s, paused, expected, cause = case
    decision = decide(POLICY, processes, channels, since_last_change_s=since_s, paused=paused)
    assert (decision.processes, decision.cause) == (expected, cause)
    assert decision.change == expected - processes


@given(st.integers(0, 40), st.integers(0, 3000))
def test_never_flaps_and_stays_within_bounds(processes: int, channels: int) -> None:
    first = decide(POLICY, processes, channels)
    assert POLICY.minimum <= first.processes <= POLICY.maximum
    assert first.change in (-1, 0, 1) or first.cause in (Cause.BELOW_MINIMUM, Cause.ABOVE_MAXIMUM)
    if first.cause is Cause.SCALE_IN:  # the next decision on the same load keeps it
        assert decide(POLICY, first.processes, channels).change <= 0
    if first.cause is Cause.SCALE_OUT:
        assert decide(POLICY, first.processes, channels).change >= 0


def test_restore_starts_at_the_recent_size_and_scale_in_still_happens() -> None:
    assert initial_size(POLICY, 7) == 7
    assert initial_size(POLICY, 40) == 10
    assert initial_size(POLICY, None) == 2
    assert initial_size(ScalePolicy(restore=False), 7) == 2
    # restored at 7 with little load: it shrinks, one process per cooldown, to the minimum
    size, steps = initial_size(POLICY, 7), 0
    while (decision := decide(POLICY, size, 10)).change:
        size, steps = decision.processes, steps + 1
    assert (size, steps) == (2, 5)


def test_policy_from_settings_and_bad_numbers() -> None:
    policy = ScalePolicy.from_settings(Settings())
    assert (policy.minimum, policy.maximum, policy.capacity) == (2, 25, 50)
    with pytest.raises(ValueError, match="scale_in < scale_out"):
        ScalePolicy(scale_in_percent=80, scale_out_percent=70)
    with pytest.raises(ValueError, match="minimum <= maximum"):
        ScalePolicy(minimum=5, maximum=2)
