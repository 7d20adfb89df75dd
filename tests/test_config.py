"""Settings: defaults, file, environment, and an exact, one-line error for every bad value."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tmi_cluster.config import (
    RESERVED_ENV,
    Settings,
    is_reserved_env,
    load_settings,
    mask_url,
    settings_json,
)
from tmi_cluster.errors import ConfigError

Make = Callable[..., Settings]

# Every key of the original's config/tmi-cluster.php that keeps its meaning here.
ORIGINAL_KEYS = [
    "prefix",
    "path",
    "domain",
    "middleware",
    "fast_termination",
    "memory_limit",
    "tmi.identity.username",
    "tmi.identity.password",
    "tmi.connection.secure",
    "tmi.connection.server",
    "tmi.connection.reconnect",
    "tmi.connection.rejoin",
    "tmi.options.debug",
    "supervisor.stale",
    "process.stale",
    "process.timeout",
    "process.memory",
    "process.periodic_timer",
    "auto_scale.restore",
    "auto_scale.processes.min",
    "auto_scale.processes.max",
    "auto_scale.thresholds.channels",
    "auto_scale.thresholds.scale_in",
    "auto_scale.thresholds.scale_out",
    "throttle.join.allow",
    "throttle.join.every",
    "channel_manager.use",
    "channel_manager.auto_cleanup.enabled",
    "channel_manager.auto_cleanup.interval",
    "channel_manager.auto_cleanup.max_delay",
    "channel_manager.channel.restrict_messages",
    "channel_manager.channel.stale",
]


def _get(settings: Settings, key: str) -> object:
    value: object = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("key", ORIGINAL_KEYS)
def test_every_original_key_exists_under_its_name(key: str) -> None:
    _get(Settings(), key)


def test_defaults_follow_the_original_where_they_still_make_sense(make_settings: Make) -> None:
    settings = make_settings()
    assert settings.prefix == "tmi-cluster:"
    assert settings.auto_scale.processes.min == 2
    assert settings.auto_scale.processes.max == 25
    assert settings.auto_scale.thresholds.channels == 50
    assert settings.auto_scale.thresholds.scale_in == 50
    assert settings.auto_scale.thresholds.scale_out == 70
    assert settings.channel_manager.use == "dummy"
    assert settings.channel_manager.channel.stale == 168
    assert settings.throttle.join.allow == 20  # today's Twitch, not the verified 2000
    assert settings.tmi.identity.anonymous
    assert settings.config_file is None
    assert settings.embedded_redis


def test_file_values_are_read_and_relative_paths_resolved(
    make_settings: Make, tmp_path: Path
) -> None:
    settings = make_settings(
        """
prefix = "bot:"
[tmi.identity]
username = "MyBot"
password = "oauth:abc"
[auto_scale.thresholds]
scale_out = 80
[database]
url = "sqlite:///data/bot.db"
"""
    )
    assert settings.prefix == "bot:"
    assert settings.tmi.identity.username == "mybot"
    assert settings.tmi.identity.token == "abc"
    assert settings.auto_scale.thresholds.scale_out == 80
    assert settings.database.url == f"sqlite:///{tmp_path}/data/bot.db"
    assert settings.redis.embedded_dir == str(tmp_path / ".tmi-cluster")
    assert settings.config_file == tmp_path / "tmi-cluster.toml"


def test_environment_overrides_the_file(make_settings: Make) -> None:
    settings = make_settings(
        "[redis]\nurl = 'redis://file:6379/0'\n",
        {
            "TMI_CLUSTER_REDIS__URL": "redis://env:6379/1",
            "TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__SCALE_OUT": "75",
            "TMI_CLUSTER_TMI__CONNECTION__SECURE": "false",
            "TMI_CLUSTER_HANDLERS__MODULES": '["app.handlers:Bot"]',
            "TMI_CLUSTER_TMI__CONNECTION__SERVER": "127.0.0.1",
            "TMI_CLUSTER_CONFIG": "ignored-here",
            "TMI_CLUSTER_TEST_DATABASE_URL": "not a setting",
        },
    )
    assert settings.redis.url == "redis://env:6379/1"
    assert settings.auto_scale.thresholds.scale_out == 75
    assert settings.tmi.connection.secure is False
    assert settings.tmi.connection.effective_port == 6667
    assert settings.handlers.modules == ["app.handlers:Bot"]
    assert settings.tmi.connection.server == "127.0.0.1"


def test_config_file_from_variable(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('prefix = "x:"\n')
    settings = load_settings(environ={"TMI_CLUSTER_CONFIG": str(path)}, cwd=tmp_path)
    assert settings.prefix == "x:"
    assert settings.config_file == path


def test_config_file_in_current_folder_is_found(tmp_path: Path) -> None:
    (tmp_path / "tmi-cluster.toml").write_text('prefix = "here:"\n')
    assert load_settings(environ={}, cwd=tmp_path).prefix == "here:"


def _error(make: Make, toml: str | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        make(toml, env)
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value.problems[0]


def test_unknown_key_names_key_file_line_and_suggestion(
    make_settings: Make, tmp_path: Path
) -> None:
    line = _error(make_settings, "prefix = 'a:'\n\n[tmi.conection]\nserver = 'x'\n")
    assert line == (
        f"{tmp_path / 'tmi-cluster.toml'}, line 3: tmi.conection: unknown key; "
        "did you mean 'tmi.connection'?"
    )


def test_unknown_nested_key_in_dotted_form(make_settings: Make) -> None:
    line = _error(make_settings, "[auto_scale]\nthresholds.scale_outt = 3\n")
    assert ", line 2: auto_scale.thresholds.scale_outt: unknown key" in line
    assert "did you mean 'auto_scale.thresholds.scale_out'" in line


def test_renamed_original_key_points_to_its_new_home(make_settings: Make) -> None:
    line = _error(make_settings, "use = 'default'\n")
    assert "line 1: use: unknown key" in line
    assert "redis.url" in line


def test_wrong_type_in_file(make_settings: Make) -> None:
    line = _error(make_settings, "[auto_scale.thresholds]\n\nscale_out = 'seventy'\n")
    assert line.endswith(
        "line 3: auto_scale.thresholds.scale_out: expected a valid number, got 'seventy'"
    )


def test_section_given_a_value_in_file(make_settings: Make) -> None:
    line = _error(make_settings, "tmi = 3\n")
    assert "line 1: tmi: expected a table of keys, got 3" in line


def test_wrong_type_in_environment(make_settings: Make) -> None:
    line = _error(make_settings, None, {"TMI_CLUSTER_PROCESS__MEMORY": "lots"})
    assert line == (
        "environment variable TMI_CLUSTER_PROCESS__MEMORY: process.memory: "
        "expected a valid integer, got 'lots'"
    )


def test_unknown_environment_variable(make_settings: Make) -> None:
    line = _error(make_settings, None, {"TMI_CLUSTER_REDIS__URLL": "redis://x"})
    assert line == (
        "environment variable TMI_CLUSTER_REDIS__URLL: redis.urll: unknown key; "
        "did you mean 'redis.url'?"
    )


def test_environment_variable_naming_a_section(make_settings: Make) -> None:
    line = _error(make_settings, None, {"TMI_CLUSTER_REDIS": "redis://x"})
    assert "TMI_CLUSTER_REDIS: redis: is a section" in line
    assert "TMI_CLUSTER_REDIS__URL" in line


def test_bad_list_in_environment(make_settings: Make) -> None:
    line = _error(make_settings, None, {"TMI_CLUSTER_HANDLERS__MODULES": '["app.handlers"'})
    assert line == (
        "environment variable TMI_CLUSTER_HANDLERS__MODULES: handlers.modules: "
        """expected a list: a,b or JSON, for example ["a", "b"], got '["app.handlers"'"""
    )


@pytest.mark.parametrize(
    ("value", "modules"),
    [("app.handlers", ["app.handlers"]), ("a, b,", ["a", "b"]), ('["a", "b"]', ["a", "b"])],
)
def test_a_list_in_the_environment_is_comma_separated_or_json(
    make_settings: Make, value: str, modules: list[str]
) -> None:
    settings = make_settings(None, {"TMI_CLUSTER_HANDLERS__MODULES": value})
    assert settings.handlers.modules == modules


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("TMI_CLUSTER_REDIS_URL", "TMI_CLUSTER_REDIS__URL"),
        ("TMI_CLUSTER_TMI__IDENTITY_USERNAME", "TMI_CLUSTER_TMI__IDENTITY__USERNAME"),
        ("TMI_CLUSTER_AUTO_SCALE_PROCESSES_MIN", "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN"),
    ],
)
def test_one_underscore_between_levels_hints_two(
    make_settings: Make, name: str, meant: str
) -> None:
    line = _error(make_settings, None, {name: "1"})
    assert line.endswith(f"unknown key; did you mean {meant} (two underscores between levels)?")


def test_setting_names_are_matched_in_any_case_after_the_prefix(make_settings: Make) -> None:
    settings = make_settings(None, {"TMI_CLUSTER_redis__Url": "redis://elsewhere:6380/0"})
    assert settings.redis.url == "redis://elsewhere:6380/0"


@pytest.mark.parametrize(
    "name",
    [
        "TMI_CLUSTER_CONFIG",
        "TMI_CLUSTER_FUZZ",
        "TMI_CLUSTER_PURE_PYTHON",
        "TMI_CLUSTER_TEST_DATABASE_URL",
        "TMI_CLUSTER_TEST_ANYTHING",
    ],
)
def test_reserved_variables_are_not_settings(tmp_path: Path, name: str) -> None:
    value = str(tmp_path / "t.toml") if name == "TMI_CLUSTER_CONFIG" else "nightly"
    if name == "TMI_CLUSTER_CONFIG":
        (tmp_path / "t.toml").write_text("prefix = 'x:'\n")
    assert is_reserved_env(name)
    settings = load_settings(environ={name: value, "TMI_CLUSTER_PREFIX": "env:"}, cwd=tmp_path)
    assert settings.prefix == "env:"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("TMI_CLUSTER_FUZ", "fuz: unknown key; did you mean TMI_CLUSTER_FUZZ (not a setting)?"),
        ("TMI_CLUSTER_PREFX", "prefx: unknown key; did you mean 'prefix'?"),
        ("TMI_CLUSTER_TESTS", "tests: unknown key"),
        ("TMI_CLUSTER_CONFIGS", "configs: unknown key; did you mean TMI_CLUSTER_CONFIG (not "),
    ],
)
def test_unknown_top_level_variable_is_still_an_error(
    make_settings: Make, name: str, shown: str
) -> None:
    assert not is_reserved_env(name)
    line = _error(make_settings, None, {name: "nightly"})
    assert line.startswith(f"environment variable {name}: {shown}")
    assert "nightly" not in line  # the value of an unknown name may be a mistyped secret


def test_no_settings_key_is_reserved() -> None:
    for section in Settings.model_fields:
        assert not is_reserved_env("TMI_CLUSTER_" + section.upper()), section
    assert {"CONFIG", "FUZZ", "PURE_PYTHON", "TEST_*"} <= RESERVED_ENV


def test_every_bad_variable_is_reported_with_its_value(make_settings: Make) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(
            "[process]\nmemory = 'big'\n",
            {
                "TMI_CLUSTER_WEB__PORT": "99999",
                "TMI_CLUSTER_PROCESS__STALE": "soon",
                "TMI_CLUSTER_TMI__CONNECTION__SECURE": "maybe",
                "TMI_CLUSTER_TMI__IDENTITY__USERNAME": "bad name",
                "TMI_CLUSTER_REDIS__URL": "http://user:hunter2@host:1/0",
                "TMI_CLUSTER_REDIS__URLL": "x",
                "TMI_CLUSTER_FUZZ": "nightly",
            },
        )
    env = "environment variable TMI_CLUSTER_"
    assert caught.value.problems == [
        f"{caught.value.problems[0].split(', line')[0]}, line 2: process.memory: "
        "expected a valid integer, got 'big'",
        f"{env}PROCESS__STALE: process.stale: expected a valid number, got 'soon'",
        f"{env}REDIS__URL: redis.url: expected a Redis URL such as redis://127.0.0.1:6379/0, "
        "or empty for the embedded server, got 'http://user:***@host:1/0'",
        f"{env}REDIS__URLL: redis.urll: unknown key; did you mean 'redis.url'?",
        f"{env}TMI__CONNECTION__SECURE: tmi.connection.secure: expected true or false, got 'maybe'",
        f"{env}TMI__IDENTITY__USERNAME: tmi.identity.username: expected a Twitch login: "
        "1 to 25 letters, digits or underscores, got 'bad name'",
        f"{env}WEB__PORT: web.port: expected less than or equal to 65535, got 99999",
    ]
    assert caught.value.problems[0].endswith(
        "tmi-cluster.toml, line 2: process.memory: expected a valid integer, got 'big'"
    )


def test_broken_file_is_reported_with_the_variables(make_settings: Make) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings("[tmi\n", {"TMI_CLUSTER_PROCESS__MEMORY": "8"})
    first, second = caught.value.problems
    assert "invalid TOML" in first
    assert second == (
        "environment variable TMI_CLUSTER_PROCESS__MEMORY: process.memory: "
        "expected greater than or equal to 16, got 8"
    )


def test_secret_values_are_never_shown(make_settings: Make) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(
            "[web]\ntoken = 12345678\n[tmi.identity]\npassword = ['oauth:abcdefgh']\n",
            {"TMI_CLUSTER_TMI__IDENTITY__PASWORD": "oauth:zyxwvuts"},
        )
    text = str(caught.value)
    for secret in ("12345678", "abcdefgh", "zyxwvuts"):
        assert secret not in text
    assert "web.token: expected a valid string, got <secret>" in text
    assert "tmi.identity.password: expected a valid string, got <secret>" in text
    assert "tmi.identity.pasword: unknown key; did you mean 'tmi.identity.password'?" in text


def test_section_given_a_url_never_shows_its_password(make_settings: Make) -> None:
    line = _error(make_settings, "redis = 'redis://:hunter2@host:6379/0'\n")
    assert "hunter2" not in line
    assert "redis: expected a table of keys, got 'redis://:***@host:6379/0'" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:6379", "expected a Redis URL"),
        ("redis://", "the host is missing"),
        ("redis://host:99999/0", "expected a Redis URL"),
        ("redis://host:6379/zero", "the database must be a number"),
    ],
)
def test_bad_redis_url(make_settings: Make, url: str, expected: str) -> None:
    line = _error(make_settings, f"[redis]\nurl = '{url}'\n")
    assert "line 2: redis.url: " in line
    assert expected in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u@h/db", "database 'mysql' is not supported"),
        ("not a url", "expected sqlite:///FILE"),
        ("sqlite://", "in-memory SQLite"),
        ("postgresql://u@h", "the database name is missing"),
    ],
)
def test_bad_database_url(make_settings: Make, url: str, expected: str) -> None:
    line = _error(make_settings, None, {"TMI_CLUSTER_DATABASE__URL": url})
    assert line.startswith("environment variable TMI_CLUSTER_DATABASE__URL: database.url: ")
    assert expected in line


def test_bad_url_never_shows_its_password(make_settings: Make) -> None:
    line = _error(make_settings, "[redis]\nurl = 'http://user:hunter2@host:1/0'\n")
    assert "hunter2" not in line
    assert "user:***@host" in line


def test_secret_of_wrong_type_is_not_echoed(make_settings: Make) -> None:
    line = _error(make_settings, "[web]\ntoken = 12345678\n")
    assert "12345678" not in line
    assert "web.token" in line


def test_cross_field_rule_names_both_keys(make_settings: Make) -> None:
    line = _error(make_settings, "[auto_scale.processes]\nmin = 5\nmax = 2\n")
    assert "auto_scale.processes.min (5) must not exceed auto_scale.processes.max (2)" in line


def test_invalid_login(make_settings: Make) -> None:
    line = _error(make_settings, "[tmi.identity]\nusername = 'bad name!'\n")
    assert "line 2: tmi.identity.username: expected a Twitch login" in line


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "nope.toml", environ={})
    assert str(caught.value) == (
        f"{tmp_path / 'nope.toml'}: cannot read the configuration file: No such file or directory"
    )


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})  # a folder cannot be read as a file
    assert str(caught.value) == f"{tmp_path}: cannot read the configuration file: Is a directory"


def test_invalid_toml_names_the_line(make_settings: Make) -> None:
    line = _error(make_settings, "prefix = 'a'\n[tmi\n")
    assert "invalid TOML" in line
    assert "line 2" in line


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_bytes(b"prefix = '\xff'\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql+psycopg://u:pw@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_settings_json_masks_every_secret(make_settings: Make) -> None:
    settings = make_settings(
        None,
        {
            "TMI_CLUSTER_TMI__IDENTITY__USERNAME": "bot",
            "TMI_CLUSTER_TMI__IDENTITY__PASSWORD": "oauth:tok3n",
            "TMI_CLUSTER_WEB__TOKEN": "w3btoken",
            "TMI_CLUSTER_REDIS__URL": "redis://:redispw@h:1/0",
            "TMI_CLUSTER_DATABASE__URL": "postgresql://u:dbpw@h/db",
        },
    )
    text = settings_json(settings)
    for secret in ("tok3n", "w3btoken", "redispw", "dbpw"):
        assert secret not in text
    data = json.loads(text)
    assert data["tmi"]["identity"]["password"] == "***"
    assert data["database"]["url"] == "postgresql+psycopg://u:***@h/db"
    assert "tok3n" not in repr(settings)


def test_repr_of_settings_masks_url_passwords() -> None:
    settings = Settings.model_validate(
        {"redis": {"url": "redis://:pw123@h:1/0"}, "database": {"url": "postgresql://u:pw456@h/d"}}
    )
    text = repr(settings) + str(settings)
    assert "pw123" not in text
    assert "pw456" not in text
    assert "redis://:***@h:1/0" in text


@pytest.mark.parametrize("key", ["middleware", "handlers.modules"])
def test_import_paths_are_checked(make_settings: Make, key: str) -> None:
    section, _, name = key.rpartition(".")
    toml = (f"[{section}]\n" if section else "") + f"{name} = ['app.mw:make', 'not a path']\n"
    line = _error(make_settings, toml)
    assert f"{key}: expected 'package.module' or 'package.module:name', got 'not a path'" in line


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_duration_must_be_finite(make_settings: Callable[..., Settings], value: str) -> None:
    with pytest.raises(ConfigError, match="ping_interval: expected a finite number"):
        make_settings(None, {"TMI_CLUSTER_TMI__CONNECTION__PING_INTERVAL": value})


def test_a_token_with_a_line_break_is_refused_without_being_shown(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError, match="no spaces, line breaks") as caught:
        make_settings(None, {"TMI_CLUSTER_TMI__IDENTITY__PASSWORD": "oauth:x\r\nJOIN #evil"})
    assert "evil" not in str(caught.value)


@pytest.mark.parametrize("key", ["take", "block"])
def test_the_originals_join_queue_keys_are_refused_with_a_hint(
    make_settings: Make, key: str
) -> None:
    variable = _error(make_settings, None, {f"TMI_CLUSTER_THROTTLE__JOIN__{key.upper()}": "1"})
    assert "(remove this key)" in variable
    line = _error(make_settings, f"[throttle.join]\n{key} = 100\n")
    assert f"throttle.join.{key}: unknown key: the original's" in line
    assert "(remove this key)" in line


def test_the_originals_manager_class_points_to_its_name_here(make_settings: Make) -> None:
    original = "\\\\GhostZero\\\\TmiCluster\\\\Repositories\\\\DatabaseChannelManager"
    line = _error(make_settings, f'[channel_manager]\nuse = "{original}"\n')
    assert "the original's DatabaseChannelManager is 'database' or 'dummy' here" in line
    assert "use = 'database'" in line
