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

__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_PREFIX",
    "RESERVED_ENV",
    "Source",
    "is_reserved_env",
    "load_settings",
    "settings_json",
]

CONFIG_FILE_NAME = "tmi-cluster.toml"
ENV_PREFIX = "TMI_CLUSTER_"
#: Names after ``TMI_CLUSTER_`` that the project uses for other purposes than settings, ignored
#: by the loader: ``CONFIG`` (the configuration file), ``FUZZ`` (the fuzz tests' size),
#: ``PURE_PYTHON`` (install without the compiled parser) and ``TEST_*`` (the test suite's). A
#: trailing ``*`` matches any rest. No settings key may start with one of them (a test pins it).
RESERVED_ENV = frozenset({"CONFIG", "FUZZ", "PURE_PYTHON", "TEST_*"})
#: Keys of the original that have a new home here, with the hint shown when one is used.
RENAMED_KEYS = {
    "use": "the original's Redis connection name is replaced by redis.url",
    "throttle.join.take": "the original's rounds of a join queue are gone: every JOIN is paced "
    "by throttle.join.allow per throttle.join.every, shared by the cluster (remove this key)",
    "throttle.join.block": "the original's wait for budget before re-queueing is gone: a JOIN "
    "waits for throttle.join.allow per throttle.join.every by itself (remove this key)",
}


def is_reserved_env(name: str) -> bool:
    """True when ``name`` (a whole variable name, ``TMI_CLUSTER_...``) is reserved, not a setting.

    The rule: every ``TMI_CLUSTER_*`` variable is a setting (its first part after the prefix
    names a top-level key or section, ``__`` between levels) unless it is in
    :data:`RESERVED_ENV`; a variable that is neither is an error naming the closest key.
    """
    if not name.startswith(ENV_PREFIX):
        return False
    rest = name[len(ENV_PREFIX) :]
    return any(
        rest.startswith(entry[:-1]) if entry.endswith("*") else rest == entry
        for entry in RESERVED_ENV
    )


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

    @property
    def order(self) -> tuple[int, int, str]:
        """Sort key of problems: the file's in line order, then variables by name."""
        return (0, self.line or 0, "") if self.kind == "file" else (1, 0, self.name)


#: One problem: where it sorts (:attr:`Source.order`; unknown sources last) and its line.
_Problem = tuple[tuple[int, int, str], str]
_NO_SOURCE = (2, 0, "")


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Settings:
    """Read the settings: defaults, then the TOML file, then ``TMI_CLUSTER_*`` variables.

    ``config`` names the file (else ``$TMI_CLUSTER_CONFIG``, else ``./tmi-cluster.toml`` when it
    exists). ``environ`` defaults to ``os.environ``, ``cwd`` to the current folder. Raises
    :class:`ConfigError` listing every problem of the file and of the variables at once, each
    naming the key, its source, the bad value (secrets masked) and what is expected.
    """
    env = os.environ if environ is None else environ
    here = Path(cwd) if cwd is not None else Path.cwd()
    path = _config_path(config, env, here)
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], Source] = {}
    problems: list[_Problem] = []
    if path is not None:
        try:
            data, sources = _read_file(path)
        except ConfigError as error:  # reported with the variables' problems
            problems += [(Source("file", str(path)).order, line) for line in error.problems]
    problems += _apply_env(env, data, sources)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, sources)
    if problems:
        raise ConfigError([line for _, line in sorted(problems, key=lambda p: p[0])])
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
) -> list[_Problem]:
    """Merge the ``TMI_CLUSTER_*`` settings of ``env`` into ``data``; return every problem."""
    problems: list[_Problem] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or is_reserved_env(name):
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        key = ".".join(path)
        source = Source("env", name)
        try:
            annotation = _field_annotation(path)
        except ValueError as exc:  # the value is not shown: it may be a mistyped secret
            levels = _double_underscore_hint(path)
            text = f"unknown key{levels}" if levels else f"{exc}{_reserved_hint(path)}"
            problems.append((source.order, f"{source}: {key}: {text}"))
            continue
        try:
            value = _coerce(annotation, env[name])
        except ValueError as exc:
            problems.append((source.order, f"{source}: {key}: {exc}, got {_show(key, env[name])}"))
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        sources[path] = source
    return problems


def _double_underscore_hint(path: tuple[str, ...]) -> str:
    """A hint when single underscores stand where levels are parted by two
    (``TMI_CLUSTER_REDIS_URL`` for ``TMI_CLUSTER_REDIS__URL``)."""
    words = "_".join(path).split("_")
    if len(words) > 12:  # no settings key is that deep; 2**11 tries at most
        return ""
    for mask in range(1, 2 ** (len(words) - 1)):
        parts, current = [], words[0]
        for index, word in enumerate(words[1:]):
            if mask >> index & 1:
                parts.append(current)
                current = word
            else:
                current += "_" + word
        parts.append(current)
        try:
            _field_annotation(tuple(parts))
        except ValueError:
            continue
        name = ENV_PREFIX + "__".join(parts).upper()
        return f"; did you mean {name} (two underscores between levels)?"
    return ""


def _reserved_hint(path: tuple[str, ...]) -> str:
    """A hint when an unknown top-level variable looks like a reserved one (not a setting)."""
    if len(path) != 1 or difflib.get_close_matches(path[0], Settings.model_fields, n=1):
        return ""
    names = [entry.lower() for entry in RESERVED_ENV if not entry.endswith("*")]
    match = difflib.get_close_matches(path[0], names, n=1)
    return f"; did you mean {ENV_PREFIX}{match[0].upper()} (not a setting)?" if match else ""


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
    """Read an environment string as ``annotation`` (lax: "true", "70"; a list as JSON or as
    plain comma-separated values: ``a,b``)."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    origin = getattr(annotation, "__origin__", None)
    item = (getattr(annotation, "__args__", None) or (None,))[0]
    if origin is list and isinstance(item, type) and issubclass(item, BaseModel):
        # a list of tables (tmi.identities): the settings' own checks name each entry's keys
        try:
            tables = json.loads(raw)
        except ValueError:
            tables = None
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ValueError(
                'expected a JSON list of tables, for example [{"username": "...", '
                '"password": "..."}]'
            ) from None
        return tables
    try:
        if origin is list and raw.lstrip().startswith("["):
            return adapter.validate_json(raw)
        if origin is list:
            return adapter.validate_python([v.strip() for v in raw.split(",") if v.strip()])
        if annotation is SecretStr:
            return raw
        return adapter.validate_python(raw, strict=False)
    except ValidationError as exc:
        error = exc.errors()[0]
        if origin is list and error["type"] in ("json_invalid", "list_type"):
            raise ValueError('expected a list: a,b or JSON, for example ["a", "b"]') from None
        if error["type"] == "bool_parsing":
            raise ValueError("expected true or false") from None
        raise ValueError(_expected(str(error["msg"]))) from None


def _unknown_key(path: tuple[str, ...], siblings: list[str]) -> str:
    key = ".".join(path)
    if key in RENAMED_KEYS:
        return f"unknown key: {RENAMED_KEYS[key]}"
    match = difflib.get_close_matches(path[-1], siblings, n=1)
    hint = f"; did you mean '{'.'.join((*path[:-1], match[0]))}'?" if match else ""
    return "unknown key" + hint


def _expected(message: str) -> str:
    """Pydantic's message as what is expected (our validators' messages kept as written)."""
    if message.startswith("Value error, "):
        return message[len("Value error, ") :]
    if message.startswith("Input should be "):
        # "a valid integer, unable to parse string as an integer": the value is shown instead.
        return "expected " + message[len("Input should be ") :].partition(", unable to ")[0]
    return message[:1].lower() + message[1:]


def _show(key: str, value: Any) -> str:
    """``value`` as shown in a message: secrets hidden, passwords in URLs masked, shortened."""
    if key in SECRET_KEYS or key.endswith(".password") or isinstance(value, dict):
        return "<secret>"  # a table may hold a secret (tmi.identities' passwords)
    if isinstance(value, str) and (key in URL_KEYS or "@" in value):
        return repr(mask_url(value))
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems(exc: ValidationError, sources: Mapping[tuple[str, ...], Source]) -> list[_Problem]:
    problems: list[_Problem] = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc)
        source = next(
            (sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), None
        )
        where = f"{source}: " if source else ""
        order = source.order if source else _NO_SOURCE
        if error["type"] == "extra_forbidden":  # the value is not shown: it may be a secret
            siblings = list(_model_at(loc[:-1]).model_fields)
            problems.append((order, f"{where}{key}: {_unknown_key(loc, siblings)}"))
            continue
        if error["type"] == "model_type" or error["type"] == "dict_type":
            got = _show(key, error["input"])
            problems.append((order, f"{where}{key}: expected a table of keys, got {got}"))
            continue
        detail = _expected(str(error["msg"]))
        # A section's own rule names its keys and values itself; so do messages with "got".
        value = error["input"]
        shows_input = bool(loc) and not isinstance(value, Mapping) and ", got " not in detail
        got = f", got {_show(key, value)}" if shows_input else ""
        named = f"{key}: " if key else ""  # a rule of the whole names its keys itself
        problems.append((order, f"{where}{named}{detail}{got}"))
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
    for account in data["tmi"]["identities"]:
        account["password"] = "***"  # noqa: S105 (the mask, not a password)
    data["web"]["token"] = "***" if settings.web.token.get_secret_value() else ""
    data["web"]["password"] = "***" if settings.web.password.get_secret_value() else ""
    data["notifications"]["urls"] = ["***" for _ in settings.notifications.urls]
    return json.dumps(data, indent=2, sort_keys=True)
