"""The OpenAPI description of the web pages' JSON API (``GET {path}/openapi.json``)."""

from __future__ import annotations

from typing import Any

from tmi_cluster import __version__
from tmi_cluster.cluster.admin import CHANNEL_STATES

__all__ = ["openapi"]

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_UNAUTHORIZED = {
    "description": "No valid credentials (HTTP Basic or a bearer token).",
    "content": {"application/json": {"schema": _ERROR}},
}
_STATISTICS = {
    "type": "object",
    "required": [
        "status",
        "reason",
        "messages_per_s",
        "commands_per_s",
        "channels",
        "supervisors",
        "processes",
    ],
    "properties": {
        "status": {"type": "string", "enum": ["operational", "degraded", "down"]},
        "reason": {"type": "string"},
        "messages_per_s": {"type": "number"},
        "commands_per_s": {"type": "number"},
        "channels": {
            "type": "object",
            "properties": {
                name: {"type": "integer"}
                for name in ("joined", "joining", "failed", "wanted", "unauthorized")
            },
        },
        "supervisors": {"type": "integer", "description": "Live supervisors."},
        "processes": {"type": "integer", "description": "Live worker processes."},
        "channel_states": {"type": "object", "additionalProperties": {"type": "integer"}},
        "scaling": {"type": ["object", "null"]},
        "streams": {"type": ["object", "null"]},
        "taken": {"type": "number", "description": "When the figures were read (Unix time)."},
    },
}


def _get(summary: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "security": [{"basic": []}, {"bearer": []}],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
                "401": _UNAUTHORIZED,
                "503": {
                    "description": "The database cannot be read.",
                    "content": {"application/json": {"schema": _ERROR}},
                },
            },
            **extra,
        }
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def openapi(root_path: str = "") -> dict[str, Any]:
    """The description, with ``root_path`` (where the app is mounted) as its server."""
    channels = _get(
        "Channels: owner, state, last failure (the rows of `tmi-cluster channels --json`).",
        {
            "type": "object",
            "required": ["total", "page", "channels"],
            "properties": {
                "total": {"type": "integer"},
                "page": {"type": "integer"},
                "per_page": {"type": "integer"},
                "channels": {"type": "array", "items": {"type": "object"}},
                "warning": {"type": ["string", "null"]},
            },
        },
        parameters=[
            _query(
                "search",
                {"type": "string", "maxLength": 100},
                "Part of a channel's name or of its owner process's id.",
            ),
            _query("state", {"type": "string", "enum": list(CHANNEL_STATES)}, "Only this state."),
            _query("page", {"type": "integer", "minimum": 1, "default": 1}, "Page, from 1."),
            _query(
                "per_page",
                {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                "Channels a page.",
            ),
        ],
    )
    channels["get"]["responses"]["400"] = {
        "description": "A parameter out of range, named in the error.",
        "content": {"application/json": {"schema": _ERROR}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tmi-cluster", "version": __version__},
        "servers": [{"url": root_path or "/"}],
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            }
        },
        "paths": {
            "/api/statistics": _get("The cluster's status and figures.", _STATISTICS),
            "/api/supervisors": _get(
                "Supervisors and worker processes (the object of `tmi-cluster list --json`).",
                {"type": "object", "required": ["supervisors", "processes"]},
            ),
            "/api/channels": channels,
            "/health": {
                "get": {
                    "summary": "204 when healthy (the rule of `tmi-cluster health`), else 503.",
                    "security": [],
                    "responses": {
                        "204": {"description": "Healthy."},
                        "503": {
                            "description": "Not healthy, and why.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "status": {"type": "string"},
                                            "reason": {"type": "string"},
                                        },
                                    }
                                }
                            },
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus's text format.",
                    "security": [{"basic": []}, {"bearer": []}],
                    "responses": {
                        "200": {"description": "OK", "content": {"text/plain": {}}},
                        "401": _UNAUTHORIZED,
                    },
                }
            },
        },
    }
