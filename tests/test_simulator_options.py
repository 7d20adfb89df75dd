"""The simulator's command-line inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmi_cluster.errors import ConfigError
from tmi_cluster.simulator.options import AccountSpec, parse_channels, parse_limits, read_accounts


def test_channels_as_count_list_and_file(tmp_path: Path) -> None:
    assert parse_channels("3") == ["channel1", "channel2", "channel3"]
    assert parse_channels("#Alpha, beta,alpha") == ["alpha", "beta"]
    listing = tmp_path / "channels.txt"
    listing.write_text("# busy ones first\nalpha\n\nBeta  # a comment\nalpha\n")
    assert parse_channels(f"@{listing}") == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "expected 1 to 1,000,000 channels, got 0"),
        ("a,b c", "invalid channel name 'b c'"),
        (",", "expected a count, names separated by commas, or @FILE"),
        ("@/nonexistent/file", "cannot read /nonexistent/file: No such file or directory"),
    ],
)
def test_bad_channels(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="--channels: ") as caught:
        parse_channels(text)
    assert message in str(caught.value)


def test_channel_file_errors_name_the_line(tmp_path: Path) -> None:
    listing = tmp_path / "c.txt"
    listing.write_text("alpha\nnot valid!\n")
    with pytest.raises(ConfigError, match=r"c.txt, line 2: invalid channel name 'not valid!'"):
        parse_channels(f"@{listing}")
    listing.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="names no channel"):
        parse_channels(f"@{listing}")


def test_accounts_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.txt"
    path.write_text("# comment\nMyBot:oauth:abc\nother:xyz:#Alpha,beta\n\n")
    assert read_accounts(path) == [
        AccountSpec("mybot", "abc"),
        AccountSpec("other", "xyz", ("alpha", "beta")),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("justlogin", "line 1: expected login:token"),
        ("bot:", "line 1: expected login:token"),
        ("bad login:tok", "line 1: invalid channel name 'bad login'"),
        ("bot:tok:a b", "line 1: invalid channel name 'a b'"),
    ],
)
def test_bad_accounts(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "accounts.txt"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        read_accounts(path)
    assert message in str(caught.value)


def test_limits_overrides() -> None:
    from tmi_cluster.simulator import Limits  # noqa: PLC0415

    limits = parse_limits(["join_allow=40", "channel_interval_s=0.5"])
    assert (limits.join_allow, limits.channel_interval_s) == (40, 0.5)
    assert limits.message_allow == Limits().message_allow


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("join_allow", "expected NAME=VALUE"),
        ("speed=1", "expected NAME=VALUE with NAME one of join_allow"),
        ("join_allow=lots", "expected a number"),
        ("join_allow=1.5", "expected a number"),
        ("ping_interval_s=-1", "expected a finite number >= 0"),
    ],
)
def test_bad_limits(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match="--limit") as caught:
        parse_limits([item])
    assert message in str(caught.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_limit_must_be_a_finite_number(value: str) -> None:
    with pytest.raises(ConfigError, match="expected a finite number >= 0"):
        parse_limits([f"join_every_s={value}"])
