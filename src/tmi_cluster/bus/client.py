"""Opening Redis connections, synchronous and asyncio, and translating redis-py's errors.

Every process of the cluster reaches Redis through :func:`connect` or :func:`connect_async`.
With ``redis.url`` set, that server is used; with it empty, the host's private server started by
the supervisor (see :mod:`tmi_cluster.embedded`) is found through its state file, and
:class:`~tmi_cluster.errors.EmbeddedRedisError` says so when none runs.

Errors of redis-py (and of the sockets under it) are translated at this boundary into
:class:`~tmi_cluster.errors.RedisUnavailableError` by :func:`translate_errors` (the URL shown
password-masked) or :func:`translated` (a description of the server), with the original kept
as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import redis
import redis.asyncio
import redis.exceptions

from tmi_cluster.config import Settings, mask_url
from tmi_cluster.errors import EmbeddedRedisError, RedisUnavailableError

__all__ = [
    "BLOCK_CAP_S",
    "MAX_CONNECTIONS",
    "POOL_WAIT_S",
    "AsyncRedis",
    "block_ms",
    "close_client",
    "connect",
    "connect_async",
    "describe_client",
    "ping",
    "refused_password",
    "resolve_url",
    "translate_errors",
    "translated",
]

log = logging.getLogger(__name__)

#: The asyncio client's type, for the annotations of code outside the bus (which never imports
#: redis itself).
AsyncRedis = redis.asyncio.Redis

_CONNECT_TIMEOUT_S = 5.0
#: Connections of one asyncio client, at most.
MAX_CONNECTIONS = 64
#: Seconds a command waits for a free connection of its client before it fails.
POOL_WAIT_S = 20.0
#: A blocking read waits at most this long (under redis-py's default socket timeout of 5 s).
BLOCK_CAP_S = 2.0


def block_ms(timeout_s: float) -> int:
    """Milliseconds for a blocking read's BLOCK: at least 1 (0 would wait for ever), at most
    :data:`BLOCK_CAP_S`."""
    return max(1, int(min(timeout_s, BLOCK_CAP_S) * 1000))


def resolve_url(settings: Settings) -> str:
    """The Redis URL to use: ``redis.url``, else the running embedded server's."""
    if settings.redis.url:
        return settings.redis.url
    # Imported here: psutil and the server's management cost every command ~10 ms at start,
    # and only a cluster without redis.url needs them.
    from tmi_cluster.embedded import find_embedded  # noqa: PLC0415

    state = find_embedded(settings.redis.embedded_dir)
    if state is None:
        raise EmbeddedRedisError(
            f"no embedded Redis server runs for {settings.redis.embedded_dir}: start the cluster "
            "with 'tmi-cluster run' first, or set redis.url to a Redis server"
        )
    return state.url


def connect(
    settings: Settings, *, url: str | None = None, name: str = "tmi-cluster"
) -> redis.Redis:
    """A synchronous client (bytes in, bytes out). The caller closes it."""
    return redis.Redis.from_url(
        url or resolve_url(settings),
        socket_connect_timeout=_CONNECT_TIMEOUT_S,
        health_check_interval=30,
        client_name=name,
    )


def connect_async(
    settings: Settings, *, url: str | None = None, name: str = "tmi-cluster"
) -> redis.asyncio.Redis:
    """An asyncio client (bytes in, bytes out). The caller awaits ``aclose()``.

    At most :data:`MAX_CONNECTIONS` connections; a command beyond them waits for a free one
    (up to :data:`POOL_WAIT_S`) rather than fail: hundreds of sends under way at once must not
    look like an outage of Redis."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url or resolve_url(settings),
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=_CONNECT_TIMEOUT_S,
        health_check_interval=30,
        client_name=name,
    )
    return redis.asyncio.Redis.from_pool(pool)


def refused_password(error: RedisUnavailableError) -> bool:
    """Whether ``error`` is Redis refusing the password (waiting would not help)."""
    return isinstance(error.__cause__, redis.exceptions.AuthenticationError)


async def ping(client: redis.asyncio.Redis) -> None:
    """RedisUnavailableError (naming the server) unless Redis answers."""
    with translated(describe_client(client)):
        await client.ping()


async def close_client(client: redis.asyncio.Redis) -> None:
    """Close ``client``'s connections; a server that is gone (its sockets already broken) is
    logged at debug level, not raised: closing is the last thing a process does with it."""
    try:
        await client.aclose()
    except (redis.exceptions.RedisError, OSError) as error:
        log.debug("closing a Redis client of %s: %s", describe_client(client), error)


def describe_client(client: redis.asyncio.Redis | redis.Redis) -> str:
    """``host:port`` (or the socket path) of a client's server, for messages; never a secret."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextlib.contextmanager
def translated(where: str) -> Iterator[None]:
    """Raise redis-py's errors (and socket errors) as RedisUnavailableError naming ``where``."""
    try:
        yield
    except redis.exceptions.AuthenticationError as exc:
        raise RedisUnavailableError(f"Redis at {where} refused the password") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        reason = str(exc) or exc.__class__.__name__
        raise RedisUnavailableError(f"cannot reach Redis at {where}: {reason}") from exc
    except redis.exceptions.RedisError as exc:
        raise RedisUnavailableError(f"Redis at {where} answered an error: {exc}") from exc


def translate_errors(url: str) -> contextlib.AbstractContextManager[None]:
    """Raise redis-py's connection and response errors as RedisUnavailableError, the URL shown
    password-masked."""
    return translated(mask_url(url))
