"""The web pages: a live dashboard, a JSON API with its OpenAPI description, Prometheus metrics
and a health check, as one ASGI application.

- :func:`create_app` builds it for the cluster of some settings; mount it under ``path``
  (default ``/tmi-cluster``) in any ASGI application (Starlette, FastAPI), or let
  ``tmi-cluster dashboard`` serve it (:func:`serve`).
- ``GET /`` the dashboard; ``GET /api/statistics``, ``/api/supervisors``, ``/api/channels``
  the JSON API (``/openapi.json`` describes it); ``GET /metrics`` Prometheus's text format;
  ``GET /health`` 204 when healthy by the rule of ``tmi-cluster health``, else 503 with the
  reason.
- ``/invite/`` the invite screen: streamers sign in with Twitch and add the bot to their chat
  or remove it (:mod:`tmi_cluster.web.invite`; public, its forms CSRF-checked).
- Everything but ``/health`` and the invite screen needs credentials unless ``web.public`` is
  set (see
  :mod:`tmi_cluster.web.auth`). Every file the page uses ships in the package; the page loads
  nothing from elsewhere, and its Content-Security-Policy says so.
- The figures come from one snapshot of the cluster at most every second, however many browsers
  and scrapers ask (:mod:`tmi_cluster.web.view`).
"""

from tmi_cluster.web.app import create_app
from tmi_cluster.web.auth import Authorize, Credentials
from tmi_cluster.web.server import mount_path, serve, site
from tmi_cluster.web.view import ClusterView, Snapshot

__all__ = [
    "Authorize",
    "ClusterView",
    "Credentials",
    "Snapshot",
    "create_app",
    "mount_path",
    "serve",
    "site",
]
