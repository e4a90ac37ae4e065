"""Reading exported files back, and the oracle they are compared with.

The oracle restates the export rules independently of data/export_cells.py
(its own regular expression, its own formatting), and starts from
``data.tickets.scoped_tickets``: the rows the table shows.
"""
from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import openpyxl
import pandas as pd
from python_calamine import CalamineWorkbook

from data.filters import TicketFilters
from data.scope import Scope
from data.tickets import scoped_tickets

HEADERS = [
    "Tracking Number", "Category", "Status", "Severity", "Description", "Address", "Ward", "Language", "Created",
    "SLA Response Deadline", "SLA Resolution Deadline", "First Responded", "Resolved At", "Escalated At",
]
SOURCES = [
    "tracking_number", "category", "status", "severity", "description", "address", "ward_id", "language",
    "created_at", "sla_response_deadline", "sla_resolution_deadline", "first_responded_at", "resolved_at",
    "escalated_at",
]
DATETIMES = set(SOURCES[8:])


def xml_text(text: str) -> str:
    """``text`` without what XML 1.0 cannot hold: its Char production, typed out (not export_cells' regex).

    Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
    """
    return "".join(ch for ch in text if ord(ch) in (0x9, 0xA, 0xD) or 0x20 <= ord(ch) <= 0xD7FF
                   or 0xE000 <= ord(ch) <= 0xFFFD or 0x10000 <= ord(ch) <= 0x10FFFF)


# ---- the formula rule, restated from its sources (never imported from data/) ----------------
# OWASP (CSV injection): a cell starting with = + - @ tab CR LF is a formula for a spreadsheet,
# also after leading spaces and quotes. Issue 14 widens it: the same after any run of blank or
# invisible characters, and for any character that compatibility-folds (NFKC) to one of those
# signs or is the minus sign U+2212.
_BLANK_OR_INVISIBLE = {"Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cn"}  # separators, controls, format, private, unassigned
_FORMULA_SIGNS = {"=", "+", "-", "@", "\N{MINUS SIGN}"}


def _glyphless(ch: str) -> bool:
    """Default-ignorable letters and marks, found by their names (fillers, selectors, joiners)."""
    name = unicodedata.name(ch, "")
    return (name.endswith("FILLER") or "VARIATION SELECTOR" in name or name == "COMBINING GRAPHEME JOINER"
            or name.startswith("KHMER VOWEL INHERENT"))


def starts_a_formula(text: str) -> bool:
    """Whether ``text`` could be read as a formula: what the export must neutralise."""
    for ch in text:
        if ch in "\t\r\n":
            return True
        folded = unicodedata.normalize("NFKC", ch)
        if folded[:1] in _FORMULA_SIGNS:
            return True
        if unicodedata.category(ch) in _BLANK_OR_INVISIBLE or folded in ('"', "'") or _glyphless(ch):
            continue
        return False
    return False


def read_csv(path: Path | bytes) -> tuple[list[str], list[list[str]]]:
    raw = path if isinstance(path, bytes) else Path(path).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "CSV must start with a UTF-8 BOM"
    rows = list(csv.reader(io.StringIO(raw[3:].decode("utf-8"), newline="")))
    return rows[0], rows[1:]


_XSTRING_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def excel_text(value):
    """A cell value as Excel shows it: openpyxl leaves the spec's ``_xHHHH_`` escapes (ST_Xstring) undecoded."""
    if not isinstance(value, str):
        return value
    return _XSTRING_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def read_xlsx(path: Path) -> tuple[list[str], list[list], openpyxl.Workbook]:
    """Header and data rows of every data sheet (all but the last, which describes the export)."""
    book = openpyxl.load_workbook(path)
    data_sheets = book.worksheets[:-1]
    header = [excel_text(c.value) for c in data_sheets[0][1]]
    rows = []
    for sheet in data_sheets:
        assert [excel_text(c.value) for c in sheet[1]] == header, f"{sheet.title} repeats the header"
        rows += [[excel_text(v) for v in r] for r in sheet.iter_rows(min_row=2, values_only=True)]
    assert_same_with_second_reader(path, book.sheetnames, [header, *rows], len(data_sheets))
    return header, rows, book


def assert_same_with_second_reader(path: Path, sheetnames: list[str], rows: list[list], data_sheets: int) -> None:
    """Every part is well-formed XML, and calamine (an independent Rust reader) sees what openpyxl sees."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith((".xml", ".rels")):
                ElementTree.fromstring(archive.read(name))
    book = CalamineWorkbook.from_path(str(path))
    assert book.sheet_names == sheetnames
    seen = []
    for index in range(data_sheets):
        sheet = book.get_sheet_by_index(index).to_python(skip_empty_area=False)
        seen += sheet if index == 0 else sheet[1:]
    normalised = [[v if v is not None else "" for v in r] + [""] * (len(rows[0]) - len(r)) for r in rows]
    assert [[excel_text(v) for v in r] + [""] * (len(rows[0]) - len(r)) for r in seen] == normalised


def oracle_frame(engine, scope: Scope, filters: TicketFilters | None) -> pd.DataFrame:
    return scoped_tickets(engine, scope, filters, columns=SOURCES)


def _expected(frame: pd.DataFrame, stamp, text) -> list[list]:
    """Each cell of ``frame`` through ``stamp`` (present datetimes) or ``text`` (str, '' when missing)."""
    out = []
    for record in frame.to_dict("records"):
        row = []
        for source in SOURCES:
            value = record[source]
            if source in DATETIMES:
                row.append(stamp(value) if not pd.isna(value) else None)
            else:
                row.append(text("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)))
        out.append(row)
    return out


def expected_csv(frame: pd.DataFrame) -> list[list[str]]:
    """CSV cells: apostrophe before formula-like text, ISO 8601 local times with offset, '' when missing."""
    rows = _expected(frame, lambda ts: ts.isoformat(timespec="seconds"),
                     lambda text: "'" + text if starts_a_formula(text) else text)
    return [[cell if cell is not None else "" for cell in row] for row in rows]


def expected_xlsx(frame: pd.DataFrame) -> list[list]:
    """Cell values openpyxl reads back: literal text (no apostrophe), local naive datetimes to the second."""
    return _expected(frame, lambda ts: ts.tz_localize(None).floor("s").to_pydatetime(),
                     lambda text: xml_text(text) or None)
