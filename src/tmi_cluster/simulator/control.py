"""The simulator's HTTP control port: faults, traffic and accounting as JSON.

For tests and benchmarks that run the simulator in another process. Every route answers JSON;
bad input gets 400 and an unknown channel 404, each with ``{"error": "..."}``.

====== ======================================= ==============================================
method path                                     what
====== ======================================= ==============================================
GET    /state                                   rate, paused, channels and who is joined
GET    /connections                             every connection (login, channels, sent lines)
GET    /accounts/{login}                        an account's logins, joins, messages, violations
GET    /channels/{name}/deliveries              message ids sent into a channel, and to whom
POST   /accounts                                ``{"login", "token", "moderator_in": [...]}``
                                                (an account again: replaced)
POST   /channels/{name}/moderator               ``{"login", "moderator": true}``: (un)mod;
                                                unmodded, its EventSub subscriptions go
POST   /channels                                ``{"name"}``: make a channel exist
POST   /channels/{name}/suspend                 ``{"suspended": true}``
POST   /channels/{name}/ban                     ``{"login", "banned": true}``
POST   /channels/{name}/kick                    ``{"login": null}``: a server-side PART
POST   /traffic                                 ``{"rate"}`` and/or ``{"paused"}``
POST   /generate                                ``{"count", "channel"}``: lines now
POST   /shared-chat                             ``{"kind", "channels", "host"}``: EventSub's
                                                ``channel.shared_chat.<kind>`` notifications
                                                (``host``: one of ``channels``, the first by
                                                default)
POST   /faults/reconnect                        ``{"connections": [ids] or null, "close_after_s"}``
POST   /faults/drop                             ``{"connections"}``
POST   /faults/stall                            ``{"connections", "stalled": true}``
POST   /faults/hold                             ``{"connections", "held": true}``: a lagging link
====== ======================================= ==============================================

It also serves Twitch's OAuth server and users endpoint (``/oauth2/...``, ``/helix/users``;
:mod:`tmi_cluster.simulator.oauth`), for the invite screen.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tmi_cluster.errors import InvalidChannelError
from tmi_cluster.logins import normalise_login
from tmi_cluster.simulator.conduits import helix_routes
from tmi_cluster.simulator.helixchat import chat_routes
from tmi_cluster.simulator.oauth import oauth_routes

if TYPE_CHECKING:
    from tmi_cluster.simulator.server import ChatSimulator

__all__ = ["ControlServer", "control_app"]

_Handler = Callable[[Request], Awaitable[JSONResponse]]


class _BadRequestError(Exception):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise _BadRequestError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise _BadRequestError("the body must be a JSON object")
    return data


def _field(
    data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    if name not in data:
        if default is ...:
            raise _BadRequestError(f"'{name}' is missing")
        return default
    value = data[name]
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise _BadRequestError(f"'{name}' has the wrong type")
    return value


def _connections(data: dict[str, Any]) -> list[int] | None:
    value = data.get("connections")
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise _BadRequestError("'connections' must be a list of connection ids or null")
    return value


def _guarded(handler: Callable[[Request], Awaitable[Any]]) -> _Handler:
    """A route answering JSON: the handler's result, or 400/404 with the error."""

    async def run(request: Request) -> JSONResponse:
        try:
            result = await handler(request)
        except (_BadRequestError, InvalidChannelError) as exc:
            return _error(400, str(exc))
        except KeyError as exc:
            return _error(404, f"unknown channel {exc.args[0]!r}")
        return JSONResponse(result if result is not None else {"ok": True})

    return run


class _Routes:
    """The handlers of the control port, each reading and changing one simulator."""

    def __init__(self, sim: ChatSimulator) -> None:
        self.sim = sim

    async def state(self, _: Request) -> Any:
        sim = self.sim
        return {
            "rate": sim.rate,
            "paused": sim.paused,
            "port": sim.port,
            "tls_port": sim.tls_port,
            "websocket_port": sim.websocket_port,
            "channels": {name: list(sim.joined(name)) for name in sim.channel_names()},
        }

    async def connections(self, _: Request) -> Any:
        return [
            {
                **asdict(c),
                "channels": sorted(c.channels),
                "capabilities": sorted(c.capabilities),
                "sent": list(c.sent),
            }
            for c in self.sim.connections()
        ]

    async def account(self, request: Request) -> Any:
        login = normalise_login(request.path_params["login"])
        found = asdict(self.sim.account(login))
        with contextlib.suppress(KeyError):  # a login that never had an account: no list
            found["moderator_in"] = self.sim.moderator_in(login)
        return found

    async def deliveries(self, request: Request) -> Any:
        name = normalise_login(request.path_params["name"])
        self.sim.joined(name)  # KeyError: 404
        return [
            {"message_id": d.message_id, "connections": list(d.connections)}
            for d in self.sim.deliveries(name)
        ]

    async def add_account(self, request: Request) -> Any:
        data = await _body(request)
        moderator = _field(data, "moderator_in", list, [])
        if not all(isinstance(c, str) for c in moderator):
            raise _BadRequestError("'moderator_in' must be a list of channel names")
        self.sim.add_account(
            normalise_login(_field(data, "login", str)),
            _field(data, "token", str),
            moderator_in=[normalise_login(c) for c in moderator],
        )

    async def moderator(self, request: Request) -> Any:
        data = await _body(request)
        name = normalise_login(request.path_params["name"])
        self.sim.joined(name)  # KeyError: 404
        login = normalise_login(_field(data, "login", str))
        moderator = _field(data, "moderator", bool, True)
        try:
            self.sim.moderate(login, name, moderator)
        except KeyError:
            raise _BadRequestError(f"no account {login!r} (POST /accounts first)") from None

    async def add_channel(self, request: Request) -> Any:
        self.sim.add_channel(normalise_login(_field(await _body(request), "name", str)))

    async def suspend(self, request: Request) -> Any:
        data = await _body(request)
        name = normalise_login(request.path_params["name"])
        self.sim.suspend(name, _field(data, "suspended", bool, True))

    async def ban(self, request: Request) -> Any:
        data = await _body(request)
        name = normalise_login(request.path_params["name"])
        login = normalise_login(_field(data, "login", str))
        self.sim.ban(login, name, _field(data, "banned", bool, True))

    async def kick(self, request: Request) -> Any:
        data = await _body(request)
        name = normalise_login(request.path_params["name"])
        login = data.get("login")
        if login is not None:
            login = normalise_login(_field(data, "login", str))
        return {"parted": self.sim.kick(name, login)}

    async def traffic(self, request: Request) -> Any:
        data = await _body(request)
        if "rate" in data:
            rate = _field(data, "rate", (int, float))
            if rate < 0:
                raise _BadRequestError("'rate' must be >= 0")
            self.sim.set_rate(float(rate))
        if "paused" in data:
            if _field(data, "paused", bool):
                self.sim.pause()
            else:
                self.sim.resume()
        return await self.state(request)

    async def generate(self, request: Request) -> Any:
        data = await _body(request)
        count = _field(data, "count", int, 1)
        if not 0 < count <= 100_000:
            raise _BadRequestError("'count' must be 1 to 100000")
        channel = None
        if data.get("channel") is not None:
            channel = normalise_login(_field(data, "channel", str))
            self.sim.joined(channel)  # KeyError: 404
        lines = self.sim.generate(count, channel)
        return [
            {"channel": line.channel, "message_id": line.message_id, "command": line.command}
            for line in lines
        ]

    async def shared_chat(self, request: Request) -> Any:
        data = await _body(request)
        kind = _field(data, "kind", str)
        if kind not in ("begin", "update", "end"):
            raise _BadRequestError("'kind' must be 'begin', 'update' or 'end'")
        raw = _field(data, "channels", list)
        if not raw or not all(isinstance(c, str) for c in raw):
            raise _BadRequestError("'channels' must be a list of one or more channel names")
        channels = [normalise_login(c) for c in raw]
        if len(set(channels)) != len(channels):
            raise _BadRequestError("'channels' names a channel twice")
        host = normalise_login(_field(data, "host", str, channels[0]))
        if host not in channels:
            raise _BadRequestError("'host' must be one of 'channels' (the host takes part)")
        for channel in channels:
            self.sim.joined(channel)  # KeyError: 404
        return {"sent": self.sim.conduits.share_chat(kind, channels, host)}

    async def reconnect(self, request: Request) -> Any:
        data = await _body(request)
        delay = _field(data, "close_after_s", (int, float), 30.0)
        self.sim.reconnect(_connections(data), close_after_s=float(delay))

    async def drop(self, request: Request) -> Any:
        self.sim.drop(_connections(await _body(request)))

    async def stall(self, request: Request) -> Any:
        data = await _body(request)
        self.sim.stall(_connections(data), _field(data, "stalled", bool, True))

    async def hold(self, request: Request) -> Any:
        data = await _body(request)
        self.sim.hold(_connections(data), _field(data, "held", bool, True))


def control_app(sim: ChatSimulator) -> Starlette:
    """The ASGI app of the control port for ``sim``."""
    routes = _Routes(sim)
    get = [
        ("/state", routes.state),
        ("/connections", routes.connections),
        ("/accounts/{login}", routes.account),
        ("/channels/{name}/deliveries", routes.deliveries),
    ]
    post = [
        ("/accounts", routes.add_account),
        ("/channels", routes.add_channel),
        ("/channels/{name}/suspend", routes.suspend),
        ("/channels/{name}/ban", routes.ban),
        ("/channels/{name}/kick", routes.kick),
        ("/channels/{name}/moderator", routes.moderator),
        ("/traffic", routes.traffic),
        ("/generate", routes.generate),
        ("/shared-chat", routes.shared_chat),
        ("/faults/reconnect", routes.reconnect),
        ("/faults/drop", routes.drop),
        ("/faults/stall", routes.stall),
        ("/faults/hold", routes.hold),
    ]
    return Starlette(
        routes=[Route(path, _guarded(handler)) for path, handler in get]
        + [Route(path, _guarded(handler), methods=["POST"]) for path, handler in post]
        + oauth_routes(sim.oauth)
        + helix_routes(sim.conduits, sim.oauth.app_client)
        + chat_routes(sim)
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside an event loop it does not own: the host program keeps its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ControlServer:
    """The control port of one simulator, served by uvicorn on the simulator's event loop."""

    def __init__(self, sim: ChatSimulator, host: str, port: int) -> None:
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit it: a response's head and body written apart are not
        # held back for the client's delayed ACK (40 ms per request on a kept-alive connection)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind((host, port))
        self._socket.listen(128)
        self._socket.setblocking(False)
        #: The port it listens on (known at once: the socket is bound before serving).
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            control_app(sim), log_level="warning", lifespan="off", access_log=False
        )
        self._server = _EmbeddedServer(config)

    async def serve(self) -> None:
        """Serve until :meth:`stop`."""
        await self._server.serve(sockets=[self._socket])

    def stop(self) -> None:
        """Ask the server to finish; :meth:`serve` returns soon after."""
        self._server.should_exit = True

    def close_socket(self) -> None:
        """Release the listening socket (after :meth:`serve` returned)."""
        self._socket.close()
