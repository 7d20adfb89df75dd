"""The coordinator's plan: cases, and properties over random snapshots."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tmi_cluster.planner import Member, Snapshot, plan


def _members(*specs: str, capacity: int = 4) -> list[Member]:
    """``"p1@s1/h1"`` -> Member p1 of supervisor s1 on host h1."""
    result = []
    for spec in specs:
        name, _, rest = spec.partition("@")
        supervisor, _, host = rest.partition("/")
        result.append(Member(name, supervisor or name, host or supervisor or name, capacity))
    return result


def test_unowned_channels_go_to_the_most_free_and_spread_across_hosts() -> None:
    members = _members("a1@sa/ha", "a2@sa/ha", "b1@sb/hb")
    result = plan(Snapshot.of(["w", "x", "y"], members, {}))
    hosts = Counter({"a1": "ha", "a2": "ha", "b1": "hb"}[p] for p in result.assign.values())
    assert hosts == {"ha": 2, "hb": 1}  # not all on one host
    assert result.waiting == []


def test_sticky_a_placed_channel_stays() -> None:
    members = _members("p1", "p2")
    assignment = {"a": "p1", "b": "p2", "c": "p1"}
    assert plan(Snapshot.of(["a", "b", "c"], members, assignment)).assign == {}


def test_the_channels_of_a_dead_or_draining_process_move() -> None:
    members = [*_members("p1", "p2"), Member("p3", "s", "h", 4, draining=True)]
    assignment = {"a": "gone", "b": "p3", "c": "p1"}
    result = plan(Snapshot.of(["a", "b", "c"], members, assignment))
    assert set(result.assign) == {"a", "b"}
    assert "p3" not in result.assign.values()


def test_unwanted_and_blocked_channels_are_unassigned() -> None:
    members = _members("p1")
    result = plan(Snapshot.of(["a", "b"], members, {"a": "p1", "b": "p1", "z": "p1"}, ["b"]))
    assert result.unassign == {"b", "z"}


def test_what_does_not_fit_waits() -> None:
    members = _members("p1", "p2", capacity=2)
    result = plan(Snapshot.of([f"c{i}" for i in range(6)], members, {"c5": "gone"}))
    assert len(result.assign) == 4
    assert len(result.waiting) == 2
    assert "c5" in result.unassign or "c5" in result.assign  # never left on a dead owner


def test_rebalancing_moves_in_bounded_steps_until_even() -> None:
    members = _members("p1", "p2", capacity=100)
    assignment = {f"c{i:02}": "p1" for i in range(40)}
    wanted = list(assignment)
    first = plan(Snapshot.of(wanted, members, assignment), max_moves=5)
    assert first.moves == 5
    after = first.applied(assignment)
    rounds = 1
    while (step := plan(Snapshot.of(wanted, members, after), max_moves=5)).assign:
        after, rounds = step.applied(after), rounds + 1
    loads = Counter(after.values())
    assert abs(loads["p1"] - loads["p2"]) <= 2
    assert rounds == 4  # 19 moves of at most 5


members_strategy = st.lists(
    st.builds(
        Member,
        st.sampled_from([f"p{i}" for i in range(8)]),
        st.sampled_from(["s1", "s2", "s3"]),
        st.sampled_from(["h1", "h2"]),
        st.integers(0, 6),
        st.booleans(),
    ),
    max_size=6,
    unique_by=lambda m: m.id,
)
channels = st.sets(st.sampled_from([f"c{i}" for i in range(30)]), max_size=30)


@settings(max_examples=300)
@given(
    members_strategy,
    channels,
    st.dictionaries(
        st.sampled_from([f"c{i}" for i in range(30)]), st.sampled_from([f"p{i}" for i in range(10)])
    ),
    channels,
    st.integers(0, 10),
)
def test_properties(
    members: list[Member],
    wanted: set[str],
    assignment: dict[str, str],
    blocked: set[str],
    max_moves: int,
) -> None:
    result = plan(Snapshot.of(wanted, members, assignment, blocked), max_moves=max_moves)
    after = result.applied(assignment)
    live = {m.id: m for m in members}
    assert not result.assign.keys() & result.unassign  # one decision per channel
    assert set(after) <= wanted - blocked  # only wanted, unblocked channels are assigned
    for owner in result.assign.values():
        assert owner in live
        assert not live[owner].draining
    # no member gets more than its capacity from the plan
    placed = Counter(result.assign.values())
    for owner, count in placed.items():
        before = sum(1 for c, p in assignment.items() if p == owner and c in after)
        assert before + count <= max(live[owner].capacity, before)
    # every wanted channel is placed when the capacity exists
    room = sum(m.capacity for m in members if not m.draining)
    placeable = len(wanted - blocked)
    if placeable <= room:
        assert set(after) == wanted - blocked, (result, after)
    assert result.moves <= max_moves
