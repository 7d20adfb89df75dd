"""Serving the web pages by themselves (``tmi-cluster dashboard``, and a supervisor with
``web.enabled``): the app of :func:`~tmi_cluster.web.create_app` under ``settings.path``, the
site's root redirecting there, on uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from tmi_cluster.config import Settings
from tmi_cluster.web.app import SecurityHeaders

__all__ = ["mount_path", "serve", "site"]

log = logging.getLogger(__name__)


def mount_path(settings: Settings) -> str:
    """Where the pages are: ``/`` + ``settings.path`` without its slashes (``""`` at the
    root)."""
    path = settings.path.strip("/")
    return f"/{path}" if path else ""


def site(settings: Settings, app: Starlette) -> Starlette:
    """``app`` under :func:`mount_path`, the root redirecting to it; ``app``'s lifespan runs
    with the site's."""
    path = mount_path(settings)
    if not path:
        return app

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{path}/", status_code=307)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with app.router.lifespan_context(app):
            yield

    return Starlette(
        routes=[Route("/", home, methods=["GET"]), Mount(path, app=app)],
        middleware=[Middleware(SecurityHeaders)],  # the redirect and 404s outside too
        lifespan=lifespan,
    )


async def serve(
    settings: Settings,
    app: Starlette,
    *,
    host: str,
    port: int,
    started: Callable[[str, int], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Serve :func:`site` of ``app`` on ``host:port`` until cancelled, or (``handle_signals``,
    uvicorn's own handling of SIGINT and SIGTERM) interrupted. ``started(host, port)`` is
    called once the socket listens, with the port bound (``port`` 0 picks a free one).
    OSError when the address is taken or cannot be had."""
    config = uvicorn.Config(
        site(settings, app),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="on",
    )
    # the socket is ours: an address that cannot be had is an OSError here, in words
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.create_server((host, port), family=family)
    # accepted connections inherit it (asyncio sets it only on sockets it made): a response's
    # head and body, written apart, are not held for the client's delayed ACK (40 ms each)
    listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server = _Server(config, handle_signals=handle_signals)
    task = asyncio.create_task(server.serve(sockets=[listening]), name="web server")
    try:
        while not server.started:
            if task.done():
                await task
                raise OSError(f"the web server on {host}:{port} stopped as it started")
            await asyncio.sleep(0.02)
        if started is not None:
            bound = listening.getsockname()
            started(str(bound[0]), int(bound[1]))
        # shielded: a cancellation of ours is a graceful stop of the server (below), not an
        # abrupt end of its lifespan
        await asyncio.shield(task)
    finally:
        if not task.done():
            server.should_exit = True
            await asyncio.wait([task])
        listening.close()


class _Server(uvicorn.Server):
    """uvicorn's server, its signal handling optional (a supervisor has its own)."""

    def __init__(self, config: uvicorn.Config, *, handle_signals: bool) -> None:
        super().__init__(config)
        self.handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self.handle_signals:
            with super().capture_signals():
                yield
        else:
            yield
