"""Loading the settings: defaults, then a TOML file, then ``TMI_CLUSTER_*`` variables.

Every problem becomes one line of :class:`~tmi_cluster.errors.ConfigError` naming the key, where
its value came from (file and line, or variable) and what is expected.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    SecretStr,
    TypeAdapter,
    ValidationError,
)

from tmi_cluster.config.model import SECRET_KEYS, URL_KEYS, Settings
from tmi_cluster.config.urls import mask_url
from tmi_cluster.errors import ConfigError

__all__ = ["CONFIG_FILE_NAME", "ENV_PREFIX", "Source", "load_settings", "settings_json"]

CONFIG_FILE_NAME = "tmi-cluster.toml"
ENV_PREFIX = "TMI_CLUSTER_"
#: Environment variables under ``TMI_CLUSTER_`` that are not settings.
RESERVED_ENV = frozenset({"TMI_CLUSTER_CONFIG"})
#: Prefixes of variables under ``TMI_CLUSTER_`` that are not settings (the test suite's).
RESERVED_ENV_PREFIXES = ("TMI_CLUSTER_TEST_",)
#: Keys of the original that have a new home here, with the hint shown when one is used.
RENAMED_KEYS = {
    "use": "the original's Redis connection name is replaced by redis.url",
}


@dataclass(frozen=True)
class Source:
    """Where one value came from: ``file`` (with its line when found) or ``env``."""

    kind: Literal["file", "env"]
    name: str
    line: int | None = None

    def __str__(self) -> str:
        if self.kind == "env":
            return f"environment variable {self.name}"
        return f"{self.name}, line {self.line}" if self.line else self.name


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Settings:
    """Read the settings: defaults, then the TOML file, then ``TMI_CLUSTER_*`` variables.

    ``config`` names the file (else ``$TMI_CLUSTER_CONFIG``, else ``./tmi-cluster.toml`` when it
    exists). ``environ`` defaults to ``os.environ``, ``cwd`` to the current folder. Raises
    :class:`ConfigError` naming the key, source and expectation of each bad value.
    """
    env = os.environ if environ is None else environ
    here = Path(cwd) if cwd is not None else Path.cwd()
    path = _config_path(config, env, here)
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], Source] = {}
    if path is not None:
        data, sources = _read_file(path)
    _apply_env(env, data, sources)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, sources)) from None
    base = path.parent if path is not None else here
    settings = _resolve_paths(settings, base.resolve())
    settings._config_file = path.resolve() if path is not None else None
    return settings


def _config_path(
    config: str | os.PathLike[str] | None, env: Mapping[str, str], here: Path
) -> Path | None:
    if config is not None:
        return here / Path(config)
    if env.get("TMI_CLUSTER_CONFIG"):
        return here / Path(env["TMI_CLUSTER_CONFIG"])
    default = here / CONFIG_FILE_NAME
    return default if default.is_file() else None


def _read_file(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], Source]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"{path}: cannot read the configuration file: {reason}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the configuration file is not UTF-8 text (byte {exc.start})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    lines = _key_lines(text)
    sources = {key: Source("file", str(path), lines.get(key)) for key in _leaf_paths(data)}
    return data, sources


_HEADER = re.compile(r"^\s*\[\[?([^\[\]]+)\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(
    r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_MULTILINE = re.compile(r'"""|\'\'\'')


def _split_dotted(key: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_\-]+)', key)
    return tuple(next(p for p in part if p) if any(part) else "" for part in parts)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path assigned in a TOML text to its 1-based line (a best effort)."""
    table: tuple[str, ...] = ()
    lines: dict[tuple[str, ...], int] = {}
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            in_string = len(_MULTILINE.findall(line)) % 2 == 0
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_dotted(header.group(1))
            lines.setdefault(table, number)
            continue
        assign = _ASSIGN.match(line)
        if assign:
            lines.setdefault(table + _split_dotted(assign.group(1)), number)
            in_string = len(_MULTILINE.findall(line)) % 2 == 1
    return lines


def _leaf_paths(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, (*prefix, key))


def _apply_env(
    env: Mapping[str, str], data: dict[str, Any], sources: dict[tuple[str, ...], Source]
) -> None:
    problems: list[str] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        if name.startswith(RESERVED_ENV_PREFIXES):
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        source = Source("env", name)
        try:
            annotation = _field_annotation(path)
            value = _coerce(annotation, env[name])
        except ValueError as exc:
            problems.append(f"{source}: {'.'.join(path)}: {exc}")
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        sources[path] = source
    if problems:
        raise ConfigError(problems)


def _field_annotation(path: tuple[str, ...]) -> Any:
    model: type[BaseModel] = Settings
    for depth, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            raise ValueError(_unknown_key(path[: depth + 1], list(fields)))
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if depth == len(path) - 1:
                raise ValueError(
                    "is a section; set its keys, for example " + _example_key(path, annotation)
                )
            model = annotation
            continue
        if depth != len(path) - 1:
            raise ValueError(_unknown_key(path, []))
        return annotation
    raise ValueError("is empty")  # pragma: no cover - split() never yields an empty tuple


def _example_key(path: tuple[str, ...], model: type[BaseModel]) -> str:
    first = next(iter(model.model_fields))
    return ENV_PREFIX + "__".join((*path, first)).upper()


def _coerce(annotation: Any, raw: str) -> Any:
    """Read an environment string as ``annotation`` (lax: "true", "70", JSON for lists)."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    text = raw
    origin = getattr(annotation, "__origin__", None)
    try:
        if origin in (list, dict):
            return adapter.validate_json(text)
        if annotation is SecretStr:
            return text
        return adapter.validate_python(text, strict=False)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(_expected(str(error["msg"]))) from None


def _unknown_key(path: tuple[str, ...], siblings: list[str]) -> str:
    key = ".".join(path)
    if key in RENAMED_KEYS:
        return f"unknown key: {RENAMED_KEYS[key]}"
    match = difflib.get_close_matches(path[-1], siblings, n=1)
    hint = f"; did you mean '{'.'.join((*path[:-1], match[0]))}'?" if match else ""
    return "unknown key" + hint


def _expected(message: str) -> str:
    for prefix in ("Value error, ", "Input should be "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            return message if prefix == "Value error, " else "expected " + message
    return message[:1].lower() + message[1:]


def _show(key: str, value: Any) -> str:
    if key in SECRET_KEYS:
        return "<secret>"
    if key in URL_KEYS and isinstance(value, str):
        return repr(mask_url(value))
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems(exc: ValidationError, sources: Mapping[tuple[str, ...], Source]) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc)
        source = next(
            (sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), None
        )
        where = f"{source}: " if source else ""
        if error["type"] == "extra_forbidden":
            siblings = list(_model_at(loc[:-1]).model_fields)
            problems.append(f"{where}{key}: {_unknown_key(loc, siblings)}")
            continue
        if error["type"] == "model_type" or error["type"] == "dict_type":
            problems.append(
                f"{where}{key}: expected a table of keys, got {_show(key, error['input'])}"
            )
            continue
        detail = _expected(str(error["msg"]))
        # Our own validators describe the value in their message; URLs are shown masked.
        shows_input = bool(loc) and (error["type"] != "value_error" or key in URL_KEYS)
        got = f", got {_show(key, error['input'])}" if shows_input else ""
        problems.append(f"{where}{key}: {detail}{got}")
    return problems


def _model_at(path: tuple[str, ...]) -> type[BaseModel]:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Make the SQLite file and the embedded Redis folder absolute, relative to ``base``."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - SQLAlchemy loads in 0.3 s

    url = make_url(settings.database.url)
    database = settings.database
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_absolute():
        absolute = url.set(database=str(base / url.database))
        database = database.model_copy(
            update={"url": absolute.render_as_string(hide_password=False)}
        )
    redis = settings.redis
    if not Path(redis.embedded_dir).is_absolute():
        redis = redis.model_copy(update={"embedded_dir": str(base / redis.embedded_dir)})
    return settings.model_copy(update={"database": database, "redis": redis})


def settings_json(settings: Settings) -> str:
    """The settings as JSON with every secret masked (for ``features --json`` and logs)."""
    data = settings.model_dump(mode="json")
    data["redis"]["url"] = mask_url(settings.redis.url)
    data["database"]["url"] = mask_url(settings.database.url)
    data["tmi"]["identity"]["password"] = "***" if settings.tmi.identity.token else ""
    data["web"]["token"] = "***" if settings.web.token.get_secret_value() else ""
    return json.dumps(data, indent=2, sort_keys=True)
