"""The ASGI application of the web pages (:func:`create_app`); see :mod:`tmi_cluster.web`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tmi_cluster.cluster import admin
from tmi_cluster.config import Settings
from tmi_cluster.errors import ConfigError, StorageError
from tmi_cluster.web import metrics
from tmi_cluster.web.assets import asset, asset_response
from tmi_cluster.web.auth import Authorize, Credentials, RequireCredentials
from tmi_cluster.web.invite import Invite
from tmi_cluster.web.openapi import openapi
from tmi_cluster.web.view import ClusterView, Snapshot

__all__ = ["MAX_PER_PAGE", "MAX_SEARCH", "SecurityHeaders", "create_app"]

log = logging.getLogger(__name__)

#: The most channels one page of ``api/channels`` shows.
MAX_PER_PAGE = 500
#: The longest search text.
MAX_SEARCH = 100
#: The files of the dashboard, by name: media type.
_ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: Sent with every response: no framing, no sniffing, nothing but our own files and requests.
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
]


class _BadRequestError(ValueError):
    """A query parameter that is not what the endpoint takes (answered 400, naming it)."""


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() else low - 1
    if not low <= value <= high:
        raise _BadRequestError(f"{name} must be an integer from {low} to {high}")
    return value


def _matching(
    snapshot: Snapshot, search: str, states: frozenset[str]
) -> Sequence[admin.ChannelRow]:
    """The rows whose name or owner process holds ``search`` (lowercase), in one of
    ``states`` (any, when empty)."""
    rows: Sequence[admin.ChannelRow] = snapshot.channels
    if search:
        rows = [rows[index] for index in snapshot.search(search)]
    if states:
        rows = [row for row in rows if row.state in states]
    return rows


class _Pages:
    """The endpoints, around one :class:`ClusterView`."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view

    async def dashboard(self, request: Request) -> Response:
        return Response(asset("dashboard.html"), media_type="text/html; charset=utf-8")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        media_type = _ASSETS.get(name)
        if media_type is None:
            return JSONResponse({"error": f"no such file: {name}"}, status_code=404)
        return asset_response(name, media_type)

    async def statistics(self, request: Request) -> Response:
        return JSONResponse((await self.view.snapshot()).statistics())

    async def supervisors(self, request: Request) -> Response:
        return JSONResponse(dict((await self.view.snapshot()).listing))

    async def channels(self, request: Request) -> Response:
        search = request.query_params.get("search", "").strip().lower()
        if len(search) > MAX_SEARCH:
            raise _BadRequestError(f"search must be at most {MAX_SEARCH} characters")
        states = frozenset(s for s in request.query_params.getlist("state") if s)
        if not states <= set(admin.CHANNEL_STATES):
            raise _BadRequestError(f"state must be one of {', '.join(admin.CHANNEL_STATES)}")
        page = _int(request, "page", 1, 1, 1_000_000)
        per_page = _int(request, "per_page", 50, 1, MAX_PER_PAGE)
        snapshot = await self.view.snapshot()
        rows = await asyncio.to_thread(_matching, snapshot, search, states)
        start = (page - 1) * per_page
        live = snapshot.channels_live
        shown = rows[start : start + per_page]
        return JSONResponse(
            {
                "total": len(rows),
                "page": page,
                "per_page": per_page,
                "channels": [admin.channel_json(row, live=live) for row in shown],
                "warning": snapshot.channels_warning,
            }
        )

    async def metrics(self, request: Request) -> Response:
        snapshot = await self.view.snapshot()
        body = await asyncio.to_thread(metrics.render, snapshot)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi(request.scope.get("root_path", "")))

    async def health(self, request: Request) -> Response:
        try:
            snapshot = await self.view.snapshot()
        except StorageError:  # public: the reason without the database's address
            log.warning("the health check cannot read the database", exc_info=True)
            body = {"status": "down", "reason": "the database cannot be read"}
            return JSONResponse(body, status_code=503)
        if snapshot.status == "operational":
            return Response(status_code=204)
        return JSONResponse({"status": snapshot.status, "reason": snapshot.reason}, status_code=503)


async def _to_invite(request: Request) -> Response:
    """``{path}/invite``: the invite screen is ``{path}/invite/``."""
    return RedirectResponse(f"{request.scope.get('root_path', '')}/invite/", status_code=307)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _storage_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=503)


class SecurityHeaders:
    """ASGI middleware adding :data:`_SECURITY_HEADERS` to every HTTP response (each one
    only when the response has none of that name yet)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                # once, when the app is mounted in a site that adds them too
                headers += [h for h in _SECURITY_HEADERS if h[0] not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


def _factory(path: str) -> Callable[..., ASGIApp]:
    """``package.module:factory`` of ``settings.middleware``: called with the app, it returns
    the app wrapped (an ASGI middleware class is such a factory)."""
    module, _, name = path.partition(":")
    try:
        loaded: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"middleware: cannot import {module!r}: {exc}") from exc
    factory = getattr(loaded, name or "middleware", None)
    if not callable(factory):
        raise ConfigError(f"middleware: {path!r} names no callable (package.module:factory)")

    def wrapped(app: ASGIApp) -> ASGIApp:
        try:
            result = factory(app)
        except Exception as exc:
            raise ConfigError(f"middleware: {path!r} failed on the app: {exc!r}") from exc
        if not callable(result):
            raise ConfigError(f"middleware: {path!r} returned no ASGI app")
        return result  # type: ignore[no-any-return]

    return wrapped


def create_app(settings: Settings, *, authorize: Authorize | None = None) -> Starlette:
    """The web pages of the cluster of ``settings``, as an ASGI application to mount under
    ``settings.path`` (``tmi-cluster dashboard`` and ``web.enabled`` serve it there).

    ``authorize(request) -> bool`` (sync or async), when given, is asked for each request that
    shows neither the Basic credentials nor the token. ``app.state.credentials`` holds the
    credentials (:attr:`~tmi_cluster.web.auth.Credentials.generated` tells a password made
    for this run, for the caller to show once), ``app.state.view`` the cluster's view; its
    Redis client and store close with the app's lifespan (or ``await app.state.view.aclose()``
    in a host that does not run a mounted app's lifespan)."""
    view = ClusterView(settings)
    invite = Invite(settings)
    pages = _Pages(view)
    credentials = Credentials.from_settings(settings, authorize)
    protected = Starlette(
        routes=[
            Route("/", pages.dashboard, methods=["GET"]),
            Route("/static/{name}", pages.asset, methods=["GET"]),
            Route("/api/statistics", pages.statistics, methods=["GET"]),
            Route("/api/supervisors", pages.supervisors, methods=["GET"]),
            Route("/api/channels", pages.channels, methods=["GET"]),
            Route("/metrics", pages.metrics, methods=["GET"]),
            Route("/openapi.json", pages.openapi, methods=["GET"]),
        ],
        middleware=[
            *(
                [Middleware(TrustedHostMiddleware, allowed_hosts=[settings.domain])]
                if settings.domain
                else []
            ),
            Middleware(RequireCredentials, credentials=credentials),
        ],
        exception_handlers={_BadRequestError: _bad_request, StorageError: _storage_error},
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await invite.aclose()
            await view.aclose()

    # the host's middleware (settings.middleware, outermost first) around ours
    middleware = [Middleware(_factory(path)) for path in settings.middleware]
    middleware.append(Middleware(SecurityHeaders))
    app = Starlette(
        routes=[
            Route("/health", pages.health, methods=["GET"]),
            Route("/invite", _to_invite, methods=["GET"]),
            Mount("/invite", app=invite.app()),
            Mount("/", app=protected),
        ],
        middleware=middleware,
        exception_handlers={StorageError: _storage_error},
        lifespan=lifespan,
    )
    app.state.credentials = credentials
    app.state.view = view
    app.state.invite = invite
    # built now, not at the first request: a host's middleware that fails is a ConfigError
    # at the start, not a 500 on every request (the health check's included)
    app.middleware_stack = app.build_middleware_stack()
    return app
