"""The configuration reference and the starter file, both generated from the settings model.

``docs/configuration.md`` is :func:`reference_markdown` (a test keeps it current) and
``tmi-cluster install`` writes :func:`starter_toml`, so neither can drift from :mod:`config`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from tmi_cluster.config import ENV_PREFIX, RESERVED_ENV, Settings

__all__ = ["reference_markdown", "starter_toml"]

_Row = tuple[tuple[str, ...], FieldInfo, Any]


def _summary(model: type) -> str:
    """The first paragraph of a section's docstring, on one line."""
    paragraph = (model.__doc__ or "").strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _sections(
    model: BaseModel, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], type[BaseModel], list[_Row]]]:
    """Each section (path, model class, its leaf rows), parents before children."""
    rows: list[_Row] = []
    children = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            children.append(((*path, name), value))
        else:
            rows.append(((*path, name), field, value))
    yield path, type(model), rows
    for child_path, child in children:
        yield from _sections(child, child_path)


def _toml(value: Any) -> str:
    if isinstance(value, SecretStr):
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) else f"{value:.1f}"
    return json.dumps(value)


def _type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    if annotation is SecretStr:
        return "secret string"
    name = getattr(annotation, "__name__", None) or str(annotation)
    text = str(annotation) if getattr(annotation, "__args__", None) else name
    # a list of tables: the table's name, not its module path (tmi.identities: list[Account])
    return re.sub(r"\btmi_cluster\.[\w.]*\.(\w+)", r"\1", text.replace("typing.", ""))


#: What each reserved variable is for, one entry per name of ``RESERVED_ENV`` (a test pins it).
_RESERVED_USES = {
    "CONFIG": ("TMI_CLUSTER_CONFIG", "the configuration file, as `--config`"),
    "FUZZ": ("TMI_CLUSTER_FUZZ", "`nightly` runs the fuzz tests at full size"),
    "PURE_PYTHON": ("TMI_CLUSTER_PURE_PYTHON", "`1` at install skips the compiled parser"),
    "TEST_*": ("TMI_CLUSTER_TEST_*", "the test suite's own, such as TMI_CLUSTER_TEST_DATABASE_URL"),
}


def _env(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(path).upper()


_DIFFERENCES = [
    (
        "use",
        "Redis connection name",
        "removed: `redis.url`",
        "no named connections in Python; an error points to `redis.url`",
    ),
    (
        "supervisor.stale",
        "300",
        "30",
        "heartbeats are Redis keys with expiry, not SQL rows, so death is seen in seconds",
    ),
    (
        "process.stale",
        "90",
        "3",
        "the same; a hung worker is killed and replaced, its channels move, within seconds",
    ),
    (
        "memory_limit",
        "64",
        "256",
        "a Python supervisor with the built-in simulator idles at ~90 MB",
    ),
    (
        "throttle.join.allow",
        "2000",
        "20",
        "the verified-bot limit is gone; Twitch allows 20 JOINs per 10 s per account",
    ),
]


#: Where the documentation is online (the package's Documentation URL), for the starter file.
DOCS_URL = "https://github.com/tmi-cluster/tmi-cluster-python/blob/main/docs"


def starter_toml() -> str:
    """A commented starter ``tmi-cluster.toml``: every key, commented out at its default."""
    lines = [
        "# tmi-cluster configuration.",
        "# Every key is optional: each line below shows a key commented out at its default.",
        "# Any key can also be set by an environment variable, TMI_CLUSTER_<SECTION>__<KEY>,",
        "# for example TMI_CLUSTER_TMI__IDENTITY__PASSWORD (keep secrets out of this file).",
        "# Each key's meaning is in the comment above it; 'tmi-cluster features' shows the active",
        "# setup. The whole reference: " + DOCS_URL + "/configuration.md",
    ]
    for path, model, rows in _sections(Settings()):
        if path:
            doc = _summary(model)
            lines += ["", f"[{'.'.join(path)}]", f"# {doc}"] if rows else []
        for key, field, value in rows:
            lines += ["", f"# {field.description or ''}", f"# {key[-1]} = {_toml(value)}"]
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """``docs/configuration.md``: every key with its type, default, variable and meaning."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from src/tmi_cluster/config/model.py by "
        "`python -m tmi_cluster.config.reference > docs/configuration.md`; "
        "a test keeps it current. -->",
        "",
        "Settings are read from the defaults, then `tmi-cluster.toml` (the current folder, "
        "`--config PATH` or `$TMI_CLUSTER_CONFIG`), then environment variables "
        "`TMI_CLUSTER_<SECTION>__<KEY>` (two underscores between levels, any case after the "
        "prefix; values read as the key's type: `true`/`false`, numbers, lists as `a,b` or JSON). "
        "An unknown key, a wrong type or a bad URL stops the start with one line "
        "per problem, every problem of the file and the variables at once, each naming the key, "
        "its source (file and line, or variable), the bad value and what is expected. Relative "
        "paths are relative to the configuration file's folder (or the current folder without "
        "one). Secrets are masked wherever settings are shown, in errors too.",
        "",
        "Which variables are settings: every variable whose name starts with `TMI_CLUSTER_` is "
        "a setting, its first part after `TMI_CLUSTER_` naming a top-level key or section "
        "(`TMI_CLUSTER_PREFIX`, `TMI_CLUSTER_REDIS__URL`), except these reserved names, which "
        "tmi-cluster uses for other purposes and the settings ignore: "
        + ", ".join(
            f"`{_RESERVED_USES[name][0]}` ({_RESERVED_USES[name][1]})"
            for name in sorted(RESERVED_ENV)
        )
        + ". Any other `TMI_CLUSTER_*` variable that names no key is an error with the closest "
        "key, so that a typo is never silently ignored.",
        "",
        "`tmi-cluster install` writes a commented starter file; `tmi-cluster features` shows "
        "the active setup.",
    ]
    for path, model, rows in _sections(Settings()):
        if not rows:
            continue
        title = "`" + ".".join(path) + "`" if path else "Top level"
        doc = _summary(model)
        out += ["", f"## {title}", "", doc if path else "Keys outside any section.", ""]
        out += [
            "| key | type | default | environment variable | meaning |",
            "|---|---|---|---|---|",
        ]
        for key, field, value in rows:
            default = '`""` (secret)' if isinstance(value, SecretStr) else f"`{_toml(value)}`"
            meaning = (field.description or "").replace("|", "\\|")
            cells = [f"`{'.'.join(key)}`", _type_name(field), default, f"`{_env(key)}`", meaning]
            out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "## Differences from the original's `config/tmi-cluster.php`",
        "",
        "Same names and nesting; these defaults differ for today's Twitch and this design:",
        "",
        "| key | original | here | why |",
        "|---|---|---|---|",
        *(f"| `{key}` | {old} | {new} | {why} |" for key, old, new, why in _DIFFERENCES),
        "",
        "New keys: `tmi.connection.port/transport/ca_file/ping_interval/ping_timeout/"
        "channels_per_connection`, `auto_scale.cooldown`, `throttle.auth`, `throttle.messages`, "
        "and the sections `redis`, `database`, `web`, `twitch`, `handlers`, `notifications`, "
        "`log`.",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
