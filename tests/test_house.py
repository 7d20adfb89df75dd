"""House rules that the code itself must keep, checked on the source (see DEVELOPERS.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tmi_cluster

SOURCE = Path(tmi_cluster.__file__).parent


def _modules() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def _offending(pattern: str, *, allowed: frozenset[str] = frozenset()) -> list[str]:
    found = []
    rule = re.compile(pattern)
    for path in _modules():
        relative = path.relative_to(SOURCE).as_posix()
        if relative in allowed:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if rule.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_no_cancellation_is_swallowed_outside_the_one_helper() -> None:
    """``suppress(CancelledError)`` around an await cannot tell the task's cancellation from
    the caller's: tasks are stopped with ``tasks.cancel_and_wait``."""
    assert _offending(r"^\s*with .*suppress\([^)]*CancelledError") == []


def test_no_task_is_found_by_its_name() -> None:
    """Tasks have owners that hold them; a name is for logs only."""
    assert _offending(r"get_name\(\)\s*(==|!=|\.(endswith|startswith)|\bin\b)") == []
    assert _offending(r"for \w+ in asyncio\.all_tasks\(", allowed=frozenset({"watchdog.py"})) == []


def test_nothing_swallows_every_error_silently_on_a_shutdown_path() -> None:
    """``suppress(Exception)`` hides bugs: what is swallowed is named and logged."""
    assert _offending(r"^\s*with .*suppress\((Base)?Exception\b") == []


def test_only_the_bus_imports_redis() -> None:
    """Only ``tmi_cluster.bus`` talks to Redis: no other module imports redis-py (types come
    from the bus as ``AsyncRedis``)."""
    offending = []
    for path in _modules():
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith("bus/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if any(n == "redis" or n.startswith("redis.") for n in names):
                offending.append(f"{relative}:{node.lineno}")
    assert offending == []


def test_no_redis_command_is_called_outside_the_bus() -> None:
    """No code outside the bus calls a command on a client it got from the bus."""
    commands = (
        "get|set|mget|delete|exists|incr|expire|pexpire|time|ping|eval|pipeline|register_script"
        "|scan_iter|publish|h[a-z]+|s[a-z]+|z[a-z]+|x[a-z]+|l[a-z]+|b[lr]pop"
    )
    pattern = rf"\bclient\.({commands})\("
    assert [o for o in _offending(pattern) if not o.startswith("bus/")] == []
