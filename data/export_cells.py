"""What an exported cell may contain: the column layout and the cell rules.

Both writers (CSV, XLSX) and the PostgreSQL COPY path take their columns and
their formula rule from here, so the three can never disagree about which
text is neutralised (OWASP CSV injection; docs/architecture.md, invariant 4).
"""
from __future__ import annotations

import re
from functools import cache

import pandas as pd
from sqlalchemy import ColumnElement, String, case, func, literal, or_

from .formula_rule import formula_start_pattern
from .tickets import ticket_column

#: (header, tickets column): the ticketing system's export layout plus Ward.
EXPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Tracking Number", "tracking_number"),
    ("Category", "category"),
    ("Status", "status"),
    ("Severity", "severity"),
    ("Description", "description"),
    ("Address", "address"),
    ("Ward", "ward_id"),
    ("Language", "language"),
    ("Created", "created_at"),
    ("SLA Response Deadline", "sla_response_deadline"),
    ("SLA Resolution Deadline", "sla_resolution_deadline"),
    ("First Responded", "first_responded_at"),
    ("Resolved At", "resolved_at"),
    ("Escalated At", "escalated_at"),
)
HEADERS: tuple[str, ...] = tuple(h for h, _ in EXPORT_COLUMNS)
SOURCE_COLUMNS: tuple[str, ...] = tuple(c for _, c in EXPORT_COLUMNS)
DATETIME_SOURCES = frozenset(
    {"created_at", "sla_response_deadline", "sla_resolution_deadline", "first_responded_at", "resolved_at",
     "escalated_at"}
)
# The formula rule (which text is neutralised, and why) is data/formula_rule.py's.

NEUTRALISER = "'"

#: XML 1.0 cannot hold these (xlsx is XML): C0 controls except tab/LF/CR,
#: U+FFFE/U+FFFF and lone surrogates. They are removed, not escaped.
XLSX_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
XLSX_MAX_CELL_CHARS = 32_767
TRUNCATION_MARKER = " [...truncated]"


@cache
def _formula_start() -> re.Pattern[str]:
    return re.compile(formula_start_pattern())


# A first character that is an ASCII letter or digit settles the question without the pattern
# (most cells): in Python a set lookup, in SQL a comparison of ascii() that spares the regex
# (1,000,000 cells: 0.28 s with it, 0.49 s without, on PostgreSQL 15).
_PLAIN_RANGES = (("0", "9"), ("A", "Z"), ("a", "z"))
_PLAIN_START = frozenset(chr(cp) for low, high in _PLAIN_RANGES for cp in range(ord(low), ord(high) + 1))


def is_formula_like(text: str) -> bool:
    """Whether a spreadsheet could read ``text`` as a formula (the rule above)."""
    return text[:1] not in _PLAIN_START and _formula_start().match(text) is not None


def formula_like_flags(values: list[str]) -> list[bool]:
    """``is_formula_like`` of each value, without a function call per cell (the writers' hot loop)."""
    plain, match = _PLAIN_START, _formula_start().match
    return [v[:1] not in plain and match(v) is not None for v in values]


def neutralise(text: str) -> str:
    """``text`` made inert for a spreadsheet: a leading apostrophe when it could start a formula."""
    return NEUTRALISER + text if is_formula_like(text) else text


def neutralised_sql(column: ColumnElement) -> ColumnElement[str]:
    """``neutralise`` as SQL (PostgreSQL); NULL becomes ''."""
    value = func.coalesce(column, "")
    first = func.ascii(value)  # the first character's code point; 0 for ''
    return case(
        (or_(*(first.between(ord(low), ord(high)) for low, high in _PLAIN_RANGES)), value),
        (value.regexp_match(formula_start_pattern()), literal(NEUTRALISER, String).concat(value)),
        else_=value,
    )


def iso_local_sql(column: ColumnElement) -> ColumnElement[str]:
    """ISO 8601 with offset in the session time zone (set per COPY); NULL becomes ''."""
    return func.coalesce(func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SSTZH:TZM'), "")


def copy_columns() -> list[ColumnElement]:
    """The export columns as SQL expressions, labelled with their headers."""
    out = []
    for header, source in EXPORT_COLUMNS:
        column = ticket_column(source)
        expr = iso_local_sql(column) if source in DATETIME_SOURCES else neutralised_sql(column)
        out.append(expr.label(header))
    return out


def text_series(frame: pd.DataFrame, column: str) -> pd.Series:
    """A text column as plain ``str`` values, missing values as ''."""
    return frame[column].astype(object).where(frame[column].notna(), "").astype(str)


def csv_cells(frame: pd.DataFrame) -> list[list[str]]:
    """One chunk (from ``iter_ticket_chunks``, datetimes already local) as CSV columns."""
    columns: list[list[str]] = []
    for source in SOURCE_COLUMNS:
        if source in DATETIME_SOURCES:
            stamps = frame[source]
            text = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S%z")
            # %z gives +0200; ISO 8601 extended format wants +02:00.
            text = text.str[:-2] + ":" + text.str[-2:]
            columns.append(text.where(stamps.notna(), "").tolist())
        else:
            text = text_series(frame, source).str.replace("\x00", "", regex=False)
            values = text.tolist()
            columns.append([NEUTRALISER + v if risky else v for v, risky in zip(values, formula_like_flags(values))])
    return columns


def xlsx_text(value: str) -> str:
    """Text an xlsx cell can hold: illegal characters removed, cut to the cell limit with a marker."""
    value = XLSX_ILLEGAL.sub("", value)
    # Excel counts UTF-16 code units; a non-BMP character takes two.
    if len(value) > XLSX_MAX_CELL_CHARS // 2 and len(value.encode("utf-16-le")) // 2 > XLSX_MAX_CELL_CHARS:
        budget = XLSX_MAX_CELL_CHARS - len(TRUNCATION_MARKER)
        kept, used = [], 0
        for ch in value:
            used += 2 if ord(ch) > 0xFFFF else 1
            if used > budget:
                break
            kept.append(ch)
        value = "".join(kept) + TRUNCATION_MARKER
    return value
