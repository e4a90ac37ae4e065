"""Helpers for the HTTP API tests: an SSE client reading a real stream, tokens, xlsx compared without audit time."""
from __future__ import annotations

import http.client
import json
import re
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import requests

from data.api_tokens import create_token

EVENTS_PATH = "/api/v1/dashboard/events"
ROLE_DETAIL = {"detail": "Dashboard access requires manager, admin, or ward councillor role"}


def token_for(engine, username: str, lifetime: timedelta | None = timedelta(days=1), label: str = "tests") -> str:
    return create_token(engine, username, label, lifetime)[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_get(base_url: str, path: str, headers: dict[str, str] | None = None, **params) -> requests.Response:
    return requests.get(base_url + path, headers=headers or {}, params=params or None, timeout=120)


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None

    @property
    def json(self):
        return json.loads(self.data)


@dataclass
class SseClient:
    """``GET /api/v1/dashboard/events`` on a real socket, read by a thread: events and comments as they come."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        path = parts.path.rstrip("/") + EVENTS_PATH + (f"?{self.query}" if self.query else "")
        self._conn.request("GET", path, headers=self.headers)
        response = self._conn.getresponse()
        self.status = response.status
        self.response_headers = dict(response.headers)
        if self.status != 200:
            self.body = response.read()
            self._conn.close()
            self.ended = True
            return
        self._response = response
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            while True:
                line = self._response.readline()
                if not line:
                    break
                text = line.decode("utf-8").rstrip("\r\n")
                if text.startswith(":"):
                    self.comments.append(text[1:].strip())
                elif text == "":
                    if "event" in fields or "data" in fields:
                        self.events.append(SseEvent(fields.get("event", "message"), fields.get("data", ""),
                                                    fields.get("id")))
                    fields = {}
                else:
                    name, _, value = text.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
        except Exception:  # closed by the test (``close``) or the server: the reader just stops
            pass
        finally:
            self.ended = True

    def of_type(self, kind: str) -> list[SseEvent]:
        return [e for e in list(self.events) if e.event == kind]

    def tracking_numbers(self) -> list[str]:
        return [e.json.get("tracking_number") for e in list(self.events) if e.event not in ("connected", "resync")]

    def wait_for(self, condition, timeout: float = 20, what: str = "events") -> None:
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.events[-10:]} ended={self.ended}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self._conn.sock and self._conn.sock.shutdown(2)
        except OSError:
            pass
        self._conn.close()


def parse_sse(raw: bytes) -> tuple[list[SseEvent], list[str]]:
    """Events and comments of a piece of an event stream (whole events only)."""
    events, comments = [], []
    for block in raw.decode("utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        if "event" in fields or "data" in fields:
            events.append(SseEvent(fields.get("event", "message"), fields.get("data", ""), fields.get("id")))
    return events, comments


_STAMP = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")


def xlsx_parts(path: Path | bytes) -> list[tuple[str, bytes]]:
    """Every part of an xlsx, decompressed, in order; the describing sheet's export time masked.

    What differs between two exports of the same rows made at different moments: the zip's
    file times and the "Exported at" cell (both audit time); everything else must be identical.
    """
    import io

    source = io.BytesIO(path) if isinstance(path, bytes) else path
    with zipfile.ZipFile(source) as archive:
        names = archive.namelist()
        sheets = sorted((n for n in names if n.startswith("xl/worksheets/sheet")),
                        key=lambda n: int(re.sub(r"\D", "", n)))
        about = sheets[-1]
        return [(name, _STAMP.sub(b"<time>", archive.read(name)) if name == about else archive.read(name))
                for name in names]
