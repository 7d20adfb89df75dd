"""Stopping the tasks one owns: the package's one way to cancel a task and wait for it.

``task.cancel(); await task`` under ``suppress(CancelledError)`` cannot tell the task's own
cancellation (expected) from a cancellation of the caller (a shutdown deadline, a forced exit),
and so swallows the caller's: the caller then runs on as if nothing had happened.
:func:`cancel_and_wait` waits with :func:`asyncio.wait`, which never raises the tasks'
outcomes, so a :class:`asyncio.CancelledError` reaching the caller is always the caller's own
and always propagates. An error a task ended with while being stopped is logged, never
swallowed silently, and never raised into the stop that follows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait", "log_outcome"]

log = logging.getLogger(__name__)


async def cancel_and_wait(
    *tasks: asyncio.Future[Any] | None,
    timeout_s: float | None = None,
    what: str = "a task",
    logger: logging.Logger | None = None,
    report: bool = True,
) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` (``None`` entries are ignored) and wait until each has ended.

    Contracts:

    - A cancellation of the caller while it waits propagates at once (the tasks stay
      cancelled and end by themselves).
    - A task that ends with an error other than its cancellation has the error logged (on
      ``logger``, naming ``what``); it is not raised. ``report=False`` leaves the error to the
      owner's done callback, which reported it already.
    - With ``timeout_s``, the wait ends after that many seconds; the tasks still running are
      returned (logged as an error, since a task that ignores its cancellation is a bug).
      Without it, the returned set is empty.
    """
    live = [task for task in tasks if task is not None]
    if not live:
        return set()
    for task in live:
        task.cancel()
    done, pending = await asyncio.wait(live, timeout=timeout_s)
    for task in done:
        if report:
            log_outcome(task, what=what, logger=logger)
        elif not task.cancelled():
            task.exception()  # retrieved: reported by its owner's callback
    if pending:
        (logger or log).error(
            "%s did not stop within %g s of its cancellation: %s",
            what,
            timeout_s,
            ", ".join(_name(task) for task in pending),
        )
    return pending


def log_outcome(
    task: asyncio.Future[Any], *, what: str = "a task", logger: logging.Logger | None = None
) -> BaseException | None:
    """The error ``task`` (done) ended with, logged with its traceback; None when it returned
    or was cancelled. Reading it here also keeps asyncio from reporting it as never retrieved."""
    if task.cancelled():
        return None
    error = task.exception()
    if error is not None:
        (logger or log).error("%s (%s) failed: %s", what, _name(task), error, exc_info=error)
    return error


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
