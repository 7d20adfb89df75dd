"""The coordinator's plan: cases, and properties over random snapshots."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tmi_cluster.coordinator.planner import Member, Snapshot, plan


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


def test_a_draining_owner_keeps_what_nobody_can_take() -> None:
    members = [Member("p1", "s", "h", 1), Member("p2", "s", "h", 4, draining=True)]
    result = plan(Snapshot.of(["a", "b", "c"], members, {"a": "p2", "b": "p2", "c": "p2"}))
    assert len(result.assign) == 1  # p1 has room for one
    assert not result.unassign  # the other two stay on p2 until someone can take them
    assert len(result.waiting) == 2


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
    # c5's owner has no heartbeat and nobody has room: it stays assigned (an owner only late
    # to beat must not be made to part it), placed as soon as someone has room
    assert "c5" not in result.unassign


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
        st.one_of(st.none(), st.integers(0, 5)),
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
    st.one_of(st.none(), st.integers(0, 20)),
    st.dictionaries(
        st.sampled_from([f"c{i}" for i in range(30)]), st.sampled_from([f"p{i}" for i in range(10)])
    ),
)
def test_properties(  # noqa: PLR0917 (hypothesis gives them positionally)
    members: list[Member],
    wanted: set[str],
    assignment: dict[str, str],
    blocked: set[str],
    max_moves: int,
    budget: int | None,
    holders: dict[str, str],
) -> None:
    holders = {c: p for c, p in holders.items() if c not in assignment}
    snapshot = Snapshot.of(wanted, members, assignment, blocked, holders=holders, budget=budget)
    result = plan(snapshot, max_moves=max_moves)
    after = result.applied(assignment)
    live = {m.id: m for m in members}
    # the joins stay within the budgets: in all, and each member's slots
    joins = Counter(p for c, p in result.assign.items() if holders.get(c) != p)
    if budget is not None:
        assert sum(joins.values()) <= budget
    for owner, count in joins.items():
        slots = live[owner].slots
        assert slots is None or count <= slots
    assert result.joins == sum(joins.values())
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
    # every wanted channel is placed when the capacity exists and the budgets do not limit
    room = sum(m.capacity for m in members if not m.draining)
    placeable = len(wanted - blocked)
    unlimited = budget is None and all(m.slots is None for m in members)
    if placeable <= room and unlimited:
        assert set(after) == wanted - blocked, (result, after)
    # what is not placed either waits for capacity or is paced by the budgets, never both;
    # a draining owner keeps what is not placed (never a gap in a planned move)
    left = set(result.waiting) | set(result.paced)
    assert (wanted - blocked) - set(after) <= left
    for channel in left & set(after):  # kept where it was: a draining or silent owner
        assert after[channel] not in live or live[after[channel]].draining
        assert after[channel] == assignment[channel]
    if result.waiting:
        assert not result.paced
    assert result.moves <= max_moves


def test_budgets_pace_the_joins_and_spread_them() -> None:
    members = [Member("p1", "s1", "h1", 100, slots=3), Member("p2", "s2", "h2", 100, slots=3)]
    wanted = [f"c{i}" for i in range(10)]
    result = plan(Snapshot.of(wanted, members, {}, budget=5))
    assert result.joins == 5  # the account's budget
    assert max(Counter(result.assign.values()).values()) <= 3  # each one's slots
    assert len(result.paced) == 5
    assert result.waiting == []
    slots_only = plan(Snapshot.of(wanted, members, {}))
    assert Counter(slots_only.assign.values()) == {"p1": 3, "p2": 3}
    free = [Member(m.id, m.supervisor, m.host, m.capacity) for m in members]
    assert len(plan(Snapshot.of(wanted, free, {})).assign) == 10


def test_held_channels_without_an_owner_are_adopted_without_a_join() -> None:
    members = _members("p1", "p2", capacity=10)
    result = plan(
        Snapshot.of(["a", "b", "c"], members, {}, holders={"a": "p2", "b": "p2"}, budget=1)
    )
    assert result.assign["a"] == result.assign["b"] == "p2"
    assert result.adopted == 2
    assert result.joins == 1
    assert "c" in result.assign


# -- two copies of each channel (coordinator.replicas = 2) ------------------------------------


def _apart(members: list[Member], a: str, b: str) -> bool:
    by_id = {m.id: m for m in members}
    return by_id[a].host != by_id[b].host


def test_two_copies_go_to_two_hosts_and_count_as_load() -> None:
    members = _members("a1@sa/ha", "a2@sa/ha", "b1@sb/hb", "b2@sb/hb", capacity=10)
    wanted = [f"c{i}" for i in range(10)]
    result = plan(Snapshot.of(wanted, members, {}, copies=2))
    assert set(result.assign) == set(result.replicas) == set(wanted)
    for channel in wanted:
        assert _apart(members, result.assign[channel], result.replicas[channel]), channel
    load = Counter(result.assign.values()) + Counter(result.replicas.values())
    assert sorted(load.values()) == [5, 5, 5, 5]
    assert result.joins == 20


def test_a_dead_owner_s_second_copy_is_promoted_without_a_join_and_a_new_one_placed() -> None:
    members = _members("a1@sa/ha", "b1@sb/hb", "c1@sc/hc", capacity=10)
    assignment = {"x": "dead", "y": "dead", "z": "b1"}
    replicas = {"x": "a1", "y": "b1", "z": "dead"}
    held = {"x": {"a1"}, "y": {"b1"}, "z": {"b1"}}  # the second copies joined
    snapshot = Snapshot.of(
        ["x", "y", "z"], members, assignment, replicas=replicas, copies=2, held=held
    )
    result = plan(snapshot)
    assert result.assign == {"x": "a1", "y": "b1"}
    assert result.promoted == 2
    after = result.applied(assignment)
    second = result.applied_replicas(replicas)
    assert set(second) == {"x", "y", "z"}
    for channel in "xyz":
        assert second[channel] != after[channel]
        assert second[channel] != "dead"
    assert result.joins == 3  # only the three new second copies


def test_copies_stay_apart_by_supervisor_on_one_host_else_by_member() -> None:
    one_host = _members("a1@sa/h", "a2@sa/h", "b1@sb/h", capacity=10)
    by_id = {m.id: m for m in one_host}
    result = plan(Snapshot.of(["x", "y", "z"], one_host, {}, copies=2))
    for channel in "xyz":
        first, second = result.assign[channel], result.replicas[channel]
        assert by_id[first].supervisor != by_id[second].supervisor
    lone = _members("a1@sa/h", "a2@sa/h", capacity=10)
    result = plan(Snapshot.of(["x", "y"], lone, {}, copies=2))
    assert all(result.assign[c] != result.replicas[c] for c in "xy")
    single = _members("a1", capacity=10)
    result = plan(Snapshot.of(["x"], single, {}, copies=2))
    assert result.replicas == {}
    assert result.replicas_waiting == ["x"]  # a reason to scale out


def test_held_copies_are_adopted_after_redis_forgot() -> None:
    members = _members("a1@sa/ha", "b1@sb/hb", capacity=10)
    snapshot = Snapshot.of(
        ["x"], members, {}, holders={"x": "a1"}, held={"x": {"a1", "b1"}}, copies=2
    )
    result = plan(snapshot)
    assert result.assign == {"x": "a1"}
    assert result.replicas == {"x": "b1"}
    assert result.joins == 0


def test_back_to_one_copy_and_unwanted_channels_drop_their_second_copy() -> None:
    members = _members("a1@sa/ha", "b1@sb/hb", capacity=10)
    assignment, replicas = {"x": "a1", "y": "a1"}, {"x": "b1", "y": "b1"}
    one = plan(Snapshot.of(["x", "y"], members, assignment, replicas=replicas))
    assert one.unreplicate == {"x", "y"}
    assert one.applied_replicas(replicas) == {}
    gone = plan(Snapshot.of(["x"], members, assignment, replicas=replicas, copies=2))
    assert gone.unassign == {"y"}
    assert gone.applied_replicas(replicas) == {"x": "b1"}


def test_second_copies_sharing_their_owner_s_host_move_to_another_once_there_is_one() -> None:
    members = _members("a1@sa/ha", "a2@sa/ha", "b1@sb/hb", "b2@sb/hb", capacity=20)
    assignment = {f"c{i}": "a1" for i in range(6)}
    replicas = {f"c{i}": "a2" for i in range(6)}
    result = plan(
        Snapshot.of(assignment, members, assignment, replicas=replicas, copies=2), max_moves=100
    )
    after = result.applied(assignment)
    second = result.applied_replicas(replicas)
    assert all(_apart(members, after[c], second[c]) for c in assignment)


@settings(max_examples=300)
@given(
    members_strategy,
    channels,
    st.dictionaries(
        st.sampled_from([f"c{i}" for i in range(30)]), st.sampled_from([f"p{i}" for i in range(10)])
    ),
    st.dictionaries(
        st.sampled_from([f"c{i}" for i in range(30)]), st.sampled_from([f"p{i}" for i in range(10)])
    ),
    st.integers(0, 10),
    st.one_of(st.none(), st.integers(0, 20)),
)
def test_properties_of_two_copies(  # noqa: PLR0917 (hypothesis gives them positionally)
    members: list[Member],
    wanted: set[str],
    assignment: dict[str, str],
    replicas: dict[str, str],
    max_moves: int,
    budget: int | None,
) -> None:
    replicas = {c: p for c, p in replicas.items() if assignment.get(c) != p}
    held = {c: {p} for c, p in replicas.items()}  # every second copy has joined
    snapshot = Snapshot.of(
        wanted, members, assignment, replicas=replicas, copies=2, budget=budget, held=held
    )
    result = plan(snapshot, max_moves=max_moves)
    after = result.applied(assignment)
    second = result.applied_replicas(replicas)
    live = {m.id: m for m in members}
    # never both copies on one member; new second copies only for owned channels, on live
    # members that are not draining
    for channel, holder in second.items():
        assert holder != after.get(channel), channel
    for channel, holder in result.replicas.items():
        assert channel in after
        assert holder in live
        assert not live[holder].draining
    assert not result.replicas.keys() & (result.unreplicate | result.unassign)
    # the joins (new owners not promoted, new second copies) stay within the budget
    if budget is not None:
        assert result.joins <= budget
    # no member gets more than its capacity (both copies counted) from the plan
    promoted = {c for c, p in result.assign.items() if replicas.get(c) == p}  # no new load
    assert len(promoted) == result.promoted
    new = Counter(p for c, p in result.assign.items() if c not in promoted)
    new += Counter(result.replicas.values())
    for member, count in new.items():
        before = sum(1 for c, p in assignment.items() if p == member and c in after) + sum(
            1 for c, p in replicas.items() if p == member and second.get(c) == member
        )
        assert before + count <= max(live[member].capacity, before), (member, result)
    # a second copy waits only when no other member had room (both copies counted)
    load = Counter(after.values()) + Counter(second.values())
    unlimited = budget is None and all(m.slots is None for m in members)
    for channel in result.replicas_waiting:
        if unlimited:
            room = [
                m.id
                for m in members
                if not m.draining and m.id != after[channel] and load[m.id] < m.capacity
            ]
            assert room == [], (channel, room, result)
    # every owned channel has a second copy, or one waiting or paced
    for channel, owner in after.items():
        if owner in live and not live[owner].draining and channel in wanted:
            assert (
                channel in second
                or channel in result.replicas_waiting
                or channel in result.replicas_paced
            ), (channel, result)


def test_second_copies_spread_evenly_over_three_hosts() -> None:
    members = _members("p1@s1/h1", "p2@s2/h2", "p3@s3/h3", capacity=30)
    wanted = [f"c{i}" for i in range(30)]
    result = plan(Snapshot.of(wanted, members, {}, copies=2))
    load = Counter(result.assign.values()) + Counter(result.replicas.values())
    assert sorted(load.values()) == [20, 20, 20]


def test_a_promoted_channel_is_not_moved_in_the_same_plan_and_a_copy_fits_past_a_full_one() -> None:
    # found by the property test: p1 has room for one channel, p0 for three, on one supervisor
    members = [Member("p0", "s1", "h1", 3), Member("p1", "s1", "h1", 1)]
    wanted = ["c0", "c1", "c2"]
    snapshot = Snapshot.of(
        wanted, members, {}, replicas={"c2": "p0"}, copies=2, held={"c2": {"p0"}}
    )
    promoted = plan(snapshot, max_moves=1)
    assert promoted.assign["c2"] == "p0"  # promoted (held: no join), not moved on to p1
    assert promoted.promoted == 1
    assert promoted.joins == len(promoted.assign) - 1 + len(promoted.replicas)
    fresh = plan(Snapshot.of(wanted, members, {}, copies=2), max_moves=1)
    owners = fresh.assign
    for channel in wanted:  # a second copy wherever another member has room
        if owners[channel] == "p1":
            assert fresh.replicas.get(channel) == "p0"


def test_a_second_copy_still_joining_is_not_promoted() -> None:
    members = _members("a1@sa/ha", "b1@sb/hb", "c1@sc/hc", capacity=10)
    snapshot = Snapshot.of(["x"], members, {"x": "dead"}, replicas={"x": "b1"}, copies=2)
    result = plan(snapshot)  # b1 holds nothing yet: placed as any other channel, a join
    assert result.promoted == 0
    assert result.joins >= 1
    assert result.applied({"x": "dead"})["x"] != "dead"


def test_second_copies_piled_on_one_member_are_evened_out() -> None:
    # after a failover (found by hand): every second copy on a1, owners on d1 and d2
    members = _members("a1@sa/h", "a4@sa/h", "d1@sd/h", "d2@sd/h", capacity=40)
    channels = [f"c{i:02}" for i in range(26)]
    assignment = {c: ("d1" if i % 2 else "d2") for i, c in enumerate(channels)}
    replicas = dict.fromkeys(channels, "a1")
    result = plan(Snapshot.of(channels, members, assignment, replicas=replicas, copies=2))
    after = result.applied(assignment)
    second = result.applied_replicas(replicas)
    load = Counter(after.values()) + Counter(second.values())
    assert max(load.values()) - min(load.values()) <= 2, load
    assert all(after[c] != second[c] for c in channels)
    assert result.replica_moves == len(result.replicas)
