"""The web pages a supervisor serves with ``web.enabled`` (so that a single ``tmi-cluster run``
has a dashboard): :func:`~tmi_cluster.web.create_app` on ``web.host:web.port`` under ``path``,
in the supervisor's own event loop, its signals left to the supervisor."""

from __future__ import annotations

import asyncio

from tmi_cluster.config import Settings
from tmi_cluster.errors import TmiClusterError
from tmi_cluster.tasks import cancel_and_wait
from tmi_cluster.web import create_app, mount_path, serve

__all__ = ["WebPages"]


class WebPages:
    """The served pages of one supervisor: :meth:`start`, then :meth:`aclose`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        #: Where the pages are, once they are served.
        self.url: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def sign_in(self) -> str | None:
        """The line to show once when the password was made for this run, else None."""
        credentials = self.app.state.credentials
        if not credentials.generated:
            return None
        return (
            f"web pages: sign in as {credentials.username!r} with the password "
            f"{credentials.password!r}, made for this run (set web.password or web.token to "
            "choose your own)"
        )

    async def start(self) -> asyncio.Task[None]:
        """Listen; the serving task (its end is the caller's to watch). TmiClusterError, in
        words, when the address cannot be had."""
        web = self.settings.web
        listening: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def started(host: str, port: int) -> None:
            shown = f"[{host}]" if ":" in host else host
            self.url = f"http://{shown}:{port}{mount_path(self.settings)}/"
            if not listening.done():
                listening.set_result(None)

        task = self._task = asyncio.create_task(
            serve(
                self.settings,
                self.app,
                host=web.host,
                port=web.port,
                started=started,
                handle_signals=False,
            ),
            name="web pages",
        )
        await asyncio.wait([listening, task], return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            error = task.exception() if not task.cancelled() else None
            self._task = None  # its error is this one: not reported again at the close
            raise TmiClusterError(
                f"cannot serve the web pages on {web.host}:{web.port} (web.host, web.port): {error}"
            )
        return task

    async def aclose(self) -> None:
        """Stop serving (idempotent)."""
        await cancel_and_wait(self._task, what="the web pages")
        self._task = None
