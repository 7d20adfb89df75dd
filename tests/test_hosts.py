"""Several hosts on one machine (network namespaces) and chaos on them.

The harness makes, cuts, heals, slows and removes what it says; a seeded chaos run on three
hosts keeps every invariant of :mod:`tmi_cluster.chaos`. CI runs each kind of fault once (seed
1, about a minute and a half); ``TMI_CLUSTER_FUZZ=nightly`` runs 24 faults with a random seed;
``TMI_CLUSTER_CHAOS_SEED`` replays a seed (a failure's report gives it). Needs Linux as root
with iproute2, nftables and PostgreSQL's server programs: a failure in CI, skipped elsewhere.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmi_cluster.chaos import (
    AMNESIA_S,
    FAULTS,
    Fault,
    Recovery,
    Report,
    _straddles,
    _window_of,
    scenario,
    sequence,
)
from tmi_cluster.hosts import FOLDER_PREFIX, PREFIX, Network, missing, sweep

from .helpers import run

IN_CI = bool(os.environ.get("CI"))
NIGHTLY = os.environ.get("TMI_CLUSTER_FUZZ") == "nightly"
SEED = int(
    os.environ.get("TMI_CLUSTER_CHAOS_SEED") or (random.randrange(1 << 20) if NIGHTLY else 1)
)


def _need_hosts() -> None:
    reason = missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"hosts cannot be made and CI is set: {reason}")
        pytest.skip(reason)


def test_a_chaos_sequence_is_replayed_from_its_seed() -> None:
    first = sequence(7, 12, 3)
    assert first == sequence(7, 12, 3)
    assert first != sequence(8, 12, 3)
    assert {fault.kind for fault in first} == set(FAULTS)  # each kind before any repeats
    assert all(fault.host in {-1, 0, 1, 2} for fault in first)
    assert all(fault.hold_s > 0 for fault in first if fault.kind in {"cut", "slow", "starve"})
    with pytest.raises(ValueError, match="two hosts"):
        sequence(1, 3, 1)


def test_only_copies_on_both_sides_of_a_redis_restart_count_apart() -> None:
    # A restarted Redis (nothing on disk) forgets which events were delivered: the copies of a
    # line read by two holders on either side of it both pass the check. Nothing else may.
    assert _straddles([10.0, 12.0], [11.0])
    assert not _straddles([11.5, 12.0], [11.0])  # both after it: a real duplicate
    assert not _straddles([9.0, 10.0], [11.0])  # both before it
    assert not _straddles([10.0, 11.0 + AMNESIA_S + 1], [11.0])  # long after it
    assert not _straddles([10.0], [11.0])
    assert not _straddles([10.0, 12.0], [])
    report = Report(seed=1, duplicate_events=0, twice_across_restart=3)
    assert report.problems == []
    assert "and 3 across a Redis restart" in report.table()


def test_a_loss_in_two_windows_is_the_later_faults() -> None:
    # A worker kill's window (its recovery and a margin) reaches into a cut begun just after:
    # a line lost then is the cut's (a reviewer saw a 0.1 s kill "lose" 39 lines).
    kill = Recovery(Fault("kill_worker", 0), began=10.0, window_end=12.2)
    cut = Recovery(Fault("cut", 1, 8.0), began=11.2, window_end=30.0)
    assert _window_of([kill, cut], 10.5) is kill
    assert _window_of([kill, cut], 11.5) is cut
    assert _window_of([kill, cut], 31.0) is None


@pytest.fixture
def network() -> Iterator[Network]:
    _need_hosts()
    made = Network(2)
    made.create()
    try:
        yield made
    finally:
        made.remove()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert f"{PREFIX}{made.tag}" not in listed.stdout + links.stdout  # nothing left behind


def _reaches(network: Network, host: int, address: str, port: int, tries: int = 1) -> bool:
    """Whether host ``host`` connects to ``address`` within a second (of ``tries`` tries: a
    link just up may first resolve its neighbour)."""
    code = (
        f"import socket\nfor _ in range({tries}):\n try:\n"
        f"  socket.create_connection(({address!r}, {port}), timeout=1)\n  break\n"
        " except OSError:\n  pass\nelse:\n raise SystemExit(1)"
    )
    argv = network.argv(host, [sys.executable, "-c", code])
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0


def test_hosts_reach_the_root_namespace_until_cut_off_and_again_once_healed(
    network: Network,
) -> None:
    with socket.socket() as server:
        server.bind((network.gateway, 0))
        server.listen(16)
        port = server.getsockname()[1]
        accepting = threading.Thread(target=_accept, args=(server,), daemon=True)
        accepting.start()
        assert _reaches(network, 0, network.gateway, port)
        assert _reaches(network, 1, network.gateway, port)
        assert not _reaches(network, 0, "127.0.0.1", 6379)  # a namespace of its own
        network.cut(0)
        assert not _reaches(network, 0, network.gateway, port)
        assert _reaches(network, 1, network.gateway, port)
        network.heal(0)
        assert _reaches(network, 0, network.gateway, port, tries=10)


def _accept(server: socket.socket) -> None:
    while True:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        connection.close()


def test_a_slowed_host_has_a_narrow_lossy_link_until_restored(network: Network) -> None:
    network.slow(1)
    inner = f"{network.links[1]}i"
    shown = subprocess.run(
        ["tc", "-n", network.namespaces[1], "qdisc", "show", "dev", inner],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ("netem" if network.netem else "tbf") in shown
    if not network.netem:
        rules = subprocess.run(
            network.argv(1, ["nft", "list", "ruleset"]), capture_output=True, text=True, check=True
        ).stdout
        assert "numgen random" in rules
    network.unslow(1)
    rules = subprocess.run(
        network.argv(1, ["nft", "list", "ruleset"]), capture_output=True, text=True, check=True
    ).stdout
    assert "numgen" not in rules


@pytest.mark.slow
@pytest.mark.timeout(1800 if NIGHTLY else 600)
@run
async def test_three_hosts_under_seeded_chaos_keep_every_invariant() -> None:
    _need_hosts()
    faults = 24 if NIGHTLY else len(FAULTS)
    lines: list[str] = []
    report = await scenario(
        seed=SEED, faults=faults, hosts=3, channels=600 if NIGHTLY else 150, log=lines.append
    )
    where = f"chaos seed {SEED} (replay: TMI_CLUSTER_CHAOS_SEED={SEED})"
    assert report.problems == [], f"{where}\n{report.table()}"
    assert len(report.recoveries) == faults
    assert all(r.steady_s is not None for r in report.recoveries)
    for recovery in report.recoveries:
        if recovery.fault.kind in {"kill_host", "cut"}:
            assert recovery.back_s is not None, recovery  # its channels were taken elsewhere
        if recovery.fault.kind == "cut":
            assert recovery.stale_s is not None
            assert recovery.heard_while_cut == 0
    assert report.messages > 1000
    assert report.commands_written > 10


def test_sweep_removes_what_a_killed_run_left() -> None:
    _need_hosts()
    left = Network(1)
    left.create()  # a run killed before it removed its network
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    server = subprocess.Popen(  # one of its private servers, naming its folder
        [sys.executable, "-c", "import time; time.sleep(120)", str(folder)]
    )
    try:
        removed = sweep()
        assert left.namespaces[0] in removed
        assert server.wait(10) != 0  # killed
        assert not folder.exists()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
        assert left.namespaces[0] not in listed.stdout
    finally:
        left.remove()
        if server.poll() is None:
            server.kill()
            server.wait()
