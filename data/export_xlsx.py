"""The streaming .xlsx writer (XlsxWriter in constant_memory mode).

Why XlsxWriter: in our benchmark (bench/bench_export.py, docs/performance.md)
it writes faster than openpyxl's write-only mode with a flat memory profile,
and it can mark a text cell with Excel's quote prefix. Its options below turn
off every guess it would make about strings (formulas, URLs, numbers), so
citizen text is always a literal string cell (design.md invariant 4).
Rows arrive chunk by chunk; each sheet holds at most ``sheet_rows`` data
rows and the export continues on the next sheet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Iterable

import pandas as pd
import xlsxwriter

from .export_cells import (
    DATETIME_SOURCES,
    EXPORT_COLUMNS,
    FORMULA_START,
    XLSX_ILLEGAL,
    XLSX_MAX_CELL_CHARS,
    is_formula_like,
    text_series,
    xlsx_text,
)

#: Excel's last row is 1,048,576; one is the header.
MAX_SHEET_ROWS = 1_048_575
SHEET_NAME = "Tickets"
ABOUT_SHEET = "About this export"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_WIDE_COLUMNS = {"description": 60, "address": 40}


def column_width(header: str, source: str) -> float:
    """A width that fits the header and typical values, whatever the column set."""
    typical = 20 if source in DATETIME_SOURCES else _WIDE_COLUMNS.get(source, 14)
    return float(min(80, max(len(header) + 3, typical)))


def excel_serials(stamps: pd.Series) -> pd.Series:
    """Local (tz-aware) timestamps as Excel serial day numbers, whole seconds; NaN when missing."""
    naive = stamps.dt.tz_localize(None).dt.floor("s")
    return (naive - _EXCEL_EPOCH) / pd.Timedelta(days=1)


@dataclass
class XlsxTicketWriter:
    """Write ticket chunks into one workbook; call ``close(about)`` once at the end."""

    target: str | IO[bytes]
    timezone: str
    sheet_rows: int = MAX_SHEET_ROWS
    rows: int = 0
    sheets: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.sheet_rows <= MAX_SHEET_ROWS:
            raise ValueError(f"sheet_rows must be between 1 and {MAX_SHEET_ROWS}")
        self.book = xlsxwriter.Workbook(self.target, {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "remove_timezone": True,
        })
        self.header_format = self.book.add_format({"bold": True})
        self.date_format = self.book.add_format({"num_format": DATETIME_FORMAT})
        # Excel's own marker for "this is text, even if it looks like a formula".
        self.quoted_format = self.book.add_format({"quote_prefix": True})
        self._sheet = None
        self._sheet_row = 0

    def _sheet_name(self, number: int) -> str:
        return SHEET_NAME if number == 1 else f"{SHEET_NAME} {number}"

    def _new_sheet(self):
        if self._sheet is not None:
            self._finish_sheet()
        sheet = self.book.add_worksheet(self._sheet_name(len(self.sheets) + 1))
        for col, (header, source) in enumerate(EXPORT_COLUMNS):
            label = f"{header} ({self.timezone})" if source in DATETIME_SOURCES else header
            sheet.set_column(col, col, column_width(label, source))
            sheet.write_string(0, col, label, self.header_format)
        sheet.freeze_panes(1, 0)
        self.sheets.append(sheet)
        self._sheet, self._sheet_row = sheet, 0
        return sheet

    def _finish_sheet(self) -> None:
        self._sheet.autofilter(0, 0, max(self._sheet_row, 1), len(EXPORT_COLUMNS) - 1)

    def write_chunk(self, frame: pd.DataFrame) -> None:
        """Append a chunk from ``iter_ticket_chunks`` (datetimes already in local time)."""
        # Column-wise preparation (vectorised), so the per-cell loop only writes.
        columns: list[tuple[int, bool, list, list]] = []
        for col, (_, source) in enumerate(EXPORT_COLUMNS):
            if source in DATETIME_SOURCES:
                columns.append((col, True, excel_serials(frame[source]).tolist(), []))
                continue
            series = text_series(frame, source)
            suspect = (series.str.contains(XLSX_ILLEGAL) | (series.str.len() > XLSX_MAX_CELL_CHARS // 2)).tolist()
            values = [xlsx_text(v) if bad else v for v, bad in zip(series.tolist(), suspect)]
            formats = [self.quoted_format if is_formula_like(v) else None for v in values] \
                if series.str.contains(FORMULA_START).any() else [None] * len(values)
            columns.append((col, False, values, formats))
        for i in range(len(frame)):
            if self._sheet is None or self._sheet_row >= self.sheet_rows:
                self._new_sheet()
            self._sheet_row += 1
            row, sheet = self._sheet_row, self._sheet
            for col, is_date, values, formats in columns:
                value = values[i]
                if is_date:
                    if value == value:  # not NaN
                        sheet.write_number(row, col, value, self.date_format)
                elif value:
                    sheet.write_string(row, col, value, formats[i])
        self.rows += len(frame)

    def close(self, about: Iterable[tuple[str, str]]) -> None:
        """Finish the data sheets, add the sheet describing the export, write the file."""
        if self._sheet is None:
            self._new_sheet()  # an empty result still gets its header row
        self._finish_sheet()
        info = self.book.add_worksheet(ABOUT_SHEET)
        info.set_column(0, 0, 24)
        info.set_column(1, 1, 80)
        for row, (label, value) in enumerate(about):
            info.write_string(row, 0, label, self.header_format)
            text = xlsx_text(value)
            info.write_string(row, 1, text, self.quoted_format if is_formula_like(text) else None)
        self.book.close()

