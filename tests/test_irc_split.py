"""The compiled hot loop (mypyc) and its pure-Python source give the same results."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tmi_cluster.irc import _split

SOURCE = Path(__file__).parent.parent / "src" / "tmi_cluster" / "irc" / "_split.py"


def _pure() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tmi_cluster_split_pure", SOURCE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


PURE = _pure()


def _outcome(module: ModuleType, line: str) -> object:
    try:
        return module.split_line(line)
    except ValueError as exc:
        return ("error", str(exc))


def test_the_installed_parser_is_compiled_in_ci() -> None:
    compiled = not str(_split.__file__).endswith(".py")
    if os.environ.get("CI") and not os.environ.get("TMI_CLUSTER_PURE_PYTHON"):
        assert compiled, f"CI installs the compiled parser, but {_split.__file__} is loaded"
    assert Path(PURE.__file__ or "").suffix == ".py"


@pytest.mark.parametrize(
    "line",
    [
        "@a=b\\sc;d=\\\\;e;=x :nick!user@host PRIVMSG #chan :hello there",
        "PING :tmi.twitch.tv",
        "@a=b",
        ":source",
        "",
        "foo  bar   baz ::asdf",
    ],
)
def test_same_results_on_examples(line: str) -> None:
    assert _outcome(_split, line) == _outcome(PURE, line)


@settings(max_examples=1_000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("@:;= !#\\abcXé👋-/")), max_size=60))
def test_same_results_on_anything(line: str) -> None:
    assert _outcome(_split, line) == _outcome(PURE, line)
