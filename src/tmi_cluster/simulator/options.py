"""Reading the simulator's command-line inputs: channel lists and accounts files.

``--channels`` is a count (``channel1`` ... ``channelN``), a comma-separated list of names, or
``@FILE`` with one name a line. An accounts file has one account a line,
``login:token`` or ``login:token:chan1,chan2`` (moderator in those channels; the token may
keep its ``oauth:`` prefix); ``#`` starts a comment. Errors name the input, the line and the
problem.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tmi_cluster.errors import ConfigError, InvalidChannelError
from tmi_cluster.logins import normalise_login, normalise_logins
from tmi_cluster.simulator.limits import Limits

__all__ = ["AccountSpec", "parse_channels", "parse_limits", "read_accounts"]

MAX_GENERATED_CHANNELS = 1_000_000


@dataclass(frozen=True)
class AccountSpec:
    """One account of an accounts file."""

    login: str
    token: str
    moderator_in: tuple[str, ...] = ()


def parse_channels(text: str) -> list[str]:
    """The channel names ``--channels`` means; ConfigError if it means none."""
    text = text.strip()
    if text.isdigit():
        count = int(text)
        if not 0 < count <= MAX_GENERATED_CHANNELS:
            raise ConfigError(
                f"--channels: expected 1 to {MAX_GENERATED_CHANNELS:,} channels, got {count}"
            )
        return [f"channel{i}" for i in range(1, count + 1)]
    if text.startswith("@"):
        return _channel_file(Path(text[1:]))
    try:
        names = normalise_logins(part for part in text.split(",") if part.strip())
    except InvalidChannelError as exc:
        raise ConfigError(f"--channels: {exc}") from None
    if not names:
        raise ConfigError("--channels: expected a count, names separated by commas, or @FILE")
    return names


def _content_lines(path: Path, option: str) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of each line that is neither blank nor a ``#`` comment."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield number, text


def _channel_file(path: Path) -> list[str]:
    names = []
    for number, line in _content_lines(path, "--channels"):
        name = line.split("#", 1)[0].strip()  # a name may be followed by a comment
        try:
            names.append(normalise_login(name))
        except InvalidChannelError as exc:
            raise ConfigError(f"{path}, line {number}: {exc}") from None
    if not names:
        raise ConfigError(f"--channels: {path} names no channel")
    return list(dict.fromkeys(names))


def read_accounts(path: str | Path) -> list[AccountSpec]:
    """The accounts of an accounts file; ConfigError naming the line of a bad one."""
    source = Path(path)
    accounts = []
    for number, text in _content_lines(source, "--accounts"):
        where = f"{source}, line {number}"
        login, _, rest = text.partition(":")
        token, _, channels = rest.removeprefix("oauth:").partition(":")
        if not token:
            raise ConfigError(f"{where}: expected login:token or login:token:chan1,chan2")
        try:
            moderator = tuple(normalise_logins(c for c in channels.split(",") if c))
            accounts.append(AccountSpec(normalise_login(login), token, moderator))
        except InvalidChannelError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return accounts


def parse_limits(items: list[str] | tuple[str, ...]) -> Limits:
    """``Limits`` with ``NAME=VALUE`` overrides (``join_allow=40``); ConfigError if one is bad."""
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    changes: dict[str, Any] = {}
    for item in items:
        name, equals, text = item.partition("=")
        name = name.strip()
        if not equals or name not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"--limit {item!r}: expected NAME=VALUE with NAME one of {known}")
        try:
            value = int(text) if fields[name].type in (int, "int") else float(text)
        except ValueError:
            raise ConfigError(f"--limit {item!r}: expected a number") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--limit {item!r}: expected a finite number >= 0")
        changes[name] = value
    return dataclasses.replace(Limits(), **changes)
