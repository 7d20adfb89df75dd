"""The web pages' own files (``web/static``, shipped in the package): read, and served."""

from __future__ import annotations

from importlib import resources

from starlette.responses import Response

__all__ = ["asset", "asset_response"]


def asset(name: str) -> bytes:
    """The bytes of ``static/<name>``."""
    return resources.files("tmi_cluster.web").joinpath("static", name).read_bytes()


def asset_response(name: str, media_type: str) -> Response:
    """``static/<name>`` as a response the browser checks again before each use."""
    return Response(asset(name), media_type=media_type, headers={"Cache-Control": "no-cache"})
