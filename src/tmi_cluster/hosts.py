"""Several hosts on one machine, for the scale-out tests and benchmarks, and a fleet's faults.

:class:`Hosts` makes ``count`` network namespaces joined by a bridge (each its own network
stack: a host), starts a private Redis, a private PostgreSQL and a chat simulator in the root
namespace on the bridge's address, and runs ``tmi-cluster run`` in each namespace against them.
Its faults are those of a fleet: kill a worker, kill a host's supervisor (and every process of
the host), cut a host off (its link down) and heal it, slow it (a narrow, lossy link), restart
Redis (which forgets everything) or PostgreSQL (``immediate``: as after a crash), starve the CPU.

Contracts:

- Linux, as root: ``ip`` (iproute2), ``nft`` (nftables), ``tc``, PostgreSQL's server programs and
  a ``redis-server``. :func:`missing` says what is not there.
- Addresses: the bridge ``10.213.N.1/24`` in the root namespace, host ``i`` at ``10.213.N.(10+i)``
  (N free on this machine); nothing else is ever a target. Every command has a timeout.
- :meth:`Hosts.aclose` (``async with``: also when the test fails) removes what it made: the
  processes (those of the namespaces included), the namespaces, the bridge, the private servers
  and their files. :func:`sweep` removes what a killed run left (names begin ``tmic``).
- Slowing uses ``tc netem`` (delay and loss) where the kernel has it, else a token bucket
  (``tc tbf``, a narrow link: delay under load) and random loss in nftables.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import psutil

from tmi_cluster.embedded import redis_server_executable
from tmi_cluster.errors import TmiClusterError
from tmi_cluster.harness import ProcessHarness
from tmi_cluster.simulator import ChatSimulator, Limits

__all__ = ["Host", "Hosts", "HostsError", "Network", "PrivatePostgres", "PrivateRedis", "missing"]

log = logging.getLogger(__name__)

#: Names of everything made here begin so (namespaces, the bridge, the links).
PREFIX = "tmic"
#: The first two octets of the bridge's network.
NETWORK = "10.213"
#: The private servers' folders begin so (in the temporary directory).
FOLDER_PREFIX = "tmi-hosts-"
#: Seconds any one command may take.
COMMAND_TIMEOUT_S = 30.0
SCRIPT = shutil.which("tmi-cluster", path=str(Path(sys.executable).parent)) or "tmi-cluster"


class HostsError(TmiClusterError):
    """A command of the harness failed: its words and what it printed."""


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return versions[0].parent if versions else None


def missing() -> str | None:
    """Why hosts cannot be made on this machine, or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian's {package})"
    if _postgres_bin() is None:
        return "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
    try:
        redis_server_executable()
    except Exception as error:
        return str(error)
    return None


def _run(argv: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
    """Run a command of the harness; HostsError (with what it printed) when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise HostsError(f"{' '.join(argv)} took more than {COMMAND_TIMEOUT_S:g} s") from error
    if check and done.returncode != 0:
        raise HostsError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _netem() -> bool:
    """Whether this kernel has ``tc netem`` (tried on a throwaway namespace's loopback)."""
    name = f"{PREFIX}probe{secrets.token_hex(2)}"
    try:
        _run(["ip", "netns", "add", name])
        try:
            _run(["ip", "-n", name, "link", "set", "lo", "up"])
            done = _run(
                ["tc", "-n", name, "qdisc", "add", "dev", "lo", "root", "netem"], check=False
            )
            return "unknown" not in done.lower() and _has_qdisc(name, "lo", "netem")
        finally:
            _run(["ip", "netns", "del", name], check=False)
    except HostsError:
        return False


def _has_qdisc(namespace: str, device: str, kind: str) -> bool:
    shown = _run(["tc", "-n", namespace, "qdisc", "show", "dev", device], check=False)
    return f"qdisc {kind}" in shown


def sweep() -> list[str]:
    """Remove what a killed run left: the namespaces and links (names beginning ``tmic``) and
    the processes in them, the private servers (processes whose command line names a
    ``tmi-hosts-`` folder) and those folders; what was removed. Never while a run is under way:
    it would remove that run's too."""
    removed = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if FOLDER_PREFIX in cmdline and process.pid != os.getpid():
            with contextlib.suppress(psutil.Error):
                process.kill()
                removed.append(f"process {process.pid}")
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(str(folder))
    for line in _run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            _kill_namespace(name)
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    for line in _run(["ip", "-o", "link", "show"], check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            link = parts[1].strip().split("@")[0]
            if link.startswith(PREFIX):
                _run(["ip", "link", "del", link], check=False)
                removed.append(link)
    return removed


def _kill_namespace(name: str) -> None:
    for pid in _run(["ip", "netns", "pids", name], check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class Network:
    """``count`` namespaces on one bridge; see the module."""

    count: int
    tag: str = field(default_factory=lambda: secrets.token_hex(2))

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 50:
            raise ValueError("between 1 and 50 hosts")
        self.bridge = f"{PREFIX}{self.tag}br"
        self.namespaces = [f"{PREFIX}{self.tag}h{i}" for i in range(self.count)]
        self.links = [f"{PREFIX}{self.tag}v{i}" for i in range(self.count)]
        self.subnet = _free_subnet()
        self.gateway = str(self.subnet.network_address + 1)
        self.addresses = [str(self.subnet.network_address + 10 + i) for i in range(self.count)]
        self.netem = False
        self.made = False

    def create(self) -> None:
        """Make the bridge and the namespaces (removed again if any step fails)."""
        self.made = True
        try:
            prefix = self.subnet.prefixlen
            _run(["ip", "link", "add", self.bridge, "type", "bridge", "forward_delay", "0"])
            _run(["ip", "addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            for namespace, link, address in zip(
                self.namespaces, self.links, self.addresses, strict=True
            ):
                inner = f"{link}i"
                _run(["ip", "netns", "add", namespace])
                _run(["ip", "link", "add", link, "type", "veth", "peer", "name", inner])
                _run(["ip", "link", "set", inner, "netns", namespace])
                _run(["ip", "link", "set", link, "master", self.bridge])
                _run(["ip", "link", "set", link, "up"])
                _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
                _run(["ip", "-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", inner])
                _run(["ip", "-n", namespace, "link", "set", inner, "up"])
            self.netem = _netem()
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove what :meth:`create` made, the processes in the namespaces killed first.
        Idempotent; never raises for what is already gone."""
        if not self.made:
            return
        self.made = False
        for namespace in self.namespaces:
            _kill_namespace(namespace)
            _run(["ip", "netns", "del", namespace], check=False)
        for link in self.links:
            _run(["ip", "link", "del", link], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)

    def argv(self, host: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run in host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[host], *argv]

    def cut(self, host: int) -> None:
        """Cut host ``host`` off: its link down (its sockets stay open, nothing passes)."""
        _run(["ip", "link", "set", self.links[host], "down"])

    def heal(self, host: int) -> None:
        """Bring host ``host``'s link up again."""
        _run(["ip", "link", "set", self.links[host], "up"])

    def slow(self, host: int, *, delay_ms: int = 200, loss_percent: float = 5.0) -> None:
        """Make host ``host``'s link slow and lossy both ways (see the module)."""
        namespace, inner = self.namespaces[host], f"{self.links[host]}i"
        for where, device in ((None, self.links[host]), (namespace, inner)):
            base = ["tc"] + (["-n", where] if where else [])
            if self.netem:
                qdisc = ["netem", "delay", f"{delay_ms}ms", "loss", f"{loss_percent}%"]
            else:  # a narrow link: what waits in its queue is delayed
                qdisc = ["tbf", "rate", "512kbit", "burst", "16kbit", "latency", f"{delay_ms}ms"]
            _run([*base, "qdisc", "replace", "dev", device, "root", *qdisc])
        if not self.netem and loss_percent > 0:
            rule = (
                f"table inet {PREFIX} {{\n  chain out {{ type filter hook output priority 0; "
                f"policy accept; numgen random mod 1000 < {int(loss_percent * 10)} drop; }}\n}}\n"
            )
            _run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], stdin=rule)

    def unslow(self, host: int) -> None:
        """Undo :meth:`slow`."""
        namespace, inner = self.namespaces[host], f"{self.links[host]}i"
        _run(["tc", "qdisc", "del", "dev", self.links[host], "root"], check=False)
        _run(["tc", "-n", namespace, "qdisc", "del", "dev", inner, "root"], check=False)
        _run(
            ["ip", "netns", "exec", namespace, "nft", "delete", "table", "inet", PREFIX],
            check=False,
        )


def _free_subnet() -> ipaddress.IPv4Network:
    used = _run(["ip", "-4", "-o", "addr", "show"], check=False)
    free = [n for n in range(1, 255) if f" {NETWORK}.{n}." not in used]
    if not free:
        raise HostsError(f"no free {NETWORK}.N.0/24 network on this machine")
    return ipaddress.IPv4Network(f"{NETWORK}.{random.choice(free)}.0/24")  # noqa: S311


class PrivateRedis:
    """A redis-server of the harness's own on ``binds`` (no persistence: a restart forgets)."""

    def __init__(self, folder: Path, binds: Sequence[str], harness: ProcessHarness) -> None:
        self.folder = folder
        self.binds = list(binds)
        self.port = _free_port()
        self.harness = harness
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, host: str = "127.0.0.1") -> str:
        return f"redis://{host}:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers (30 s at most)."""
        argv = [redis_server_executable(), "--port", str(self.port), "--bind", *self.binds]
        argv += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        argv += ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        self.process = self.harness.spawn(argv, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _answers(self.port):  # a raw PING, as the embedded server's: no client here
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise HostsError("the private Redis did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL it (what it held is gone)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()


class PrivatePostgres:
    """A PostgreSQL server of the harness's own: a fresh cluster in ``folder`` listening on
    ``binds``, trusting the bridge's network (as the ``postgres`` user when run as root)."""

    def __init__(self, folder: Path, binds: Sequence[str], network: str) -> None:
        found = _postgres_bin()
        if found is None:
            raise HostsError("PostgreSQL's server programs are not installed")
        self.bin = found
        self.data = folder / "pgdata"
        self.binds = list(binds)
        self.network = network
        self.port = _free_port()
        self.started = False

    def url(self, host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/postgres"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def init(self) -> None:
        """Make the cluster's files."""
        self.data.mkdir(parents=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.data, self.data.parent):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
        _run(self._as_owner([*initdb, "--no-sync", "-E", "UTF8"]))
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.network} trust\n")

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses='{','.join(self.binds)}' -k {self.data} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        ctl = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "log")]
        _run(self._as_owner([*ctl, "-w", "-t", "30", "-o", options, "start"]))
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        if self.started:
            ctl = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30"]
            _run(self._as_owner([*ctl, "-m", mode, "stop"]), check=False)
            self.started = False

    def restart(self) -> None:
        """Stop it as a crash would (``immediate``), then start it again."""
        self.stop("immediate")
        self.start()


def _answers(port: int) -> bool:
    """Whether the Redis server on 127.0.0.1:``port`` answers a PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _ports_to(pid: int, remote_port: int) -> set[int]:
    """The local ports of process ``pid``'s TCP sockets connected to ``remote_port``."""
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    ports = set()
    for line in table:
        fields = line.split()
        if len(fields) > 9 and fields[9] in inodes:
            local, remote = fields[1], fields[2]
            if int(remote.split(":")[1], 16) == remote_port:
                ports.add(int(local.split(":")[1], 16))
    return ports


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Host:
    """One host: its namespace's address and its supervisor (None while down)."""

    index: int
    address: str
    supervisor: subprocess.Popen[bytes] | None = None
    cut: bool = False
    slow: bool = False


class Hosts:
    """``count`` hosts, their services and their faults; ``async with`` it (see the module).

    ``settings``: ``TMI_CLUSTER_*`` variables for every supervisor (beside those that point it
    at the private servers and the simulator); ``channels``: the simulator's channels."""

    def __init__(
        self,
        count: int = 3,
        *,
        channels: Iterable[str] = (),
        settings: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        rate: float = 0.0,
        seed: int | None = None,
        folder: Path | None = None,
    ) -> None:
        if not 1 <= count <= 50:
            raise ValueError("between 1 and 50 hosts")
        reason = missing()
        if reason is not None:
            raise HostsError(f"hosts cannot be made here: {reason}")
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        self.network = Network(count)
        self.harness = ProcessHarness(grace_s=5.0)
        self.hosts = [Host(i, a) for i, a in enumerate(self.network.addresses)]
        binds = [self.network.gateway, "127.0.0.1"]
        self.redis = PrivateRedis(self.folder, binds, self.harness)
        self.postgres = PrivatePostgres(self.folder, binds, str(self.network.subnet))
        self.sim = ChatSimulator(
            host=self.network.gateway,
            channels=channels,
            limits=limits,
            rate=rate,
            seed=seed,
        )
        self.prefix = f"hosts-{self.network.tag}:"
        self.extra = dict(settings or {})
        self._logs: list[IO[bytes]] = []
        self._starving: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> Self:
        try:
            await asyncio.to_thread(self._start_services)
            await self.sim.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _start_services(self) -> None:
        self.network.create()
        self.redis.start()
        self.postgres.init()
        self.postgres.start()
        migrate = subprocess.run(
            [SCRIPT, "migrate"],
            env=self.env(None),
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if migrate.returncode != 0:
            raise HostsError(f"tmi-cluster migrate failed: {migrate.stderr.strip()[-2000:]}")

    async def aclose(self) -> None:
        """Remove everything (see the module); safe to call twice."""
        self.unstarve()
        for host in self.hosts:  # a test bed: no graceful stop to wait for
            await asyncio.to_thread(self.kill, host.index)
        await asyncio.to_thread(self.harness.reap)
        await asyncio.to_thread(self.network.remove)
        await self.sim.aclose()
        await asyncio.to_thread(self.postgres.stop, "immediate")
        await asyncio.to_thread(self.redis.kill)
        for log_file in self._logs:
            log_file.close()
        self._logs.clear()
        if self._own_folder and not os.environ.get("TMI_HOSTS_KEEP"):
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- settings -------------------------------------------------------------------------------

    def env(self, host: int | None) -> dict[str, str]:
        """The environment of a process on host ``host`` (None: the root namespace)."""
        where = "127.0.0.1" if host is None else self.network.gateway
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")}
        env.update(
            {
                "TMI_CLUSTER_REDIS__URL": self.redis.url(where),
                "TMI_CLUSTER_PREFIX": self.prefix,
                "TMI_CLUSTER_DATABASE__URL": self.postgres.url(where),
                "TMI_CLUSTER_TMI__CONNECTION__SERVER": self.network.gateway,
                "TMI_CLUSTER_TMI__CONNECTION__PORT": str(self.sim.port),
                "TMI_CLUSTER_TMI__CONNECTION__SECURE": "false",
                "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "never",
                "TMI_CLUSTER_LOG__LEVEL": "info",
                **self.extra,
            }
        )
        return self.harness.env(env)

    def log_path(self, host: int) -> Path:
        return self.folder / f"host{host}.log"

    # -- the supervisors ------------------------------------------------------------------------

    def start(self, host: int) -> None:
        """Start host ``host``'s supervisor (``tmi-cluster run --id host<host>``)."""
        target = self.hosts[host]
        if target.supervisor is not None and target.supervisor.poll() is None:
            raise HostsError(f"host{host}'s supervisor runs already")
        log_file = self.log_path(host).open("ab")
        self._logs.append(log_file)
        target.supervisor = self.harness.spawn(
            self.network.argv(host, [SCRIPT, "run", "--id", f"host{host}"]),
            env=self.env(host),
            cwd=self.folder,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    def processes(self, host: int) -> list[psutil.Process]:
        """Host ``host``'s supervisor and its workers, alive now."""
        supervisor = self.hosts[host].supervisor
        if supervisor is None or supervisor.poll() is not None:
            return []
        with contextlib.suppress(psutil.NoSuchProcess):
            top = psutil.Process(supervisor.pid)
            return [top, *top.children(recursive=True)]
        return []

    def workers(self, host: int) -> list[psutil.Process]:
        """Host ``host``'s worker processes, alive now."""
        found = []
        for process in self.processes(host)[1:]:
            with contextlib.suppress(psutil.Error):
                if "tmi_cluster.worker.process" in " ".join(process.cmdline()):
                    found.append(process)
        return found

    def kill_worker(self, host: int, rng: random.Random | None = None) -> set[int]:
        """SIGKILL one worker of host ``host`` (picked by ``rng``); the local ports of its
        chat connections (empty when the host has no worker)."""
        workers = sorted(self.workers(host), key=lambda p: p.pid)
        if not workers:
            return set()
        victim = (rng or random.Random()).choice(workers)  # noqa: S311
        ports = self.chat_ports([victim])
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
        return ports

    def chat_ports(self, processes: Iterable[psutil.Process]) -> set[int]:
        """The local ports of ``processes``' connections to the simulator (read from their own
        namespace's socket table: psutil reads the caller's)."""
        ports = set()
        for process in processes:
            ports |= _ports_to(process.pid, self.sim.port)
        return ports

    def kill(self, host: int) -> None:
        """SIGKILL host ``host``'s supervisor and every worker of it (a host dies)."""
        for process in self.processes(host):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        supervisor = self.hosts[host].supervisor
        if supervisor is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                supervisor.wait(10)

    def stop(self, host: int, timeout_s: float = 60.0) -> int | None:
        """SIGTERM host ``host``'s supervisor and wait for it; its exit code."""
        supervisor = self.hosts[host].supervisor
        if supervisor is None:
            return None
        supervisor.send_signal(signal.SIGTERM)
        return supervisor.wait(timeout_s)

    # -- faults of the network and the servers ---------------------------------------------------

    def cut(self, host: int) -> None:
        self.network.cut(host)
        self.hosts[host].cut = True

    def heal(self, host: int) -> None:
        self.network.heal(host)
        self.hosts[host].cut = False

    def slow(self, host: int) -> None:
        self.network.slow(host)
        self.hosts[host].slow = True

    def unslow(self, host: int) -> None:
        self.network.unslow(host)
        self.hosts[host].slow = False

    def host_of(self, address: str | tuple[str, int]) -> int | None:
        """The host whose address ``address`` is (or a simulator peer's), else None."""
        wanted = address[0] if isinstance(address, tuple) else address
        for host in self.hosts:
            if host.address == wanted:
                return host.index
        return None

    def starve(self, seconds: float) -> None:
        """Keep every core busy for ``seconds`` (processes that end by themselves)."""
        busy = (
            f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
        )
        for _ in range(os.cpu_count() or 2):
            self._starving.append(
                self.harness.spawn([sys.executable, "-c", busy], stdout=subprocess.DEVNULL)
            )

    def unstarve(self) -> None:
        for process in self._starving:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self._starving.clear()

    def settings_file(self) -> dict[str, Any]:
        """What an application in the root namespace needs (its settings as variables)."""
        return {k: v for k, v in self.env(None).items() if k.startswith("TMI_CLUSTER_")}
