"""Live events: the message format, its validation, and the buses that carry it.

Messages arrive on Redis channel ``dashboard:{municipality_id}`` as JSON, in
either shape (docs/architecture.md, "Interfaces others rely on"): the ticketing system's
``{"type", "data", "ward_id"}`` (the municipality then comes from the channel)
or the full shape with ``id``, ``municipality_id``, ``ticket_id``,
``occurred_at`` and ``is_sensitive``. ``parse_event`` turns either into an
immutable ``Event`` or raises ``EventRejected`` carrying a ``DropReason`` the
hub counts; nothing a publisher sends can make it raise anything else.

The buses (``RedisBus``, ``InProcessBus``, in ``data.bus``) are re-exported
here: one import for the whole event interface. Publishers go through
``publish_event``, which refuses sensitive events (invariant 1) before
anything is sent.
"""
from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Mapping

from .bus import (  # noqa: F401  (the bus interface is part of this module's API)
    CHANNEL_PATTERN,
    CHANNEL_PREFIX,
    MAX_BATCH,
    BusUnavailable,
    EventBus,
    InProcessBus,
    Message,
    RedisBus,
    Subscription,
    bus_for,
)
from .errors import InvalidValue
from .sensitivity import SENSITIVE_KEY, name_key
from .workers import SHORT

EVENT_TYPES: frozenset[str] = frozenset({"ticket_created", "ticket_updated", "sla_breach", "assignment_changed"})
#: Largest message accepted, in bytes of JSON. Real events are ~0.5 KB; the
#: bound keeps one bad publisher from costing every session memory and time.
MAX_EVENT_BYTES = 16 * 1024
#: Longest string kept from ``data`` (a feed shows short fields only).
MAX_FIELD_CHARS = 200


class DropReason(str, enum.Enum):
    """Why the hub dropped a message (the keys of its drop counters)."""

    BAD_JSON = "bad_json"
    TOO_LARGE = "too_large"
    NOT_OBJECT = "not_object"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"
    BAD_CHANNEL = "bad_channel"
    WRONG_MUNICIPALITY = "wrong_municipality"
    SENSITIVE_FLAG = "sensitive_flag"
    SENSITIVE_CATEGORY = "sensitive_category"
    SENSITIVE_TICKET = "sensitive_ticket"
    #: A category that is not a known one: treated as sensitive (data.sensitivity).
    UNKNOWN_CATEGORY = "unknown_category"
    #: The names an event gives (id, tracking number, top level or in data) are not all one ticket.
    CONFLICTING_NAMES = "conflicting_names"
    #: Names no ticket the database has (yet), or none at all: kept from every councillor.
    UNRESOLVED_TICKET = "unresolved_ticket"
    #: Claims a ward other than its ticket's: kept from every councillor.
    WARD_MISMATCH = "ward_mismatch"
    LOOKUP_FAILED = "lookup_failed"


SENSITIVE_REASONS = frozenset({DropReason.SENSITIVE_FLAG, DropReason.SENSITIVE_CATEGORY, DropReason.SENSITIVE_TICKET,
                               DropReason.UNKNOWN_CATEGORY})


class EventRejected(InvalidValue):
    """A message that is not a valid, publishable event. ``reason`` says why."""

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SensitiveEventRefused(EventRejected):
    """A publisher tried to send a sensitive event (invariant 1)."""


def channel_for(municipality_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{uuid.UUID(str(municipality_id))}"


def municipality_from_channel(channel: str | bytes | None) -> uuid.UUID | None:
    if isinstance(channel, bytes):
        channel = channel.decode("utf-8", "replace")
    if not channel or not channel.startswith(CHANNEL_PREFIX):
        return None
    try:
        return uuid.UUID(channel[len(CHANNEL_PREFIX):])
    except ValueError:
        return None


@dataclass(frozen=True)
class Event:
    """One validated, non-sensitive-by-content ticket event."""

    type: str
    municipality_id: uuid.UUID
    ward_id: str | None = None
    ticket_id: uuid.UUID | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    is_sensitive: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

    @property
    def tracking_number(self) -> str:
        return _text(self.data.get("tracking_number"))

    @property
    def tracking_key(self) -> str | None:
        """The tracking number as the database's ``opsdash_key(tracking_number)`` index compares it."""
        return name_key(self.tracking_number) or None

    @property
    def category_key(self) -> str | None:
        """The category the event claims, as the sensitivity rule compares it (None: no claim)."""
        return name_key(self.category) or None

    @property
    def category(self) -> str:
        return _text(self.data.get("category"))

    @property
    def status(self) -> str:
        return _text(self.data.get("status"))

    def to_dict(self) -> dict[str, Any]:
        """The full message shape of docs/architecture.md, "Interfaces others rely on"."""
        return {
            "id": self.id, "type": self.type, "municipality_id": str(self.municipality_id),
            "ward_id": self.ward_id, "ticket_id": str(self.ticket_id) if self.ticket_id else None,
            "occurred_at": self.occurred_at.isoformat(), "is_sensitive": self.is_sensitive,
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)

    @property
    def channel(self) -> str:
        return channel_for(self.municipality_id)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _is_true(value: Any) -> bool:
    # The ticketing system is not ours: "true", 1 and True all mean sensitive.
    # Anything unrecognised that is not plainly false counts as sensitive (fail closed).
    if value is None or value is False or value == 0:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "off")
    return True


def sensitive_reason(payload: Mapping[str, Any]) -> DropReason | None:
    """Whether a message is sensitive by its own content (flag or category, top level or in data)."""
    data = payload.get("data")
    data = data if isinstance(data, Mapping) else {}
    if _is_true(payload.get("is_sensitive")) or _is_true(data.get("is_sensitive")):
        return DropReason.SENSITIVE_FLAG
    for source in (payload, data):
        category = source.get("category")
        if isinstance(category, str) and name_key(category) == SENSITIVE_KEY:
            return DropReason.SENSITIVE_CATEGORY
        if category is not None and not isinstance(category, str):
            # A non-string category cannot be checked, so it cannot be trusted.
            raise EventRejected(DropReason.BAD_FIELD, "category must be a string")
    return None


def _one_name(payload: Mapping[str, Any], data: Mapping[str, Any], name: str, key) -> Any:
    """The value of ``name`` at the top level or in ``data``: an explicit null in one place
    does not hide a value in the other, and two different values drop the message."""
    values = [v for v in (payload.get(name), data.get(name)) if v not in (None, "")]
    if len(values) == 2 and key(values[0]) != key(values[1]):
        raise EventRejected(DropReason.CONFLICTING_NAMES, f"{name} differs between the message and its data")
    return values[0] if values else None


def _uuid_key(value: Any) -> Any:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return value


def _text_key(value: Any) -> Any:
    return name_key(value) if isinstance(value, str) else value


def _optional_str(payload: Mapping[str, Any], data: Mapping[str, Any], name: str) -> str | None:
    value, inner = payload.get(name), data.get(name)
    if value not in (None, "") and inner not in (None, "") and str(value).strip() != str(inner).strip():
        # Two different wards in one message: route it nowhere rather than guess.
        raise EventRejected(DropReason.BAD_FIELD, f"{name} differs between the message and its data")
    if value is None:
        value = inner
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EventRejected(DropReason.BAD_FIELD, f"{name} must be a string, got {type(value).__name__}")
    value = str(value).strip()
    if len(value) > 64:
        raise EventRejected(DropReason.BAD_FIELD, f"{name} is longer than 64 characters")
    return value or None


def _optional_uuid(value: Any, name: str) -> uuid.UUID | None:
    if value is None or value == "":
        return None
    if isinstance(value, uuid.UUID):
        return value
    try:
        if not isinstance(value, str):
            raise ValueError
        return uuid.UUID(value)
    except ValueError:
        raise EventRejected(DropReason.BAD_FIELD, f"{name} is not a UUID") from None


def _occurred_at(value: Any) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    if not isinstance(value, str):
        raise EventRejected(DropReason.BAD_FIELD, "occurred_at must be an ISO-8601 string")
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventRejected(DropReason.BAD_FIELD, "occurred_at is not an ISO-8601 date-time") from None
    if stamp.tzinfo is None:
        raise EventRejected(DropReason.BAD_FIELD, "occurred_at needs a UTC offset")
    return stamp.astimezone(timezone.utc)


def _clean_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Scalars only, strings cut short: the feed shows fields, never nested blobs."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or len(key) > 64:
            continue
        if isinstance(value, str):
            clean[key] = value[:MAX_FIELD_CHARS]
        elif value is None or isinstance(value, (bool, int, float)):
            clean[key] = value
    return clean


def parse_event(raw: str | bytes | Mapping[str, Any], channel: str | bytes | None = None) -> Event:
    """Validate one message; the municipality comes from the channel when the message has none.

    Raises EventRejected (with a DropReason) for anything malformed or
    sensitive by content. The database check of invariant 1 is the hub's
    (``ticket_visibility``): parsing never touches the database.
    """
    if isinstance(raw, Mapping):
        payload: Any = raw
    else:
        if len(raw) > MAX_EVENT_BYTES:
            raise EventRejected(DropReason.TOO_LARGE, f"message of {len(raw)} bytes is over {MAX_EVENT_BYTES}")
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            raise EventRejected(DropReason.BAD_JSON, "message is not JSON") from None
    if not isinstance(payload, Mapping):
        raise EventRejected(DropReason.NOT_OBJECT, "message must be a JSON object")
    data = payload.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise EventRejected(DropReason.BAD_FIELD, "data must be an object")
    # Sensitivity first: a sensitive message is dropped as sensitive even when
    # it is malformed otherwise, so the counters never under-report it.
    reason = sensitive_reason(payload)
    if reason is not None:
        raise EventRejected(reason, "sensitive event")
    kind = payload.get("type")
    if kind is None or kind == "":
        raise EventRejected(DropReason.MISSING_TYPE, "message has no type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise EventRejected(DropReason.UNKNOWN_TYPE, f"unknown event type {str(kind)[:40]!r}")
    from_channel = municipality_from_channel(channel) if channel is not None else None
    if channel is not None and from_channel is None:
        raise EventRejected(DropReason.BAD_CHANNEL, "channel is not dashboard:{municipality_id}")
    named = _optional_uuid(payload.get("municipality_id"), "municipality_id")
    if named is not None and from_channel is not None and named != from_channel:
        # A message naming another municipality than its channel is either a
        # bug or an attempt to cross tenants: drop it rather than pick one.
        raise EventRejected(DropReason.WRONG_MUNICIPALITY, "municipality_id does not match the channel")
    municipality = named or from_channel
    if municipality is None:
        raise EventRejected(DropReason.BAD_FIELD, "no municipality_id and no channel to take it from")
    ticket = _one_name(payload, data, "ticket_id", _uuid_key)
    tracking_number = _one_name(payload, data, "tracking_number", _text_key)
    if tracking_number is not None and not isinstance(tracking_number, str):
        raise EventRejected(DropReason.BAD_FIELD, "tracking_number must be a string")
    if data.get("tracking_number") in (None, "") and tracking_number is not None:
        data = {**data, "tracking_number": tracking_number}  # the feed shows it from data
    event_id = payload.get("id")
    if event_id is not None and not isinstance(event_id, (str, int)):
        raise EventRejected(DropReason.BAD_FIELD, "id must be a string")
    return Event(
        type=kind,
        municipality_id=municipality,
        ward_id=_optional_str(payload, data, "ward_id"),
        ticket_id=_optional_uuid(ticket, "ticket_id"),
        occurred_at=_occurred_at(payload.get("occurred_at", data.get("occurred_at"))),
        id=str(event_id)[:64] if event_id is not None else str(uuid.uuid4()),
        is_sensitive=False,
        data=_clean_data(data),
    )


def make_event(
    type: str, municipality_id: uuid.UUID | str, *, ward_id: str | None = None,
    ticket_id: uuid.UUID | str | None = None, data: Mapping[str, Any] | None = None,
    is_sensitive: bool = False, occurred_at: datetime | None = None,
) -> Event:
    """Build a full-shape event, validated exactly as a received one would be."""
    message = {
        "type": type, "municipality_id": str(municipality_id), "ward_id": ward_id,
        "ticket_id": str(ticket_id) if ticket_id else None, "is_sensitive": is_sensitive,
        "occurred_at": (occurred_at or datetime.now(timezone.utc)).isoformat(), "data": dict(data or {}),
    }
    return parse_event(message)


async def publish_event(bus: EventBus, event: Event | Mapping[str, Any], *, engine=None,
                        channel: str | None = None) -> int:
    """Publish one event; returns the number of subscribers that got it.

    Refuses (SensitiveEventRefused) anything sensitive by content and, when an
    engine is given, any event naming a ticket that is sensitive in the database.
    A mapping is validated as a received message would be, so a publisher can
    never send what the hub would drop as malformed.
    """
    try:
        # An Event built by hand is re-validated too: its flag or category may say sensitive.
        parsed = parse_event(event.to_dict() if isinstance(event, Event) else event, channel)
    except EventRejected as exc:
        if exc.reason in SENSITIVE_REASONS:
            raise SensitiveEventRefused(exc.reason, "refusing to publish a sensitive event") from None
        raise
    if engine is not None and (parsed.ticket_id is not None or parsed.tracking_key):
        from .named_tickets import ticket_visibility

        seen = await SHORT.run(ticket_visibility, engine, parsed.ticket_id,
                               tracking_number=parsed.tracking_number)
        if seen == "sensitive":
            raise SensitiveEventRefused(DropReason.SENSITIVE_TICKET, "refusing to publish an event of a sensitive ticket")
        if seen == "conflict":
            raise EventRejected(DropReason.CONFLICTING_NAMES, "the ticket id and tracking number name different tickets")
    return await bus.publish(channel or parsed.channel, parsed.to_json())
