"""The streaming .xlsx writer: SpreadsheetML written chunk by chunk straight into the zip.

Why our own writer: XlsxWriter (constant_memory) and openpyxl (write-only)
take one Python call per cell and spend most of an export inside it; here a
chunk of rows becomes XML column by column, one f-string per cell, which
measured 5-10 times faster than XlsxWriter on the same chunks with the same
memory bound (bench/bench_export.py, docs/performance.md). Every file the
tests write is read back with openpyxl and with calamine (an independent
reader) and each part is checked to be well-formed XML.
The format is the small subset Excel itself writes for plain
data: inline strings (always ``t="inlineStr"``, so text can never be a
formula; docs/architecture.md, invariant 4), numbers with a date format, one bold and one
quote-prefix style, a frozen header row, an autofilter, column widths.
A sheet holds at most ``sheet_rows`` data rows; the export continues on the
next sheet. The last sheet describes the export.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from typing import IO, Iterable
from xml.sax.saxutils import escape

import pandas as pd

from .export_cells import (
    DATETIME_SOURCES,
    EXPORT_COLUMNS,
    XLSX_ILLEGAL,
    XLSX_MAX_CELL_CHARS,
    formula_like_flags,
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
# Rows turned into XML at once: large enough for fast column-wise string
# operations, small enough that their intermediate strings stay a few MB.
XML_BATCH_ROWS = 2_000
# Style ids in styles.xml below.
BOLD, DATE, QUOTED = 1, 2, 3
# XML parsers turn CR into LF and the spec reads _xHHHH_ as a character: both
# are escaped the way Excel writes them (ST_Xstring), so the text survives.
_XSTRING_LITERAL = re.compile(r"(_x[0-9A-Fa-f]{4}_)")

NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
NS_R = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
STYLES = (
    XML_HEAD + f"<styleSheet {NS}>"
    f'<numFmts count="1"><numFmt numFmtId="164" formatCode="{DATETIME_FORMAT}"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill>'
    "</fills>"
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="4"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0" quotePrefix="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: any number of columns."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def column_width(header: str, source: str) -> float:
    """A width that fits the header and typical values, whatever the column set."""
    typical = 20 if source in DATETIME_SOURCES else _WIDE_COLUMNS.get(source, 14)
    return float(min(80, max(len(header) + 3, typical)))


def excel_serials(stamps: pd.Series) -> pd.Series:
    """Local (tz-aware) timestamps as Excel serial day numbers, whole seconds; NaN when missing."""
    naive = stamps.dt.tz_localize(None).dt.floor("s")
    return (naive - _EXCEL_EPOCH) / pd.Timedelta(days=1)


def xml_escape(value: str) -> str:
    """Cell text as XML character data."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if "_x" in value:
        value = _XSTRING_LITERAL.sub(r"_x005F\1", value)
    return value.replace("\r", "_x000D_")


def clean_texts(values: list[str]) -> list[str]:
    """Illegal characters removed and overlong text cut; one C-speed scan decides if any value needs it."""
    joined = "".join(values)
    if XLSX_ILLEGAL.search(joined) or (values and max(map(len, values)) > XLSX_MAX_CELL_CHARS // 2):
        return [xlsx_text(v) for v in values]
    return values


def text_cells(letter: str, rows: list[str], values: list[str]) -> list[str]:
    """Inline-string cells (never formulas); the quote-prefix style where text could start one; '' if empty.

    Plain list comprehensions over one column: per cell this is one f-string,
    several times faster than pandas string operations or a writer library.
    """
    risky = formula_like_flags(values)
    joined = "".join(values)
    if any(ch in joined for ch in "&<>\r") or "_x" in joined:
        values = [xml_escape(v) for v in values]
    plain, quoted = ' t="inlineStr"><is><t xml:space="preserve">', f' s="{QUOTED}" t="inlineStr"><is><t xml:space="preserve">'
    return [f'<c r="{letter}{r}"{quoted if q else plain}{v}</t></is></c>' if v else ""
            for r, v, q in zip(rows, values, risky)]


def literal_row(row: int, values: Iterable[str], styles: Iterable[int]) -> str:
    """One row of fixed text (headers, the describing sheet); style 0: quote-prefixed when formula-like."""
    cells = []
    for col, (value, style) in enumerate(zip(values, styles)):
        value = xlsx_text(value)
        if not value:
            continue
        style = style or (QUOTED if is_formula_like(value) else 0)
        styled = f' s="{style}"' if style else ""
        cells.append(f'<c r="{column_letter(col)}{row}"{styled} t="inlineStr"><is><t xml:space="preserve">'
                     f"{xml_escape(value)}</t></is></c>")
    return f'<row r="{row}">{"".join(cells)}</row>'


@dataclass
class XlsxTicketWriter:
    """Write ticket chunks into one workbook; call ``close(about)`` once at the end."""

    target: str | IO[bytes]
    timezone: str
    sheet_rows: int = MAX_SHEET_ROWS
    rows: int = 0
    sheets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.sheet_rows <= MAX_SHEET_ROWS:
            raise ValueError(f"sheet_rows must be between 1 and {MAX_SHEET_ROWS}")
        # Level 1: the XML compresses about 8:1 anyway; higher levels cost seconds per million rows.
        self.zip = zipfile.ZipFile(self.target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        self.headers = [f"{h} ({self.timezone})" if s in DATETIME_SOURCES else h for h, s in EXPORT_COLUMNS]
        self.letters = [column_letter(i) for i in range(len(EXPORT_COLUMNS))]
        self._handle: IO[bytes] | None = None
        self._sheet_row = 0
        self._filters: list[int] = []  # last autofilter row of each data sheet

    @property
    def data_sheets(self) -> int:
        """Sheets holding ticket rows (after ``close``)."""
        return len(self._filters)

    # -- sheets ----------------------------------------------------------------------
    def _open_sheet(self, name: str, widths: list[float], frozen: bool) -> None:
        self.sheets.append(name)
        self._handle = self.zip.open(f"xl/worksheets/sheet{len(self.sheets)}.xml", "w", force_zip64=True)
        pane = ('<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
                '<selection pane="bottomLeft"/>') if frozen else ""
        selected = ' tabSelected="1"' if len(self.sheets) == 1 else ""
        cols = "".join(f'<col min="{i + 1}" max="{i + 1}" width="{w}" customWidth="1"/>' for i, w in enumerate(widths))
        self._write(f'{XML_HEAD}<worksheet {NS} {NS_R}><sheetViews><sheetView{selected} workbookViewId="0">{pane}'
                    f'</sheetView></sheetViews><sheetFormatPr defaultRowHeight="15"/><cols>{cols}</cols><sheetData>')
        self._sheet_row = 0

    def _new_data_sheet(self) -> None:
        if self._handle is not None:
            self._close_sheet()
        number = len(self.sheets) + 1
        widths = [column_width(h, s) for h, (_, s) in zip(self.headers, EXPORT_COLUMNS)]
        self._open_sheet(SHEET_NAME if number == 1 else f"{SHEET_NAME} {number}", widths, frozen=True)
        self._write(literal_row(1, self.headers, [BOLD] * len(self.headers)))

    def _close_sheet(self, autofilter: bool = True) -> None:
        last = max(self._sheet_row + 1, 2)
        tail = ""
        if autofilter:
            self._filters.append(last)
            tail = f'<autoFilter ref="A1:{self.letters[-1]}{last}"/>'
        self._write(f"</sheetData>{tail}</worksheet>")
        self._handle.close()
        self._handle = None

    def _write(self, text: str) -> None:
        self._handle.write(text.encode("utf-8"))

    # -- rows -------------------------------------------------------------------------
    def write_chunk(self, frame: pd.DataFrame) -> None:
        """Append a chunk from ``iter_ticket_chunks`` (datetimes already in local time)."""
        start = 0
        while start < len(frame):
            if self._handle is None or self._sheet_row >= self.sheet_rows:
                self._new_data_sheet()
            take = min(self.sheet_rows - self._sheet_row, len(frame) - start, XML_BATCH_ROWS)
            self._write(self._rows_xml(frame.iloc[start:start + take], first_row=self._sheet_row + 2))
            self._sheet_row += take
            start += take
        self.rows += len(frame)

    def _rows_xml(self, frame: pd.DataFrame, first_row: int) -> str:
        rows = [str(n) for n in range(first_row, first_row + len(frame))]
        columns = []
        for letter, (_, source) in zip(self.letters, EXPORT_COLUMNS):
            if source in DATETIME_SOURCES:
                serials = excel_serials(frame[source]).tolist()
                columns.append([f'<c r="{letter}{r}" s="{DATE}"><v>{v!r}</v></c>' if v == v else ""
                                for r, v in zip(rows, serials)])
            else:
                columns.append(text_cells(letter, rows, clean_texts(text_series(frame, source).tolist())))
        return "".join(f'<row r="{r}">{"".join(cells)}</row>' for r, *cells in zip(rows, *columns))

    # -- the end ----------------------------------------------------------------------
    def close(self, about: Iterable[tuple[str, str]]) -> None:
        """Finish the data sheets, add the sheet describing the export, write the workbook parts."""
        if self._handle is None:
            self._new_data_sheet()  # an empty result still gets its header row
        self._close_sheet()
        self._open_sheet(ABOUT_SHEET, [24.0, 80.0], frozen=False)
        for row, (label, value) in enumerate(about, start=1):
            self._write(literal_row(row, [label, value], [BOLD, 0]))
        self._close_sheet(autofilter=False)
        self._write_workbook()
        self.zip.close()

    def abort(self) -> None:
        """Release the zip after a failure (the caller deletes the partial file)."""
        try:
            if self._handle is not None:
                self._handle.close()
            self.zip.close()
        except (OSError, ValueError):
            pass

    def _write_workbook(self) -> None:
        n = len(self.sheets)
        overrides = "".join(
            f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            for i in range(1, n + 1))
        self.zip.writestr("[Content_Types].xml", (
            XML_HEAD + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/styles.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            f"{overrides}</Types>"))
        self.zip.writestr("_rels/.rels", (
            XML_HEAD + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'officeDocument" Target="xl/workbook.xml"/></Relationships>'))
        rels = "".join(
            f'<Relationship Id="rId{i}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            f'worksheet" Target="worksheets/sheet{i}.xml"/>' for i in range(1, n + 1))
        self.zip.writestr("xl/_rels/workbook.xml.rels", (
            XML_HEAD + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'{rels}<Relationship Id="rId{n + 1}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/styles" Target="styles.xml"/></Relationships>'))
        sheets = "".join(f'<sheet name="{escape(name)}" sheetId="{i}" r:id="rId{i}"/>'
                         for i, name in enumerate(self.sheets, start=1))
        # Excel keeps each sheet's autofilter range in a hidden defined name as well.
        names = "".join(
            f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
            f"'{escape(name)}'!$A$1:${self.letters[-1]}${last}</definedName>"
            for i, (name, last) in enumerate(zip(self.sheets, self._filters)))
        self.zip.writestr("xl/workbook.xml", (
            f"{XML_HEAD}<workbook {NS} {NS_R}><bookViews><workbookView/></bookViews><sheets>{sheets}</sheets>"
            f"{f'<definedNames>{names}</definedNames>' if names else ''}</workbook>"))
        self.zip.writestr("xl/styles.xml", STYLES)
