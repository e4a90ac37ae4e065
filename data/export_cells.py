"""What an exported cell may contain: the column layout and the cell rules.

Both writers (CSV, XLSX) and the PostgreSQL COPY path take their columns and
their formula rule from here, so the three can never disagree about which
text is neutralised (OWASP CSV injection; docs/architecture.md, invariant 4).
"""
from __future__ import annotations

import re
import unicodedata
from functools import cache
from itertools import compress

import pandas as pd
from sqlalchemy import ColumnElement, String, case, func, literal, or_

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

# ---- The formula rule (docs/architecture.md, invariant 4; OWASP CSV injection, issue 14) --------------------
# A spreadsheet reads a cell as a formula when its text starts with a formula sign. What counts as
# "starts" and as "a sign" is wider than ASCII: Excel folds full-width and other compatibility
# forms (＝ ＋ － ＠ as typed by an East Asian input method) to the ASCII signs, and spaces,
# no-break spaces and invisible characters before the sign are either skipped by some reader or
# unseen by the person who opens the file. The rule, fail closed:
#
#   a cell is formula-like when, after a leading run of SKIPPED characters, the next character
#   is a FORMULA SIGN; tab, CR and LF (OWASP) count as formula signs themselves.
#
# SKIPPED: every character Python calls non-printable (Unicode "Other" and "Separator": controls
# such as tab/CR/LF, format characters such as U+200B, U+2060, U+FEFF and the bidi controls,
# private-use and unassigned code points, every space separator such as U+00A0 and U+3000, line
# and paragraph separators), the ASCII space, the default-ignorable letters and marks that show
# no glyph (_GLYPHLESS), and quotes: " and ' and whatever NFKC folds to them (＂ ＇).
# FORMULA SIGN: = + - @, every character whose NFKC form starts with one of them (full-width
# ＝＋－＠, small ﹦﹢﹣﹫, super/subscript ⁼₌⁺₊, ⩵ ...), and U+2212 MINUS SIGN with the
# characters folding to it (⁻ ₋): NFKC keeps U+2212, but number and formula parsers read it as
# minus. Not signs: dashes (U+2010-U+2015), the heavy dingbat signs (U+2795/U+2796) and ｜
# (a pipe is DDE only after a leading =, which already counts).
# Benign text keeps OWASP's behaviour: -5 and +27 82 555 0101 start with a sign, so they get the
# apostrophe (a spreadsheet would otherwise compute them); 5-3 and a=b do not.
#
# The two sets are enumerated once per process (about 0.3 s, on first use) into one regular
# expression whose text both Python's re and PostgreSQL's ARE read alike (\uXXXX / \UXXXXXXXX
# escapes in bracket ranges): the chunked writers and the COPY path apply the very same set.
FORMULA_SIGNS = "=+-@\u2212"
OWASP_SIGNS = "\t\r\n"
QUOTES = "\"'"
#: Unicode's Default_Ignorable_Code_Point letters and marks (the rest of that property is "Other"):
#: combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other variation selectors.
_GLYPHLESS = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180D), (0x180F, 0x180F),
              (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0100, 0xE01EF))
_SURROGATES = range(0xD800, 0xE000)  # never in stored text: PostgreSQL and the drivers refuse them
NEUTRALISER = "'"

#: XML 1.0 cannot hold these (xlsx is XML): C0 controls except tab/LF/CR,
#: U+FFFE/U+FFFF and lone surrogates. They are removed, not escaped.
XLSX_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
XLSX_MAX_CELL_CHARS = 32_767
TRUNCATION_MARKER = " [...truncated]"


def _folds_to(ch: str, chars: str, whole: bool = False) -> bool:
    folded = unicodedata.normalize("NFKC", ch)
    return folded in chars if whole else folded[:1] in chars


@cache
def formula_code_points() -> tuple[bytes, bytes]:
    """(SKIPPED, FORMULA SIGN) of the rule above: one byte per code point, 1 = member.

    Built with C-level maps over all 0x110000 code points (about 0.3 s, once per process).
    """
    everything = range(0x110000)
    skipped = bytearray(map(str.isprintable, map(chr, everything))).translate(bytes([1, 0]) + bytes(254))
    skipped[_SURROGATES.start:_SURROGATES.stop] = bytes(len(_SURROGATES))
    signs = bytearray(len(everything))
    # NFKC changes only characters with a decomposition mapping: the candidates for folding.
    folding = [chr(cp) for cp in compress(everything, map(unicodedata.decomposition, map(chr, everything)))]
    for ch in [c for c in folding if _folds_to(c, FORMULA_SIGNS)] + list(FORMULA_SIGNS + OWASP_SIGNS):
        signs[ord(ch)] = 1
    for ch in [c for c in folding if _folds_to(c, QUOTES, whole=True)] + list(QUOTES + " "):
        skipped[ord(ch)] = 1
    for low, high in _GLYPHLESS:
        skipped[low:high + 1] = b"\x01" * (high + 1 - low)
    return bytes(skipped), bytes(signs)


def _bracket(members: bytes) -> str:
    """A bracket expression of the code points marked in ``members``, as ranges of \\UXXXXXXXX escapes
    (read alike by Python's re and PostgreSQL's ARE)."""
    runs = ((m.start(), m.end() - 1) for m in re.finditer(rb"\x01+", members))
    return "[" + "".join(f"\\U{a:08X}" if a == b else f"\\U{a:08X}-\\U{b:08X}" for a, b in runs) + "]"


@cache
def formula_start_pattern() -> str:
    """The rule as one regular expression, the same text for Python and for PostgreSQL."""
    skipped, signs = formula_code_points()
    return f"^{_bracket(skipped)}*{_bracket(signs)}"


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
