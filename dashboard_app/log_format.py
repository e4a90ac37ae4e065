"""Structured logs (``OPSDASH_LOG_FORMAT=json``): one JSON object per line, never a secret.

Each line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and
when known ``request_id`` (our HTTP routes: the proxy's ``X-Request-ID`` when
it is a plain token, else a new one), ``session`` (a short hash of the Bokeh
session id: it names the browser tab, yet opens nothing) and ``user`` (the
signed-in username); ``exception`` with the traceback when there is one.

What keeps secrets out, whichever format:
- nothing logs a password, cookie or token on purpose, and no live event's
  content is ever logged (``data.hub`` logs drop reasons and channels);
- SQL errors carry no parameter values (``data.db``: ``hide_parameters``), so
  a failed query cannot log a search text or a ticket's text;
- and, in JSON, ``Redactor`` replaces what slipped through anyway: the
  configured secrets (cookie secret, operator token, the passwords of the
  database and Redis URLs), ``Bearer`` credentials and the values of URL
  query parameters (an export link's token, a search text in a page URL).
"""
from __future__ import annotations

import contextvars
import hashlib
import io
import json
import logging
import re
import sys
import threading
import uuid
import weakref
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from components.panel_compat import current_document
from data.settings import Settings

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("opsdash_request_id", default=None)
USER: contextvars.ContextVar[str | None] = contextvars.ContextVar("opsdash_user", default=None)
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_QUERY_VALUE = re.compile(r"([?&][^=&\s?#]{1,64})=[^&\s#]*")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s,;]+")
_users: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def bind_session_user(doc: Any, username: str) -> None:
    """Lines logged for this session's document carry ``user`` (set when its page is built)."""
    try:
        _users[doc] = username
    except TypeError:
        pass


class RequestContext:
    """Mixin for our Tornado handlers: a request id for every line logged while the request runs."""

    def prepare(self) -> Any:
        given = self.request.headers.get("X-Request-ID", "")  # type: ignore[attr-defined]
        REQUEST_ID.set(given if _GIVEN_ID.fullmatch(given) else uuid.uuid4().hex[:16])
        return super().prepare()  # type: ignore[misc]


class Redactor:
    """Removes the configured secrets, Bearer credentials and query values from a text."""

    def __init__(self, settings: Settings) -> None:
        secrets = [settings.cookie_secret, settings.metrics_token]
        for url in (settings.database_url, settings.redis_url):
            if url:
                try:
                    secrets.append(urlsplit(url).password)
                except ValueError:
                    pass
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        text = _BEARER.sub(r"\1 ***", text)
        return _QUERY_VALUE.sub(r"\1=***", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        doc = current_document()
        context = getattr(doc, "session_context", None) if doc is not None else None
        if context is not None:
            entry["session"] = hashlib.sha256(str(context.id).encode()).hexdigest()[:16]
        user = USER.get() or (_users.get(doc) if doc is not None else None)
        if user:
            entry["user"] = user
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """JSON on every handler of the process (root, Panel's own, Tornado's, ...) when ``log_format`` is json."""
    if settings.log_format != "json":
        return
    formatter = JsonFormatter(Redactor(settings))
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    loggers = [root, *(logger for logger in logging.root.manager.loggerDict.values()
                       if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(formatter)
    logging.captureWarnings(True)  # warnings as log lines, so in JSON too
    # What is printed rather than logged (Bokeh's "Received signal SIGTERM", a thread's uncaught
    # traceback) becomes JSON lines too. The handlers above keep the streams they were given.
    if not isinstance(sys.stdout, JsonLines):
        sys.stdout = JsonLines(sys.stdout, "stdout", formatter)  # type: ignore[assignment]
    if not isinstance(sys.stderr, JsonLines):
        sys.stderr = JsonLines(sys.stderr, "stderr", formatter)  # type: ignore[assignment]


class JsonLines(io.TextIOBase):
    """A text stream whose every line goes out as a JSON log line (logger ``name``)."""

    def __init__(self, stream: Any, name: str, formatter: JsonFormatter) -> None:
        super().__init__()
        self.stream, self.name, self.formatter = stream, name, formatter
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                if line.strip():
                    level = logging.WARNING if self.name == "stderr" else logging.INFO
                    record = logging.makeLogRecord({"name": self.name, "levelno": level,
                                                    "levelname": logging.getLevelName(level), "msg": line})
                    self.stream.write(self.formatter.format(record) + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")
