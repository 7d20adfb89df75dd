"""The ircdocs parser-tests suite (vendored in tests/conformance), passed in full."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tmi_cluster.irc import parse, serialize, split_source

HERE = Path(__file__).parent / "conformance"


def _cases(name: str) -> list[dict[str, Any]]:
    data = yaml.safe_load((HERE / name).read_text(encoding="utf-8"))
    cases: list[dict[str, Any]] = data["tests"]
    return cases


@pytest.mark.parametrize("case", _cases("msg-split.yaml"), ids=lambda c: repr(c["input"])[:60])
def test_msg_split(case: dict[str, Any]) -> None:
    atoms = case["atoms"]
    message = parse(case["input"])
    assert message.tags == (atoms.get("tags") or {})
    assert message.source == atoms.get("source")
    assert message.command == atoms["verb"]
    assert message.params == atoms.get("params", [])


@pytest.mark.parametrize("case", _cases("msg-join.yaml"), ids=lambda c: c.get("desc", "")[:60])
def test_msg_join(case: dict[str, Any]) -> None:
    atoms = case["atoms"]
    tags = {k: ("" if v is None else v) for k, v in (atoms.get("tags") or {}).items()}
    line = serialize(atoms["verb"], atoms.get("params", []), tags=tags, source=atoms.get("source"))
    assert line in case["matches"]


@pytest.mark.parametrize("case", _cases("userhost-split.yaml"), ids=lambda c: c["source"])
def test_userhost_split(case: dict[str, Any]) -> None:
    atoms = case["atoms"]
    nick, user, host = split_source(case["source"])
    assert (nick or "", user or "", host or "") == (
        atoms.get("nick", ""),
        atoms.get("user", ""),
        atoms.get("host", ""),
    )
    message = parse(f":{case['source']} PING x")
    assert (message.nick, message.user, message.host) == (nick, user, host)
