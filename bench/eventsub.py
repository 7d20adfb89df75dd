"""The EventSub route against the IRC route on the same chat: notifications per second one core
turns into typed events.

Run: ``python bench/eventsub.py`` (about two minutes) or ``python bench/eventsub.py --quick``.

The corpus is the benchmarks' usual chat (``bench/corpus.py``: the simulator's generator); each
of its PRIVMSG, USERNOTICE and CLEARMSG lines is also written as the EventSub notification
Twitch sends for it (``tmi_cluster.simulator.eventsub``: the whole WebSocket message, metadata
and payload). Measured, best round of several:

- IRC: ``parse`` + ``from_message`` of each line;
- EventSub: ``decode`` of each WebSocket message + ``notification_events`` (the event JSON,
  then the IRC message Twitch sends for it, then the same builder).

The conduit's reconcile at 10,000 subscriptions is measured once conduits exist.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corpus import corpus

from tmi_cluster.events import from_message
from tmi_cluster.eventsub import decode, notification_events
from tmi_cluster.irc import parse
from tmi_cluster.simulator.eventsub import wire

_CHAT = ("PRIVMSG", "USERNOTICE", "CLEARMSG")


def _chat(size: int) -> tuple[list[str], list[bytes]]:
    """The chat lines that have a notification, and their notifications."""
    chat = [m for m in map(parse, corpus(size)) if m.command in _CHAT]
    pairs = [(m.raw, wire(m)) for m in chat]
    kept = [(line, built) for line, built in pairs if built is not None]
    return (
        [line for line, _ in kept],
        [json.dumps(built, ensure_ascii=False).encode() for _, built in kept],
    )


def _irc(lines: list[str]) -> None:
    for line in lines:
        from_message(parse(line))


def _eventsub(wires: list[bytes]) -> None:
    for data in wires:
        notification_events(decode(data))


def _rate(run: Callable[[], None], count: int, seconds: float) -> float:
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    args = options.parse_args()
    lines, wires = _chat(6_000)
    seconds = 10.0 if args.quick else 60.0
    irc = _rate(lambda: _irc(lines), len(lines), seconds)
    eventsub = _rate(lambda: _eventsub(wires), len(wires), seconds)
    size_irc = sum(len(line.encode()) for line in lines) / len(lines)
    size_eventsub = sum(len(wire) for wire in wires) / len(wires)
    print(
        f"Python {platform.python_version()}, {len(lines)} chat messages, best round of "
        f"{seconds:g} s each"
    )
    print(f"{'route':44} {'messages/s':>12} {'bytes each':>11} {'vs IRC':>8}")
    print(f"{'IRC: parse + from_message':44} {irc:12,.0f} {size_irc:11,.0f} {1.0:7.2f}x")
    print(
        f"{'EventSub: decode + notification_events':44} {eventsub:12,.0f} "
        f"{size_eventsub:11,.0f} {eventsub / irc:7.2f}x"
    )


if __name__ == "__main__":
    main()
