"""TicketFilterState: the filter inputs of one session, one parameter per filter.

The widgets (``components.filters.FilterBar``, built with ``from_param``) and
the URL (``pn.state.location.sync``) both write these parameters; each
parameter refuses a value it cannot hold (an unknown status, a ward outside
the user's choice, a search too long) with a message a user can act on.
What no single parameter can check (created from <= created to) is checked
when the store turns the state into ``data.filters.TicketFilters``
(``DashboardStore``), which is what every view and export reads.

The parameters serialize as the URL has always spelled filters
(``?status=open,in_progress&from=2026-01-01&q=pipe``): ``Location.sync``
calls ``serialize``/``deserialize`` of each parameter (panel/io/location.py,
``_update_synced`` and ``_update_query``), so old links keep working and new
links look the same. Panel's ``parse_query`` decodes a value before
``deserialize`` sees it: ``[...]`` as JSON (Panel's own list form, accepted
too), digits as a number, ``true``/``false`` as a bool; ``deserialize`` turns
those back into text. A search that this would not give back (``0012``, ``1.50``,
``TRUE``, ``[pipe``) is written as a one-item JSON list, which it decodes
exactly; a hand-typed ``q=0012`` still arrives as 12.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable
from urllib.parse import urlencode

import param
from panel.util import parse_query

from data.errors import InvalidFilter
from data.filters import MAX_SEARCH_LENGTH, STATUSES, TicketFilters, as_date
from data.models import VISIBLE_CATEGORIES

#: The filter parameters, in the order the filter bar shows them.
FILTER_NAMES = ("statuses", "categories", "wards", "created_from", "created_to", "search")
#: Parameter -> URL query key (the keys every OpsDash link has used).
URL_KEYS = {"statuses": "status", "categories": "category", "wards": "ward",
            "created_from": "from", "created_to": "to", "search": "q"}


def _text(value: Any) -> str:
    """A URL value as text again (parse_query made ``12`` an int and ``true`` a bool)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class CommaList(param.ListSelector):
    """A ListSelector written to the URL as ``a,b`` ('' when empty); read from ``a,b`` or a JSON list."""

    @classmethod
    def serialize(cls, value: list[str] | None) -> str:
        # '' rather than None: Location writes '' over an old value; None would leave it there.
        return ",".join(value or [])

    @classmethod
    def deserialize(cls, value: Any) -> list[str]:
        if value is None or value == "" or value == "null":
            return []
        items = value if isinstance(value, (list, tuple)) else _text(value).split(",")
        return list(dict.fromkeys(_text(v).strip() for v in items if _text(v).strip()))

    def _validate_value(self, value: Any, allow_None: bool | None = None) -> None:
        unknown = [v for v in value or [] if v not in self.objects] if self.check_on_set else []
        if unknown:
            choices = [str(o) for o in self.objects[:12]] + (["\u2026"] if len(self.objects) > 12 else [])
            raise ValueError(f"unknown {(self.label or self.name).lower()} {str(unknown[0])[:40]!r}; "
                             f"choose from {', '.join(choices) or 'nothing'}")
        super()._validate_value(value, allow_None)


class UrlDate(param.CalendarDate):
    """A CalendarDate written as ``2026-01-31`` ('' when unset); read from a date or an ISO timestamp."""

    @classmethod
    def serialize(cls, value: dt.date | None) -> str:
        return "" if value is None else value.isoformat()

    @classmethod
    def deserialize(cls, value: Any) -> dt.date | None:
        if value == "null":
            return None
        try:
            return as_date(value if isinstance(value, (dt.date, type(None))) else _text(value), "the date")
        except InvalidFilter as exc:
            raise ValueError(str(exc)) from None


class SearchText(param.String):
    """Free text of at most ``MAX_SEARCH_LENGTH`` characters (the widget's own limit is the browser's)."""

    @classmethod
    def serialize(cls, value: str | None) -> str:
        if not value or cls.deserialize(parse_query("?" + urlencode({"q": value})).get("q")) == value:
            return value or ""
        return json.dumps([value], ensure_ascii=False)  # read back exactly; as plain text it would not be

    @classmethod
    def deserialize(cls, value: Any) -> str:
        if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], str):
            return value[0]
        return "" if value is None else _text(value)

    def _validate_value(self, val: Any, allow_None: bool) -> None:
        super()._validate_value(val, allow_None)
        if isinstance(val, str):
            if len(val) > MAX_SEARCH_LENGTH:
                raise ValueError(f"search text is too long (at most {MAX_SEARCH_LENGTH} characters)")
            if "\x00" in val:
                raise ValueError("search text contains a NUL character")


class TicketFilterState(param.Parameterized):
    """What the user asked to filter by: one parameter per filter, each validated on its own.

    ``categories`` and ``wards`` accept any value until ``set_choices`` names
    the ones that exist (a store built in a notebook or a test never does);
    ``fix_ward`` makes ``wards`` a councillor's one ward, unchangeable.
    """

    statuses = CommaList(default=[], objects=list(STATUSES), label="Status")
    categories = CommaList(default=[], objects=list(VISIBLE_CATEGORIES), check_on_set=False, label="Category")
    wards = CommaList(default=[], objects=[], check_on_set=False, label="Ward")
    created_from = UrlDate(default=None, allow_None=True, label="Created from")
    created_to = UrlDate(default=None, allow_None=True, label="Created to")
    search = SearchText(default="", label="Search")

    def set_choices(self, categories: Iterable[str] | None = None, wards: Iterable[str] | None = None) -> None:
        """From now on only these categories / wards are accepted (None: leave as it is)."""
        for name, choices in (("categories", categories), ("wards", wards)):
            if choices is None or self.param[name].constant:
                continue
            choices = list(choices)
            keep = [v for v in getattr(self, name) if v in choices]
            if keep != getattr(self, name):
                setattr(self, name, keep)
            self.param[name].objects = choices
            self.param[name].check_on_set = True

    def fix_ward(self, ward_id: str) -> None:
        """A ward councillor's state: their ward shown, no other ever accepted (the Scope fixes it anyway)."""
        self.param.wards.objects = [ward_id]
        self.param.wards.check_on_set = True
        self.wards = [ward_id]
        self.param.wards.constant = True

    def defaults(self) -> dict[str, Any]:
        """Every changeable filter at its default: ``state.param.update(**state.defaults())`` clears them."""
        return {name: self.param[name].default for name in FILTER_NAMES if not self.param[name].constant}

    def to_filters(self) -> TicketFilters:
        """These inputs as TicketFilters; InvalidFilter when they disagree (created from after created to)."""
        return TicketFilters(statuses=tuple(self.statuses), categories=tuple(self.categories),
                             wards=tuple(self.wards), created_from=self.created_from,
                             created_to=self.created_to, search=self.search)

    def values_of(self, filters: TicketFilters) -> dict[str, Any]:
        """``filters`` as values of these parameters (a fixed ward is left out)."""
        values = {"statuses": list(filters.statuses), "categories": list(filters.categories),
                  "wards": list(filters.wards), "created_from": filters.created_from,
                  "created_to": filters.created_to, "search": filters.search}
        return {k: v for k, v in values.items() if not self.param[k].constant}
