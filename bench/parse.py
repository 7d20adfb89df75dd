"""Parsing speed: tmi-cluster against TwitchIO 2's parser and jaraco's irc parser, one corpus.

Run: ``python bench/parse.py`` (about a minute) or ``python bench/parse.py --quick``.
Needs the bench extra: ``pip install '.[bench]'`` (``twitchio<3``, ``irc``).

Prints lines per second on one core for (a) ``parse`` and (b) ``parse`` + ``from_message``,
side by side with TwitchIO 2.x's ``parser`` and jaraco's regex + tag parsing, and the ratios.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import importlib.util

from corpus import corpus

from tmi_cluster.events import from_message
from tmi_cluster.irc import _split, parse
from tmi_cluster.irc import message as message_module


def _ours_parse(lines: list[str]) -> None:
    for line in lines:
        parse(line)


def _ours_events(lines: list[str]) -> None:
    for line in lines:
        from_message(parse(line))


def _pure_split() -> Callable[[str], object]:
    """The parser's hot loop as plain Python, whatever the installed build is."""
    source = Path(__file__).parent.parent / "src" / "tmi_cluster" / "irc" / "_split.py"
    spec = importlib.util.spec_from_file_location("split_pure", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    split: Callable[[str], object] = module.split_line
    return split


def _ours_pure(lines: list[str]) -> None:
    """``parse`` with the pure-Python hot loop swapped in."""
    compiled = message_module.split_line  # type: ignore[attr-defined]
    message_module.split_line = _pure_split()  # type: ignore[attr-defined,assignment]
    try:
        for line in lines:
            parse(line)
    finally:
        message_module.split_line = compiled  # type: ignore[attr-defined]


def _twitchio(lines: list[str]) -> None:
    from twitchio.parse import parser

    for line in lines:
        parser(line, "mybot")


def _jaraco(lines: list[str]) -> None:
    from irc import message
    from irc.client import NickMask, _rfc_1459_command_regexp

    for line in lines:
        group = _rfc_1459_command_regexp.match(line).group
        NickMask.from_group(group("prefix"))
        message.Arguments.from_group(group("argument"))
        message.Tag.from_group(group("tags"))


def _rates(
    runs: dict[str, Callable[[list[str]], None]], lines: list[str], seconds: float
) -> dict[str, float]:
    """Best lines/s of each, in interleaved rounds so that machine noise hits all alike."""
    for run in runs.values():
        run(lines[:200])  # warm up, imports
    best = dict.fromkeys(runs, 0.0)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run(lines)
            best[name] = max(best[name], len(lines) / (time.perf_counter() - start))
    return best


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    args = options.parse_args()
    lines = corpus(2_000)
    seconds = 20.0 if args.quick else 120.0
    compiled = not str(_split.__file__).endswith(".py")
    build = "compiled with mypyc" if compiled else "pure Python"
    rows = [
        (f"tmi-cluster parse ({build})", _ours_parse),
        ("tmi-cluster parse (pure Python)", _ours_pure),
        ("tmi-cluster parse + from_message", _ours_events),
        ("TwitchIO 2 parser", _twitchio),
        ("jaraco irc parser", _jaraco),
    ]
    rates = _rates(dict(rows), lines, seconds)
    twitchio = rates["TwitchIO 2 parser"]
    print(f"Python {platform.python_version()}, {len(lines)} lines, best round of {seconds:g} s")
    print(f"{'implementation':44} {'lines/s':>12} {'vs TwitchIO 2':>14}")
    for name, _ in rows:
        print(f"{name:44} {rates[name]:12,.0f} {rates[name] / twitchio:13.2f}x")
    print()
    print("targets: parse >= 2.5x TwitchIO 2, parse + from_message >= 1.5x TwitchIO 2")


if __name__ == "__main__":
    main()
