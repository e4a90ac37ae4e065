"""TicketFilters: the filter values every view, export and frame share.

Values are validated on construction, so a TicketFilters that exists is safe
to turn into SQL (always as bound parameters). Widgets, URL parameters, the
command line and notebooks all come through ``TicketFilters.parse``.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Iterable, Mapping

from .errors import InvalidFilter
from .models import VISIBLE_CATEGORIES, Status
from .scope import Scope
from .sensitivity import KEY_PATTERN, SENSITIVE_KEY, name_key

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
MAX_SEARCH_LENGTH = 200
MAX_VALUES = 500
_WARD_RE = re.compile(r"^[\w.\-: ]{1,64}$")


def _as_tuple(value: Any, name: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = [v for v in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        raise InvalidFilter(f"{name} must be a list of text values, got {type(value).__name__}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidFilter(f"{name} must contain text values, got {type(item).__name__}")
        item = item.strip()
        if item and item not in out:
            out.append(item)
    if len(out) > MAX_VALUES:
        raise InvalidFilter(f"{name}: at most {MAX_VALUES} values")
    return tuple(out)


def as_date(value: Any, name: str) -> date | None:
    """A date from a date, a datetime or ISO text (``None``/'' -> None); InvalidFilter naming ``name`` otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) <= 40:
        # A date or a full ISO timestamp; nothing trailing is silently cut off.
        text = value.strip()
        for parse in (date.fromisoformat, lambda t: datetime.fromisoformat(t).date()):
            try:
                return parse(text)
            except ValueError:
                continue
    raise InvalidFilter(f"{name} must be a date like 2026-01-31, got {str(value)[:40]!r}")


@dataclass(frozen=True)
class TicketFilters:
    """Status, category, ward, created-date range (inclusive, local days) and search."""

    statuses: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    wards: tuple[str, ...] = ()
    created_from: date | None = None
    created_to: date | None = None
    search: str = ""

    def __post_init__(self) -> None:
        statuses = _as_tuple(self.statuses, "status")
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise InvalidFilter(f"unknown status {unknown[0][:40]!r}; choose from {', '.join(STATUSES)}")
        # Compared as the sensitivity rule compares them (data.sensitivity). Any well-formed
        # key is accepted (an admin may have added categories); gbv never is: its tickets
        # are never shown, and a filter on it must not look as if they could be.
        categories = tuple(dict.fromkeys(name_key(c) for c in _as_tuple(self.categories, "category")))
        unknown = [c for c in categories if not KEY_PATTERN.fullmatch(c or "") or c == SENSITIVE_KEY]
        if unknown:
            raise InvalidFilter(f"unknown category {unknown[0][:40]!r}; choose from {', '.join(VISIBLE_CATEGORIES)}"
                                " or one an admin added")
        wards = _as_tuple(self.wards, "ward")
        bad = [w for w in wards if not _WARD_RE.match(w)]
        if bad:
            raise InvalidFilter(f"not a ward id: {bad[0][:40]!r}")
        created_from = as_date(self.created_from, "created from")
        created_to = as_date(self.created_to, "created to")
        if created_from and created_to and created_from > created_to:
            raise InvalidFilter("the 'created from' date is after the 'created to' date")
        search = self.search
        if search is None:
            search = ""
        if not isinstance(search, str):
            raise InvalidFilter(f"search must be text, got {type(search).__name__}")
        search = " ".join(search.split())
        if len(search) > MAX_SEARCH_LENGTH:
            raise InvalidFilter(f"search text is too long (at most {MAX_SEARCH_LENGTH} characters)")
        if "\x00" in search:
            raise InvalidFilter("search text contains a NUL character")
        try:
            search.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: the database driver would fail later
            raise InvalidFilter("search text is not valid Unicode text") from None
        for name, value in (
            ("statuses", statuses), ("categories", categories), ("wards", wards),
            ("created_from", created_from), ("created_to", created_to), ("search", search),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None = None, **kwargs: Any) -> "TicketFilters":
        """Build from loose input (URL query, widget values, CLI options).

        Accepts singular or plural keys (``status`` / ``statuses``) and comma
        separated strings. Unknown keys are an error, not silently ignored.
        """
        if values is not None and not isinstance(values, Mapping):
            raise InvalidFilter(f"filters must be given as names and values, got {type(values).__name__}")
        merged = dict(values or {})
        merged.update(kwargs)
        aliases = {
            "status": "statuses", "statuses": "statuses",
            "category": "categories", "categories": "categories",
            "ward": "wards", "wards": "wards", "ward_id": "wards",
            "created_from": "created_from", "from": "created_from", "start": "created_from",
            "created_to": "created_to", "to": "created_to", "end": "created_to",
            "search": "search", "q": "search",
        }
        clean: dict[str, Any] = {}
        for key, value in merged.items():
            target = aliases.get(key) if isinstance(key, str) else None
            if target is None:
                raise InvalidFilter(f"unknown filter {str(key)[:40]!r}")
            if isinstance(value, (list, tuple)) and target in ("created_from", "created_to", "search"):
                value = value[0] if value else None
            clean[target] = value
        return cls(**clean)

    def is_empty(self) -> bool:
        return self == TicketFilters()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for the audit table and the URL)."""
        data = asdict(self)
        for key in ("statuses", "categories", "wards"):
            data[key] = list(data[key])
        for key in ("created_from", "created_to"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_query(self) -> dict[str, str]:
        """Only the set values, as URL query parameters (comma separated)."""
        out: dict[str, str] = {}
        if self.statuses:
            out["status"] = ",".join(self.statuses)
        if self.categories:
            out["category"] = ",".join(self.categories)
        if self.wards:
            out["ward"] = ",".join(self.wards)
        if self.created_from:
            out["from"] = self.created_from.isoformat()
        if self.created_to:
            out["to"] = self.created_to.isoformat()
        if self.search:
            out["q"] = self.search
        return out

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.to_query().items()]
        return "; ".join(parts) if parts else "no filters"


def applied_filters(scope: Scope, filters: TicketFilters | None) -> TicketFilters:
    """The part of ``filters`` that a read under ``scope`` applies: the one statement of it.

    A ward councillor's ward is fixed by the Scope, so a ward filter could only
    narrow their view to nothing or repeat their ward (the scope condition is
    ANDed in either way): it is dropped rather than trusted. Every other value
    applies to every role. The queries (``tickets.filter_conditions``), the
    store's filters and every export's audit row and About sheet take their
    filters from here, so what is recorded is what was applied.
    """
    if filters is None:
        return TicketFilters()
    if not isinstance(filters, TicketFilters):
        raise InvalidFilter("filters must be a TicketFilters")
    if filters.wards and not scope.sees_whole_municipality:
        return dataclasses.replace(filters, wards=())
    return filters


#: The HTTP API's filter parameters (``/api/v1/export/tickets/...``, docs/api.md), the plan's names.
API_FILTER_PARAMETERS = ("status", "category", "ward_id", "search", "created_from", "created_to")
_REPEATABLE = frozenset({"status", "category", "ward_id"})


def api_filters(query: Mapping[str, list[bytes] | list[str]]) -> TicketFilters:
    """TicketFilters from an HTTP query (each name -> its values, as Tornado parses them).

    ``status``, ``category`` and ``ward_id`` may repeat or be comma separated; the others
    appear once. Unknown names, text that is not UTF-8 and bad values raise InvalidFilter.
    """
    values: dict[str, str] = {}
    for name, raw in query.items():
        if name not in API_FILTER_PARAMETERS:
            raise InvalidFilter(f"unknown query parameter {name[:40]!r}; use {', '.join(API_FILTER_PARAMETERS)}")
        texts = []
        for item in raw:
            try:
                texts.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
            except UnicodeDecodeError:
                raise InvalidFilter(f"{name} is not UTF-8 text") from None
        if len(texts) > 1 and name not in _REPEATABLE:
            raise InvalidFilter(f"give {name} once")
        values[name] = ",".join(texts)
    return TicketFilters.parse(values)
