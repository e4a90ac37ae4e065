"""The OpenAPI 3.1 document of ``/api/v1/`` (served at ``/api/v1/openapi.json``; docs/api.md says the same in prose).

Built from the same names the handlers use (filter parameters, statuses,
categories), so the document cannot drift from what the server accepts;
``tests/test_api_server.py`` checks it with openapi-spec-validator.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from data.events import EVENT_TYPES
from data.filters import STATUSES
from data.models import VISIBLE_CATEGORIES

from .api_auth import ROLE_DETAIL

ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


COMMON_ERRORS = {
    "401": _error("No credential, a malformed `Authorization` header, or a token that is unknown, revoked or "
                  "expired (header `WWW-Authenticate: Bearer`)"),
    "403": {"description": "A role without a dashboard (`" + ROLE_DETAIL + "`), a councillor without a ward, "
                           "a disabled account, or a cross-site request with the sign-in cookie",
            "content": {"application/json": {"schema": ERROR,
                                              "example": {"detail": ROLE_DETAIL}}}},
    "429": _error("Over `OPSDASH_API_RATE_PER_MINUTE` requests a minute for this credential (header "
                  "`Retry-After`), or too many open event streams"),
    "503": _error("The database or the live hub is unavailable, or every export worker is busy: try again"),
}


def _filter_parameters() -> list[dict[str, Any]]:
    listed = {"type": "array", "items": {"type": "string"}}
    return [
        {"name": "status", "in": "query", "required": False, "style": "form", "explode": True,
         "description": "repeat or comma separate: " + ", ".join(STATUSES),
         "schema": {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}}},
        {"name": "category", "in": "query", "required": False, "style": "form", "explode": True,
         "description": "repeat or comma separate: " + ", ".join(VISIBLE_CATEGORIES) + " or one an admin added",
         "schema": listed},
        {"name": "ward_id", "in": "query", "required": False, "style": "form", "explode": True,
         "description": "repeat or comma separate; ignored for a ward councillor (their ward comes from their "
                        "account)", "schema": listed},
        {"name": "search", "in": "query", "required": False,
         "description": "text in the tracking number, description or address (at most 200 characters)",
         "schema": {"type": "string", "maxLength": 200}},
        {"name": "created_from", "in": "query", "required": False,
         "description": "created on or after this day (municipality's time zone)",
         "schema": {"type": "string", "format": "date"}},
        {"name": "created_to", "in": "query", "required": False,
         "description": "created on or before this day (municipality's time zone)",
         "schema": {"type": "string", "format": "date"}},
    ]


def _export(fmt: str, media_type: str) -> dict[str, Any]:
    return {"get": {
        "operationId": f"exportTickets{fmt.title()}",
        "summary": f"The caller's tickets as {fmt.upper() if fmt == 'csv' else 'Excel (xlsx)'}",
        "description": "Exactly the tickets of the caller's scope under the filters, never sensitive ones; "
                       "the same bytes as the dashboard's button and `opsdash export`; streamed, no row cap; "
                       "audited (channel `api`).",
        "parameters": _filter_parameters(),
        "responses": {
            "200": {"description": "the file (`Content-Disposition: attachment`)",
                    "headers": {"Content-Disposition": {"schema": {"type": "string"},
                                                        "description": 'attachment; filename="tickets_<municipality>_<YYYYmmdd_HHMMSS>.' + ("csv" if fmt == "csv" else "xlsx") + '"'}},
                    "content": {media_type: {"schema": {"type": "string", "contentMediaType": media_type}}}},
            "400": _error("A bad filter: unknown parameter, status or category, a date that is no date, "
                          "dates in the wrong order, search too long"),
            **COMMON_ERRORS,
        },
    }}


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpsDash API", "version": "1",
                 "description": "The platform's HTTP API on OpsDash: live dashboard events and ticket exports, "
                                "scoped to the caller's account (municipality, role, ward)."},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"cookieAuth": []}],
        "paths": {
            "/api/v1/dashboard/events": {"get": {
                "operationId": "dashboardEvents",
                "summary": "Live dashboard events (Server-Sent Events)",
                "description": "First `event: connected` with data `{\"status\": \"connected\", "
                               "\"municipality_id\": ...}`; then one event per live event: `event:` its type ("
                               + ", ".join(sorted(EVENT_TYPES)) + "), `data:` its data object as JSON, `id:` "
                               "its position. `event: resync` (data `{\"reason\": ...}`): events were missed, "
                               "reload from the database. `: heartbeat` comments on a quiet stream. The server "
                               "ends a stream after `OPSDASH_API_STREAM_MAX_S`; reconnect with `Last-Event-ID`.",
                "parameters": [{"name": "Last-Event-ID", "in": "header", "required": False,
                                "description": "the `id:` of the last event received: resume after it",
                                "schema": {"type": "string", "maxLength": 40}}],
                "responses": {
                    "200": {"description": "the event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    **COMMON_ERRORS,
                },
            }},
            "/api/v1/export/tickets/csv": _export("csv", "text/csv; charset=utf-8"),
            "/api/v1/export/tickets/excel": _export(
                "excel", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            "/api/v1/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "a personal API token: `opsdash token create --user NAME --label L`"},
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "user",
                               "description": "the signed-in dashboard's cookies (same-origin browser use)"},
            },
            "schemas": {"Error": {"type": "object", "required": ["detail"],
                                  "properties": {"detail": {"type": "string"}}}},
        },
    }
