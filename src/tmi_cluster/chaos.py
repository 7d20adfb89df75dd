"""Chaos on several hosts: seeded, replayable fault sequences, the invariants checked throughout.

:func:`sequence` draws the faults from a seed (the same seed, the same sequence); :func:`run`
plays them on :class:`~tmi_cluster.hosts.Hosts` while the simulator generates chat and the
application sends, and returns a :class:`Report`: the recovery after each fault and every
broken invariant. Run by ``bench/hosts.py`` and, in a short form, by ``tests/test_chaos.py``.

The faults (:data:`FAULTS`): a worker killed (SIGKILL; its supervisor restarts it), a host killed
(its supervisor and workers, SIGKILL; started again once the others took its channels), a host
cut off (its link down; healed once the others took its channels), a host slowed (a narrow,
lossy link), Redis restarted (it forgets everything), PostgreSQL restarted as after a crash, a
RECONNECT of every chat connection, and both cores kept busy.

The invariants:

- one owner: at steady state each channel is joined by exactly one connection (the
  simulator's word), and while a host is cut off, by one connection of the other hosts once
  they took its channels;
- no event twice: the event stream carries each chat line at most once (by its ``id`` tag: a
  chat message's, a notice's). One exception, counted apart: a line whose copies reached the
  stream on both sides of a Redis restart (its first copy before, its second within
  :data:`AMNESIA_S` after). The restarted Redis keeps nothing on disk, and the cluster's memory
  of the events it delivered lives there: two holders of a channel (a hand-over, a failover's
  check) that read the line on either side of the restart both find it new. Redis with
  ``appendonly yes`` keeps that memory (see docs/deployment.md);
- no command twice: each ``Cluster.send`` reaches the simulator at most once, a ``written`` one
  exactly once, and one that timed out without a reason (fenced off) never;
- losses only inside an unplanned failover's window (a kill, a cut, a slowed link): a message
  of a wanted channel that the stream never carried, sent outside such a window, is a
  violation; those inside are counted per fault;
- no budget broken: the simulator counted no violation of any account's limits;
- fencing: a host cut off acts on nothing while it is away (the simulator hears nothing from
  its address between the cut and the heal), and after the heal its connections leave the
  channels that others took (measured: ``stale_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tmi_cluster.bus import Assignment, Keys, live, wanted_changed
from tmi_cluster.bus.client import close_client, connect_async
from tmi_cluster.bus.keys import ORPHAN_GUARD_S
from tmi_cluster.cluster.client import Cluster
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import RedisUnavailableError
from tmi_cluster.hosts import Hosts
from tmi_cluster.outcomes import SendStatus
from tmi_cluster.simulator import Delivery, Limits
from tmi_cluster.store import Store
from tmi_cluster.tasks import cancel_and_wait

__all__ = ["FAULTS", "Fault", "Recovery", "Report", "host_settings", "run", "scenario", "sequence"]

#: Every kind of fault.
FAULTS = (
    "kill_worker",
    "kill_host",
    "cut",
    "slow",
    "redis_restart",
    "postgres_restart",
    "reconnect_storm",
    "starve",
)
#: Seconds after a Redis restart within which a line's second copy counts as carried twice
#: across it (the longest check of a channel that changed hands: a failover's orphan check).
AMNESIA_S = ORPHAN_GUARD_S
#: Faults after which messages may be lost (inside their window): unplanned failovers.
UNPLANNED = frozenset({"kill_worker", "kill_host", "cut", "slow"})
#: Seconds added after a fault's recovery to its window (lines in flight).
WINDOW_MARGIN_S = 2.0
#: Seconds between Twitch's RECONNECT and its closing of the connection (about 30 on Twitch).
RECONNECT_CLOSE_S = 30.0
#: The bot account that sends.
BOT, TOKEN = "chaosbot", "chaostoken"


async def scenario(
    *,
    seed: int,
    faults: int,
    hosts: int = 3,
    channels: int = 150,
    hold_s: float = 8.0,
    rate: float = 50.0,
    log: Callable[[str], object] = print,
    log_level: str = "info",
) -> Report:
    """A whole chaos run: ``hosts`` hosts (:func:`host_settings`), ``channels`` channels read
    at today's anonymous budget (20 JOINs per 10 s per connection), ``rate`` chat lines per
    second, and ``faults`` faults drawn from ``seed``; the report. The hosts log at
    ``log_level`` (``debug`` to replay a seed that broke an invariant). On an error, the hosts'
    last log lines go to ``log`` before it is raised."""
    names = [f"chaos{i:05}" for i in range(channels)]
    limits = Limits(anonymous_join_allow=20, join_every_s=10.0)
    async with Hosts(
        hosts,
        channels=names,
        settings=host_settings(hosts, log_level),
        limits=limits,
        rate=rate,
        seed=seed,
    ) as made:
        plan = sequence(seed, faults, hosts, hold_s=hold_s)
        log(f"seed {seed}: " + ", ".join(str(f) for f in plan))
        try:
            return await run(made, plan, names, seed=seed, log=log)
        except Exception:
            for host in range(hosts):
                tail = made.log_path(host).read_text(errors="replace")[-3000:]
                log(f"--- host{host} (last lines)\n{tail}")
            raise


def host_settings(hosts: int, log_level: str = "info") -> dict[str, str]:
    """The settings of every host of a chaos run (as ``TMI_CLUSTER_*`` variables): two workers
    per host, reading anonymously and sending as :data:`BOT`, scaling decisions at once, a
    dead supervisor seen within 3 s, logging at ``log_level``."""
    return {
        "TMI_CLUSTER_TMI__IDENTITY__USERNAME": BOT,
        "TMI_CLUSTER_TMI__IDENTITY__PASSWORD": f"oauth:{TOKEN}",
        "TMI_CLUSTER_TMI__CONNECTION__READ_ANONYMOUSLY": "true",
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": str(2 * hosts),
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": str(2 * hosts),
        "TMI_CLUSTER_AUTO_SCALE__COOLDOWN": "0",
        "TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__CHANNELS": "500",
        "TMI_CLUSTER_SUPERVISOR__STALE": "3",
        "TMI_CLUSTER_PROCESS__TIMEOUT": "10",
        "TMI_CLUSTER_LOG__LEVEL": log_level,
    }


@dataclass(frozen=True)
class Fault:
    """One fault: its kind, the host it strikes (-1: none), how long it lasts (cut, slow,
    starve) or how long the host stays down (kill_host)."""

    kind: str
    host: int = -1
    hold_s: float = 0.0

    def __str__(self) -> str:
        where = f" host{self.host}" if self.host >= 0 else ""
        held = f" {self.hold_s:g} s" if self.hold_s else ""
        return f"{self.kind}{where}{held}"


def sequence(seed: int, count: int, hosts: int, *, hold_s: float = 8.0) -> list[Fault]:
    """``count`` faults drawn from ``seed`` (every kind once before any repeats, when ``count``
    allows), on hosts ``0 .. hosts-1``."""
    if hosts < 2:
        raise ValueError("chaos needs at least two hosts")
    rng = random.Random(seed)  # noqa: S311 - replayable chaos, not cryptography
    kinds = list(FAULTS)
    rng.shuffle(kinds)
    while len(kinds) < count:
        kinds.append(rng.choice(FAULTS))
    faults = []
    for kind in kinds[:count]:
        host = rng.randrange(hosts) if kind in {"kill_worker", "kill_host", "cut", "slow"} else -1
        hold = hold_s if kind in {"kill_host", "cut", "slow", "starve"} else 0.0
        faults.append(Fault(kind, host, hold))
    return faults


@dataclass
class Recovery:
    """What one fault did: when it began, how long until every channel was held again by a
    host that is up (``back_s``), until one owner each and every host back (``steady_s``),
    the messages lost in its window, and after a cut the time its host's connections held
    channels that others had taken (``stale_s``)."""

    fault: Fault
    began: float
    back_s: float | None = None
    steady_s: float | None = None
    lost: int = 0
    #: A few of those: the channel, how long after the fault began, who was joined then.
    lost_samples: list[str] = field(default_factory=list)
    stale_s: float | None = None
    window_end: float = 0.0
    #: Lines the simulator had from the host while it was cut off (fencing: must be 0).
    heard_while_cut: int = 0


@dataclass
class Report:
    """The outcome of a run (see the module)."""

    seed: int
    recoveries: list[Recovery] = field(default_factory=list)
    messages: int = 0
    events: int = 0
    duplicate_events: int = 0
    #: Lines carried twice across a Redis restart that forgot everything (see the module).
    twice_across_restart: int = 0
    commands: int = 0
    commands_written: int = 0
    commands_twice: int = 0
    commands_missing: int = 0
    commands_fenced_but_sent: int = 0
    lost_outside: int = 0
    #: Where those were lost: after which fault, how many seconds after it began.
    lost_outside_where: Counter[str] = field(default_factory=Counter)
    #: Some of those: the channel, when, and the connections joined at that moment.
    lost_samples: list[str] = field(default_factory=list)
    #: Where the messages carried twice were sent: after which fault, how long after.
    twice_where: Counter[str] = field(default_factory=Counter)
    #: Those: the channel, when, and the connections joined at that moment.
    twice_samples: list[str] = field(default_factory=list)
    budget_violations: list[str] = field(default_factory=list)
    owner_violations: list[str] = field(default_factory=list)
    fencing_violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        """Every broken invariant, in words (empty: all held)."""
        found = []
        if self.duplicate_events:
            where = ", ".join(f"{n} after {w}" for w, n in self.twice_where.most_common(5))
            found.append(
                f"{self.duplicate_events} chat messages on the event stream twice ({where})"
            )
        if self.commands_twice:
            found.append(f"{self.commands_twice} commands reached the chat twice")
        if self.commands_missing:
            found.append(f"{self.commands_missing} commands said written never reached the chat")
        if self.commands_fenced_but_sent:
            found.append(f"{self.commands_fenced_but_sent} commands fenced off were sent")
        if self.lost_outside:
            where = ", ".join(f"{n} after {w}" for w, n in self.lost_outside_where.most_common(5))
            found.append(f"{self.lost_outside} messages lost outside a failover's window ({where})")
        found += [f"budget: {v}" for v in self.budget_violations]
        found += [f"owners: {v}" for v in self.owner_violations]
        found += [f"fencing: {v}" for v in self.fencing_violations]
        return found

    def table(self) -> str:
        """The recoveries and the invariants, as text."""
        lines = [f"chaos seed {self.seed}: {len(self.recoveries)} faults in {self.seconds:.0f} s"]
        lines.append(f"{'fault':28} {'back s':>7} {'steady s':>9} {'lost':>5} {'stale s':>8}")

        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        for r in self.recoveries:
            lines.append(
                f"{r.fault!s:28} {number(r.back_s):>7} {number(r.steady_s):>9} "
                f"{r.lost:>5} {number(r.stale_s):>8}"
            )
        lines.append(
            f"messages {self.messages}, events {self.events}, twice {self.duplicate_events} "
            f"(and {self.twice_across_restart} across a Redis restart), lost outside a window "
            f"{self.lost_outside}"
        )
        lines.append(
            f"commands {self.commands} ({self.commands_written} written), twice "
            f"{self.commands_twice}, written but missing {self.commands_missing}, fenced but "
            f"sent {self.commands_fenced_but_sent}"
        )
        lines.append("invariants: " + ("all held" if not self.problems else "BROKEN"))
        lines += [f"  - {p}" for p in self.problems]
        if self.twice_samples:
            lines.append("  lines carried twice, such as:")
            lines += [f"    {sample}" for sample in self.twice_samples[:10]]
        if self.lost_samples:
            lines.append("  messages lost outside a window, such as:")
            lines += [f"    {sample}" for sample in self.lost_samples[:10]]
        for r in self.recoveries:  # inside the windows (allowed): where, for a replay's reader
            if r.lost_samples:
                lines.append(f"  lost in the window of {r.fault}, such as:")
                lines += [f"    {sample}" for sample in r.lost_samples]
        return "\n".join(lines)

    def by_kind(self) -> dict[str, tuple[float, float]]:
        """Per kind of fault: the median and the largest ``steady_s``."""
        found: dict[str, list[float]] = {}
        for r in self.recoveries:
            if r.steady_s is not None:
                found.setdefault(r.fault.kind, []).append(r.steady_s)
        return {k: (statistics.median(v), max(v)) for k, v in found.items()}


class _Ledger:
    """What the application saw: the stream's chat messages, and its sends' results."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()  # line id -> events (a line may make several)
        self.kinds: Counter[tuple[str, str]] = Counter()  # (event class, line id) -> events
        #: line id -> when each of its events was written to the stream (its entry id's Redis
        #: time, monotonic on this machine): where a line came twice, when each copy came
        self.written: dict[str, list[float]] = {}
        self.sends: dict[str, SendStatus | None] = {}
        self.reasons: dict[str, str | None] = {}


async def _read(cluster: Cluster, ledger: _Ledger, started: asyncio.Event) -> None:
    reader = cluster.events()
    wall_less_monotonic = time.time() - time.monotonic()  # one machine: Redis's clock is ours
    try:
        await reader.start()
        started.set()
        async for event in reader:
            # every line the simulator generates carries an id (a chat message's, a notice's)
            line_id = event.tags.get("id")
            if line_id:
                ledger.events[line_id] += 1
                ledger.kinds[(type(event).__name__, line_id)] += 1
                redis_ms = int(reader.last_id.split("-")[0])  # the entry's Redis time
                at = redis_ms / 1000 - wall_less_monotonic
                ledger.written.setdefault(line_id, []).append(at)
    finally:
        await reader.aclose()


async def _send(cluster: Cluster, ledger: _Ledger, channels: Sequence[str], every_s: float) -> None:
    """One send every ``every_s`` (each its own task: a slow one never holds the next)."""
    rng = random.Random(1)  # noqa: S311
    tasks: set[asyncio.Task[None]] = set()
    number = 0

    async def one(text: str, channel: str) -> None:
        ledger.sends[text] = None
        try:
            result = await cluster.send(channel, text, timeout_s=20.0, key=text.replace(" ", "-"))
        except Exception as error:
            ledger.reasons[text] = f"{type(error).__name__}: {error}"
            return
        ledger.sends[text] = result.status
        ledger.reasons[text] = result.reason

    try:
        while True:
            number += 1
            task = asyncio.create_task(one(f"chaos {number}", rng.choice(channels)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(every_s)
    finally:
        for task in list(tasks):
            await cancel_and_wait(task)


def _owners(hosts: Hosts, channel: str) -> list[int]:
    """The connections joined to ``channel`` from hosts that are up (not cut off)."""
    found = []
    for connection in hosts.sim.joined(channel):
        host = hosts.host_of(hosts.sim.peer(connection))
        if host is None or not hosts.hosts[host].cut:
            found.append(connection)
    return found


def _back(hosts: Hosts, channels: Sequence[str], dead: set[int]) -> bool:
    """Every channel joined by a connection of a host that is up, not one of ``dead``."""
    return all(set(_owners(hosts, c)) - dead for c in channels)


def _steady(hosts: Hosts, channels: Sequence[str]) -> bool:
    """Every host up and every channel joined exactly once."""
    if any(h.cut for h in hosts.hosts):
        return False
    return all(len(hosts.sim.joined(c)) == 1 for c in channels)


async def _until(
    check: object,
    timeout_s: float,
    what: str,
    hosts: Hosts | None = None,
    channels: Sequence[str] = (),
) -> float:
    """Seconds until ``check()`` held (checked every 50 ms); TimeoutError after timeout_s,
    naming the ``channels`` not joined exactly once then (and who joined them)."""
    assert callable(check)
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout_s:
            odd = (
                {c: hosts.sim.joined(c) for c in channels if len(hosts.sim.joined(c)) != 1}
                if hosts
                else {}
            )
            shown = ", ".join(f"{c}: {j}" for c, j in list(odd.items())[:5])
            raise TimeoutError(
                f"not {what} after {timeout_s:g} s"
                + (f" ({len(odd)} channels not joined once, such as {shown})" if odd else "")
            )
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def run(
    hosts: Hosts,
    faults: Sequence[Fault],
    channels: Sequence[str],
    *,
    seed: int = 0,
    send_every_s: float = 2.0,
    settle_timeout_s: float = 120.0,
    log: Callable[[str], object] = print,
) -> Report:
    """Start a supervisor on every host, want ``channels``, then play ``faults`` one after the
    other (each recovered to a steady state before the next) under traffic; the report."""
    report = Report(seed)
    began = time.monotonic()
    hosts.sim.add_account(BOT, TOKEN)
    for host in hosts.hosts:
        hosts.start(host.index)
    with Store(hosts.postgres.url()) as store:
        await asyncio.to_thread(store.want, channels)
    settings = load_settings(environ=hosts.settings_file(), cwd=hosts.folder)
    cluster = Cluster(settings)
    keys = Keys(settings.prefix, 30.0, 3.0)
    ledger = _Ledger()
    reading = asyncio.Event()
    reader = asyncio.create_task(_read(cluster, ledger, reading))
    sender: asyncio.Task[None] | None = None
    try:
        bus = connect_async(settings, name="tmi-cluster:chaos")
        try:
            await wanted_changed(bus, keys)
        finally:
            await close_client(bus)
        await asyncio.wait_for(reading.wait(), 30)
        first = await _until(
            lambda: _steady(hosts, channels), settle_timeout_s, "all joined", hosts, channels
        )
        log(f"steady after {first:.1f} s: {len(channels)} channels on {len(hosts.hosts)} hosts")
        traffic_from = time.monotonic()
        sender = asyncio.create_task(_send(cluster, ledger, channels, send_every_s))
        rng = random.Random(seed)  # noqa: S311
        for fault in faults:
            log(f"fault: {fault}")
            try:
                recovery = await _play(hosts, fault, channels, rng, settle_timeout_s)
            except TimeoutError as error:  # what the cluster says of the channels in question
                raise TimeoutError(
                    f"{error}\n{await _explain(hosts, settings, channels)}"
                ) from None
            report.recoveries.append(recovery)
            log("  " + _recovered(recovery))
        await asyncio.sleep(3.0)  # the last sends and events land
        await cancel_and_wait(sender)
        sender = None
        await _sends_ended(ledger)
        traffic_to = time.monotonic() - 3.0
        await asyncio.sleep(2.0)
    finally:
        if sender is not None:
            await cancel_and_wait(sender)
        await cancel_and_wait(reader)
        await cluster.aclose()
    # the last fault's aftermath may still move channels (a healed host given its share again,
    # make-before-break: a moment with two holders): judged once steady again, or as it is
    with contextlib.suppress(TimeoutError):
        await _until(lambda: _steady(hosts, channels), settle_timeout_s, "steady at the end")
    _judge(hosts, channels, report, ledger, _Traffic(traffic_from, traffic_to))
    report.seconds = time.monotonic() - began
    return report


async def _explain(hosts: Hosts, settings: Settings, channels: Sequence[str]) -> str:
    """For the channels not joined exactly once: their owner in the assignment, who records
    holding them, and who the server says joined them (a timed-out wait's diagnosis)."""
    odd = [c for c in channels if len(hosts.sim.joined(c)) != 1][:10]
    if not odd:
        return "every channel is joined once now"
    client = connect_async(settings, name="tmi-cluster:chaos-explain")
    try:
        keys = Keys(settings.prefix, 30.0, 3.0)
        reader = Assignment(client, keys)
        owners = await reader.owners(odd)
        workers = sorted(await live(client, keys, "process"))
        holders = await reader.held_by(workers, odd)
    except RedisUnavailableError as error:
        return f"(the assignment could not be read: {error})"
    finally:
        await close_client(client)
    return "\n".join(
        f"  {c}: owner {owners.get(c)}, recorded as held by {holders.get(c, [])}, "
        f"joined on the server by {list(hosts.sim.joined(c))} (live workers: {len(workers)})"
        for c in odd
    )


async def _sends_ended(ledger: _Ledger, timeout_s: float = 30.0) -> None:
    """Wait until every send ended (the last ones in at most their timeout), or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while any(v is None and t not in ledger.reasons for t, v in ledger.sends.items()):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def _play(
    hosts: Hosts, fault: Fault, channels: Sequence[str], rng: random.Random, timeout_s: float
) -> Recovery:
    """Play one fault and wait for the steady state again."""
    recovery = Recovery(fault, time.monotonic())
    heard_before = _heard(hosts, fault.host) if fault.kind == "cut" else 0
    dead = await _inject(hosts, fault, rng)
    if dead:
        recovery.back_s = await _until(
            lambda: _back(hosts, channels, dead), timeout_s, f"back after {fault}", hosts, channels
        )
    elif fault.kind == "kill_worker":
        recovery.back_s = 0.0  # a worker without a chat connection
    left = fault.hold_s - (time.monotonic() - recovery.began)
    if left > 0:
        await asyncio.sleep(left)  # the fault lasts
    if fault.kind == "cut":
        recovery.heard_while_cut = _heard(hosts, fault.host) - heard_before
        hosts.heal(fault.host)
        recovery.stale_s = await _until(
            lambda: not _stale(hosts, channels, fault.host),
            timeout_s,
            f"host{fault.host}'s connections gone from the channels others took",
        )
    elif fault.kind == "slow":
        hosts.unslow(fault.host)
    elif fault.kind == "kill_host":
        hosts.start(fault.host)
    elif fault.kind == "starve":
        hosts.unstarve()
    await _until(
        lambda: _steady(hosts, channels), timeout_s, f"steady after {fault}", hosts, channels
    )
    recovery.steady_s = time.monotonic() - recovery.began
    recovery.window_end = time.monotonic() + WINDOW_MARGIN_S
    await asyncio.sleep(1.0)  # a breath between faults
    return recovery


async def _inject(hosts: Hosts, fault: Fault, rng: random.Random) -> set[int]:
    """Begin ``fault``; the simulator's connections it ends (to be replaced elsewhere)."""
    sim, host = hosts.sim, fault.host
    held = {c for channel in sim.channel_names() for c in sim.joined(channel)}
    on_host = {c for c in held if _peer_host(hosts, c) == host}
    if fault.kind == "kill_worker":
        address = hosts.hosts[host].address
        ports = hosts.kill_worker(host, rng)
        return {c for c in on_host if sim.peer(c) in {(address, port) for port in ports}}
    if fault.kind == "kill_host":
        hosts.kill(host)
        return on_host
    if fault.kind == "cut":
        hosts.cut(host)
        return on_host
    if fault.kind == "reconnect_storm":
        sim.reconnect(close_after_s=RECONNECT_CLOSE_S)
        return held  # each is replaced before it closes (make-before-break)
    actions = {
        "slow": lambda: hosts.slow(host),
        "redis_restart": hosts.redis.restart,
        "postgres_restart": hosts.postgres.restart,
        "starve": lambda: hosts.starve(fault.hold_s),
    }
    if fault.kind not in actions:
        raise ValueError(f"unknown fault {fault.kind!r}")
    await asyncio.to_thread(actions[fault.kind])
    return set()


def _stale(hosts: Hosts, channels: Sequence[str], host: int) -> bool:
    """Whether a connection of ``host`` shares a channel with another connection."""
    for channel in channels:
        joined = hosts.sim.joined(channel)
        if len(joined) > 1 and any(_peer_host(hosts, c) == host for c in joined):
            return True
    return False


def _recovered(recovery: Recovery) -> str:
    """A fault's recovery in words, for the progress lines."""
    parts = [
        f"{label} {value:.2f} s"
        for label, value in (
            ("held again after", recovery.back_s),
            ("steady after", recovery.steady_s),
            ("stale connections gone", recovery.stale_s),
        )
        if value is not None
    ]
    return ", ".join(parts)


def _peer_host(hosts: Hosts, connection: int) -> int | None:
    return hosts.host_of(hosts.sim.peer(connection))


def _heard(hosts: Hosts, host: int) -> int:
    """How many lines the simulator has had from host ``host``'s connections."""
    return sum(len(c.sent) for c in hosts.sim.connections() if hosts.host_of(c.peer) == host)


def _after(report: Report, at: float) -> str:
    """Which fault ``at`` came after, and how long after it began."""
    last = [r for r in report.recoveries if r.began <= at]
    return f"{last[-1].fault} +{at - last[-1].began:.0f} s" if last else "before the faults"


@dataclass(frozen=True)
class _Traffic:
    """When the traffic that counts began and ended (monotonic)."""

    began: float
    ended: float


def _judge(
    hosts: Hosts, channels: Sequence[str], report: Report, ledger: _Ledger, traffic: _Traffic
) -> None:
    """Fill ``report``'s invariants from what the simulator and the application saw."""
    _judge_lines(hosts, channels, report, ledger, traffic)
    _judge_commands(hosts, report, ledger)
    sim = hosts.sim
    for login in {c.login or "" for c in sim.connections()}:
        for violation in sim.account(login).violations:
            report.budget_violations.append(f"{login or 'anonymous'}: {violation}")
    for recovery in report.recoveries:
        if recovery.heard_while_cut:
            report.fencing_violations.append(
                f"{recovery.fault}: {recovery.heard_while_cut} lines from the host while cut off"
            )
    unowned = [c for c in channels if len(sim.joined(c)) != 1]
    if unowned:
        report.owner_violations.append(
            f"{len(unowned)} channels without exactly one owner at the end, such as {unowned[:3]}"
        )


def _judge_lines(
    hosts: Hosts, channels: Sequence[str], report: Report, ledger: _Ledger, traffic: _Traffic
) -> None:
    """Every line the simulator sent into a wanted channel: carried once, twice, or lost
    (inside or outside an unplanned failover's window)."""
    report.events = sum(ledger.events.values())
    twice = {line_id for (_, line_id), n in ledger.kinds.items() if n > 1}
    restarts = [r.began for r in report.recoveries if r.fault.kind == "redis_restart"]
    across = {line for line in twice if _straddles(ledger.written.get(line, []), restarts)}
    report.twice_across_restart = len(across)
    report.duplicate_events = len(twice - across)
    windows = [r for r in report.recoveries if r.fault.kind in UNPLANNED]
    for channel in channels:
        for delivery in hosts.sim.deliveries(channel):
            if not traffic.began <= delivery.at <= traffic.ended:
                continue
            report.messages += 1
            if delivery.message_id in twice:
                if delivery.message_id not in across:
                    report.twice_where[_after(report, delivery.at)] += 1
                holders = _holders(hosts, delivery)
                copies = ", ".join(
                    f"+{at - delivery.at:.1f} s"
                    for at in sorted(ledger.written.get(delivery.message_id, []))
                )
                report.twice_samples.append(
                    f"#{channel} {_after(report, delivery.at)}: joined {holders}; "
                    f"on the stream {copies} after it was sent"
                    + (" (across a Redis restart)" if delivery.message_id in across else "")
                )
            if ledger.events.get(delivery.message_id):
                continue
            window = _window_of(windows, delivery.at)
            if window is not None:
                window.lost += 1
                sampled = any(x.startswith(f"#{channel} ") for x in window.lost_samples)
                if len(window.lost_samples) < 5 and not sampled:  # one per channel
                    holders = _holders(hosts, delivery)
                    window.lost_samples.append(
                        f"#{channel} +{delivery.at - window.began:.2f} s: joined {holders}"
                    )
                continue
            report.lost_outside += 1
            report.lost_outside_where[_after(report, delivery.at)] += 1
            if len(report.lost_samples) < 20:
                holders = _holders(hosts, delivery)
                report.lost_samples.append(
                    f"#{channel} {_after(report, delivery.at)}: joined {holders}"
                )


def _holders(hosts: Hosts, delivery: Delivery) -> list[str]:
    """The connections joined when ``delivery`` was sent, as ``connection@host``."""
    return [f"{c}@host{_peer_host(hosts, c)}" for c in delivery.connections]


def _window_of(windows: Sequence[Recovery], at: float) -> Recovery | None:
    """The unplanned failover whose window holds ``at``: the latest one begun (a window's
    margin can reach into the next fault's, whose loss it then is), else None."""
    return next((r for r in reversed(windows) if r.began <= at <= r.window_end), None)


def _straddles(written: Sequence[float], restarts: Sequence[float]) -> bool:
    """Whether the copies of a line, written at ``written``, lie on both sides of a Redis
    restart begun at one of ``restarts`` (the second within :data:`AMNESIA_S` of it)."""
    if len(written) < 2:
        return False
    first, last = min(written), max(written)
    return any(first <= began < last <= began + AMNESIA_S for began in restarts)


def _judge_commands(hosts: Hosts, report: Report, ledger: _Ledger) -> None:
    """Each send against what the simulator heard from the bot."""
    heard: Counter[str] = Counter()
    for connection in hosts.sim.connections():
        if connection.login != BOT:
            continue
        for line in connection.sent:
            if line.startswith("PRIVMSG ") or " PRIVMSG " in line:
                text = line.split(" :", 1)[-1]
                if text.startswith("chaos "):
                    heard[text] += 1
    report.commands = len(ledger.sends)
    for text, status in ledger.sends.items():
        count = heard.get(text, 0)
        report.commands_twice += count > 1
        if status is SendStatus.WRITTEN:
            report.commands_written += 1
            report.commands_missing += count == 0
        elif status is SendStatus.TIMED_OUT and ledger.reasons.get(text) is None and count:
            report.commands_fenced_but_sent += 1
