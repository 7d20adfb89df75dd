"""How fast the ``tmi-cluster`` command answers: the wall time of each everyday command, from
the start of its process to its exit (issue 20: under 0.4 s; ``health`` is what monitors call
every few seconds).

Run: ``python bench/cli.py`` (about two minutes) or ``python bench/cli.py --quick`` (under a
minute). ``--src DIR`` times the package in another source tree (put first on ``PYTHONPATH``),
for example the one before a change: ``git archive HEAD~1 src | tar -x -C /tmp/old`` then
``--src /tmp/old/src``. Redis: ``--redis URL`` (default ``redis://127.0.0.1:6379/0``), every key
under a prefix of its own, deleted at the end; the database is a SQLite file in a temporary
folder, made by ``tmi-cluster install``.

Two setups, each command run in turn (rounds, so that a noisy moment hits every command
alike), after one warm-up run each:

- **no cluster**: the tables exist, no supervisor ever ran (``join`` then exits 69 at once;
  ``send`` exits 75 after waiting its ``--timeout`` of 0.1 s plus the 2 s the command gives the
  answer, so its figure is that wait, not the start);
- **a cluster** (unless ``--no-cluster``): ``tmi-cluster run`` with one worker reading the
  built-in simulator (``tmi.connection.simulate = "always"``), the channels joined beforehand;
  ``send`` sends to a different channel each run (the simulator keeps Twitch's 1 s per channel).

Every process gets bytecode caching in a folder of the run's own (``PYTHONPYCACHEPREFIX``), as
an installed package has its ``.pyc`` files, whatever ``PYTHONDONTWRITEBYTECODE`` says. The
figure is the median; the floor row is the interpreter alone (``python -c pass``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import redis

from tmi_cluster.harness import ProcessHarness

Command = Callable[[int], list[str]]  # the run's number -> argv after ``-m tmi_cluster.cli``

#: The commands timed: name -> argv (the run's number picks the channel of a send).
COMMANDS: dict[str, Command] = {
    "--help": lambda _: ["--help"],
    "list --json": lambda _: ["list", "--json"],
    "health": lambda _: ["health"],
    "channels": lambda _: ["channels"],
    "join": lambda _: ["join", "bench0", "--timeout", "5"],
    "send": lambda run: ["send", f"bench{run}", "hi", "--timeout", "0.1"],
}


def _environment(src: Path | None, redis_url: str, prefix: str, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    env["TMI_CLUSTER_REDIS__URL"] = redis_url
    env["TMI_CLUSTER_PREFIX"] = prefix
    # the cluster's size, for every command alike (health compares with the minimum)
    env["TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN"] = "1"
    env["TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX"] = "1"
    return env


def _time(argv: list[str], env: Mapping[str, str], cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - started, done.returncode


def _measure(
    commands: Mapping[str, Command], runs: int, env: Mapping[str, str], cwd: Path
) -> dict[str, tuple[list[float], set[int]]]:
    """Each command ``runs`` times (after a warm-up), in rounds: seconds and exit codes."""
    cli = [sys.executable, "-m", "tmi_cluster.cli"]
    floor: Command = lambda _: []  # noqa: E731
    table = {"(python -c pass)": floor, **commands}
    results: dict[str, tuple[list[float], set[int]]] = {name: ([], set()) for name in table}
    for run in range(runs + 1):
        for name, command in table.items():
            argv = [sys.executable, "-c", "pass"] if command is floor else cli + command(run)
            seconds, code = _time(argv, env, cwd)
            if run:  # the first round warms up (bytecode, the file cache)
                results[name][0].append(seconds)
                results[name][1].add(code)
    return results


def _start_cluster(
    harness: ProcessHarness, env: Mapping[str, str], cwd: Path, channels: int
) -> None:
    """One supervisor with one worker on the built-in simulator, ``channels`` joined."""
    cluster_env = {**env, "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "always"}
    log = (cwd / "supervisor.log").open("wb")
    harness.spawn(
        [sys.executable, "-m", "tmi_cluster.cli", "run"],
        env=cluster_env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    names = [f"bench{i}" for i in range(channels)]
    while time.monotonic() < deadline:
        _, code = _time(
            [sys.executable, "-m", "tmi_cluster.cli", "join", *names, "--timeout", "10"], env, cwd
        )
        if code == 0:
            return
        time.sleep(0.5)
    raise SystemExit(f"the cluster did not join its channels in 60 s: see {cwd}/supervisor.log")


def _print(setup: str, results: Mapping[str, tuple[list[float], set[int]]]) -> None:
    print(f"\n{setup}")
    print("| command | median | min | max | exit |\n|---|---|---|---|---|")
    for name, (seconds, codes) in results.items():
        ms = [s * 1000 for s in seconds]
        print(
            f"| `{name}` | {statistics.median(ms):.0f} ms | {min(ms):.0f} ms | "
            f"{max(ms):.0f} ms | {', '.join(map(str, sorted(codes)))} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 runs a command (under a minute)")
    parser.add_argument("--runs", type=int, help="runs a command (default 15; 5 with --quick)")
    parser.add_argument("--src", type=Path, help="the source tree to time (default: installed)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--no-cluster", action="store_true", help="only the setup without one")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 15)
    prefix = f"bench-cli-{secrets.token_hex(4)}:"
    folder = Path(tempfile.mkdtemp(prefix="tmi-bench-cli-"))
    env = _environment(args.src, args.redis, prefix, folder / "pycache")
    source = args.src or "the installed package"
    print(f"tmi-cluster's start: {runs} runs a command, {source}, Python {sys.version.split()[0]}")
    try:
        _, code = _time([sys.executable, "-m", "tmi_cluster.cli", "install"], env, folder)
        if code:
            raise SystemExit("tmi-cluster install failed")
        _print("no cluster (tables, no supervisor)", _measure(COMMANDS, runs, env, folder))
        if not args.no_cluster:
            with ProcessHarness() as harness:
                _start_cluster(harness, env, folder, channels=runs + 2)
                results = _measure(COMMANDS, runs, env, folder)
                for process in harness.started:
                    harness.stop(process)
            _print("a cluster (one supervisor, one worker, simulated chat)", results)
    finally:
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
