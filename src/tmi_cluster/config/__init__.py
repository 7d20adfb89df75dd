"""The settings model and its loader.

One typed, frozen model (:class:`Settings`) covers every key of the original's
``config/tmi-cluster.php`` under the same names and nesting, plus what this design adds
(``redis``, ``database``, ``web``, ``handlers``, ``log``). The reference with every key, its
default and its environment variable is ``docs/configuration.md``, generated from the model.

The package: :mod:`~tmi_cluster.config.model` (the sections and :class:`Settings`),
:mod:`~tmi_cluster.config.loader` (:func:`load_settings` and its errors) and
:mod:`~tmi_cluster.config.urls` (URL checks and masking); everything public is re-exported
here.

Where settings come from, the later winning:

1. the defaults below;
2. a TOML file: ``--config PATH``, else ``$TMI_CLUSTER_CONFIG``, else ``./tmi-cluster.toml`` when
   it exists;
3. environment variables ``TMI_CLUSTER_<SECTION>__<KEY>``, ``__`` between levels, for example
   ``TMI_CLUSTER_REDIS__URL`` or ``TMI_CLUSTER_AUTO_SCALE__THRESHOLDS__SCALE_OUT``. Values are
   read as the key's type (``true``/``false``, numbers; lists as JSON). Every ``TMI_CLUSTER_*``
   variable is a setting except the reserved names of :data:`RESERVED_ENV` (``CONFIG``,
   ``FUZZ``, ``PURE_PYTHON``, ``TEST_*``), which the project uses for other purposes; any other
   name that is no key is an error with the closest key.

Contract: :func:`load_settings` either returns valid settings or raises
:class:`~tmi_cluster.errors.ConfigError` listing every problem of the file and the variables at
once, each line naming the key, the value's source (file and line, or variable), the bad value
and what is expected. An unknown key is an error, never ignored. Secret
values (OAuth tokens, passwords in URLs) never appear in an error or in :func:`mask_url` output.

Relative paths (the SQLite file, the embedded Redis folder) are resolved against the folder of
the configuration file, or the current folder when there is none.
"""

from tmi_cluster.config.loader import (
    CONFIG_FILE_NAME,
    ENV_PREFIX,
    RESERVED_ENV,
    Source,
    is_reserved_env,
    load_settings,
    settings_json,
)
from tmi_cluster.config.model import SECRET_KEYS, URL_KEYS, Settings
from tmi_cluster.config.urls import check_redis_url, mask_url, normalise_database_url

__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_PREFIX",
    "RESERVED_ENV",
    "SECRET_KEYS",
    "URL_KEYS",
    "Settings",
    "Source",
    "check_redis_url",
    "is_reserved_env",
    "load_settings",
    "mask_url",
    "normalise_database_url",
    "settings_json",
]
