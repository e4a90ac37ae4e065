"""Exports: exactly the scoped, filtered, non-sensitive tickets as CSV or XLSX, audited.

One entry point, ``export_tickets``, serves the download buttons, the
streaming HTTP route and ``opsdash export``. Rows always come from
``tickets.scoped_select`` (docs/architecture.md, invariants 1-3):

- CSV on PostgreSQL: ``COPY (<the scoped SELECT>) TO STDOUT`` with the
  formula rule and the local time zone applied in SQL, streamed to the file
  (the fastest path by far, see docs/performance.md);
- otherwise: ``iter_ticket_chunks`` (a server-side cursor) chunk by chunk.

The file is written next to its destination under a temporary name and only
renamed into place after the audit row is written, so a failed export leaves
no partial file and no unaudited file; its audit row says it failed
(``data.audit.record_failed_export``, written once the database answers when
the database is what failed).
"""
from __future__ import annotations

import codecs
import csv
import io
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Callable

import psycopg
from sqlalchemy import Engine

from .audit import CHANNELS, record_export, record_failed_export
from .errors import ExportCancelled, InvalidValue
from .export_cells import HEADERS, SOURCE_COLUMNS, copy_columns, csv_cells
from .export_xlsx import MAX_SHEET_ROWS, XlsxTicketWriter
from .filters import TicketFilters, applied_filters
from .metrics import EXPORTS, EXPORT_ROWS, EXPORT_SECONDS
from .replica import ReadRoute
from .scope import Scope
from .tickets import count_tickets, iter_ticket_chunks, scoped_select

FORMATS = ("csv", "xlsx")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
COPY_BATCH_ROWS = 5000
Progress = Callable[[int, int], None]  # (rows written so far, rows in total)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    row_count: int
    duration_ms: int
    filename: str  # the name a browser should save it under
    sheets: int = 1
    audit_id: int | None = None
    filters: TicketFilters = TicketFilters()  # the filters applied (and audited)


def check_format(fmt: object) -> str:
    if not isinstance(fmt, str) or fmt.strip().lower() not in FORMATS:
        shown = str(fmt)[:20]
        raise InvalidValue(f"unknown export format {shown!r}; choose csv or xlsx")
    return fmt.strip().lower()


def export_filename(scope: Scope, fmt: str, now: datetime | None = None) -> str:
    """``tickets_<municipality-slug>_<YYYYmmdd_HHMMSS>.<fmt>``, stamped in the municipality's time zone."""
    now = (now or datetime.now(timezone.utc)).astimezone(scope.tzinfo)
    slug = re.sub(r"[^a-z0-9-]+", "-", (scope.municipality_slug or "municipality").lower()).strip("-") or "municipality"
    return f"tickets_{slug}_{now:%Y%m%d_%H%M%S}.{check_format(fmt)}"


def _check_output(output: Path) -> Path:
    output = Path(output)
    if output.is_dir():
        raise InvalidValue(f"cannot write the export to {output}: it is a directory; give a file name")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidValue(f"cannot write the export to {output}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InvalidValue(f"cannot write the export to {output}: no permission to write in {parent}")
    return output


def export_tickets(
    engine: Engine,
    scope: Scope,
    filters: TicketFilters | None,
    fmt: str,
    output: str | Path,
    *,
    channel: str = "ui",
    progress: Progress | None = None,
    now: datetime | None = None,
    sheet_rows: int = MAX_SHEET_ROWS,
    chunk_size: int = 10_000,
    use_copy: bool | None = None,
    total: int | None = None,
    reads: ReadRoute | None = None,
) -> ExportResult:
    """Write the tickets ``scope`` may see under ``filters`` to ``output``; audited.

    ``use_copy`` (default: on PostgreSQL for CSV) picks the COPY path; the
    tests force both paths to prove they write the same bytes. ``total``:
    the number of rows, when the caller has just counted them (``progress``
    reports against it; otherwise a COUNT runs first when there is a
    ``progress`` to report to). ``reads``: where the rows are read (a caught-up
    replica, ``data.replica``); the audit row is always written with ``engine``,
    the primary.
    """
    fmt = check_format(fmt)
    if filters is not None and not isinstance(filters, TicketFilters):
        raise InvalidValue("filters must be a TicketFilters (use TicketFilters.parse for loose input)")
    # What applies under this scope (a councillor's ward filter does not): the rows, the About
    # sheet, the audit row and the result all name these, never the filters as asked.
    filters = applied_filters(scope, filters)
    output = _check_output(Path(output))
    audit_engine = engine
    if reads is not None:
        engine = reads.engine()  # chosen here, in the export's worker thread: it may wait for the replica
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    # The count costs a query of its own: made only when someone watches the progress.
    if total is None:
        total = count_tickets(engine, scope, filters) if progress else 0
    report = progress or (lambda done, total: None)
    report(0, total)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".part")
    except OSError as exc:  # read-only file system, quota, ...: os.access cannot tell in advance
        raise InvalidValue(f"cannot write the export to {output}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    outcome = "error"
    try:
        with os.fdopen(fd, "wb") as handle:
            if fmt == "csv":
                if use_copy is None:
                    use_copy = engine.dialect.name == "postgresql"
                writer = _copy_csv if use_copy else _chunked_csv
                rows, sheets = writer(engine, scope, filters, handle, total, report, chunk_size), 1
            else:
                rows, sheets = _xlsx(engine, scope, filters, handle, total, report, chunk_size, sheet_rows, now)
        duration_ms = int((time.perf_counter() - started) * 1000)
        audit_id = record_export(audit_engine, scope, fmt=fmt, filters=filters, row_count=rows,
                                 duration_ms=duration_ms, channel=channel, at=now)
        os.replace(tmp, output)
        outcome = "ok"
        EXPORT_SECONDS.labels(fmt, channel).observe(duration_ms / 1000)
        EXPORT_ROWS.labels(fmt, channel).observe(rows)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, ExportCancelled):
            # No file was delivered: written down as such (or queued until the database answers).
            # (A cancelled export's caller writes its row: it answered the user meanwhile.)
            record_failed_export(engine, scope, fmt=fmt, filters=filters, channel=channel, at=now,
                                 duration_ms=int((time.perf_counter() - started) * 1000))
        raise
    finally:
        EXPORTS.labels(fmt, channel if channel in CHANNELS else "other", outcome).inc()
    report(rows, rows)
    return ExportResult(path=output, format=fmt, row_count=rows, duration_ms=duration_ms,
                        filename=export_filename(scope, fmt, now), sheets=sheets, audit_id=audit_id,
                        filters=filters)


def _csv_writer(handle: IO[bytes]) -> tuple[csv.writer, io.TextIOWrapper]:
    # RFC 4180: CRLF line ends, quotes doubled; UTF-8 with a BOM so Excel reads isiZulu/Afrikaans right.
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=False)
    text.write(codecs.BOM_UTF8.decode("utf-8"))
    # Every field quoted, as COPY's FORCE_QUOTE writes it: both paths give the same bytes.
    return csv.writer(text, lineterminator="\r\n", quoting=csv.QUOTE_ALL), text


def _chunked_csv(engine: Engine, scope: Scope, filters: TicketFilters, handle: IO[bytes], total: int,
                 report: Progress, chunk_size: int) -> int:
    writer, text = _csv_writer(handle)
    text.write(",".join(HEADERS) + "\r\n")  # unquoted, as COPY's HEADER writes it (no header needs quotes)
    rows = 0
    for frame in iter_ticket_chunks(engine, scope, filters, chunk_size=chunk_size, columns=SOURCE_COLUMNS):
        writer.writerows(zip(*csv_cells(frame)))
        rows += len(frame)
        report(rows, total)
    text.flush()
    text.detach()  # leave the binary handle open for the caller
    return rows


def _xlsx(engine: Engine, scope: Scope, filters: TicketFilters, handle: IO[bytes], total: int,
          report: Progress, chunk_size: int, sheet_rows: int, now: datetime) -> tuple[int, int]:
    writer = XlsxTicketWriter(handle, timezone=scope.timezone, sheet_rows=sheet_rows)
    try:
        for frame in iter_ticket_chunks(engine, scope, filters, chunk_size=chunk_size, columns=SOURCE_COLUMNS):
            writer.write_chunk(frame)
            report(writer.rows, total)
        writer.close(about_export(scope, filters, writer.rows, now))
    except BaseException:
        writer.abort()
        raise
    return writer.rows, writer.data_sheets


def about_export(scope: Scope, filters: TicketFilters, rows: int, now: datetime) -> list[tuple[str, str]]:
    """The describing sheet: who, when, which filters, how many rows."""
    local = now.astimezone(scope.tzinfo)
    return [
        ("Exported by", scope.username or ""),
        ("Role", scope.role.value),
        ("Municipality", scope.municipality_name or str(scope.municipality_id)),
        ("Ward", scope.ward_id or "all wards"),
        ("Exported at", local.isoformat(timespec="seconds")),
        ("Time zone", scope.timezone),
        ("Filters", filters.describe()),
        ("Rows", str(rows)),
        ("Sensitive tickets", "never included"),
    ]


def crlf_records(data: bytes | bytearray, rows: int) -> bytes:
    """``rows`` complete COPY rows (each ends with LF) with RFC 4180 CRLF record ends.

    Line breaks inside quoted citizen text stay as they are. The usual batch
    has no LF but the record ends, which one count tells: then it is one
    replace in C. Otherwise a LF ends a record where the quotes before it
    balance (every field is quoted, a quote inside one is doubled).
    """
    if data.count(b"\n") == rows:
        return bytes(data.replace(b"\n", b"\r\n"))
    out, in_quotes = [], False
    for part in bytes(data).split(b"\n")[:-1]:  # the data ends with a record's LF
        in_quotes ^= part.count(b'"') % 2 == 1
        out.append(part + (b"\n" if in_quotes else b"\r\n"))
    return b"".join(out)


def _copy_csv(engine: Engine, scope: Scope, filters: TicketFilters, handle: IO[bytes], total: int,
              report: Progress, chunk_size: int) -> int:
    """COPY of the scoped SELECT (same WHERE and ORDER BY), formatted in SQL."""
    stmt = scoped_select(scope, filters, columns=SOURCE_COLUMNS).with_only_columns(*copy_columns())
    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    # COPY takes no server-side parameters: psycopg's ClientCursor binds them
    # client-side with PostgreSQL's own quoting (never string formatting).
    sql = f"COPY ({compiled.string}) TO STDOUT WITH (FORMAT csv, HEADER, FORCE_QUOTE *)"
    handle.write(codecs.BOM_UTF8)
    with engine.begin() as conn:
        dbapi = conn.connection.dbapi_connection
        cursor = psycopg.ClientCursor(dbapi)
        try:
            # Timestamps print with this zone's offset (to_char ... TZH:TZM).
            cursor.execute("SELECT set_config('TimeZone', %s, true)", (scope.timezone,))
            # An export reads every matching row: let the planner scan and sort them once
            # (cells formatted in parallel workers) rather than walk the created_at index
            # row by row to spare the sort ("incremental sort"): at 1,000,000 rows 3.2 s
            # instead of 7.1 s; at 100,000 it already chose the scan (docs/performance.md).
            cursor.execute("SELECT set_config('enable_incremental_sort', 'off', true)")
            # PostgreSQL sends each row as a message of its own, ending in LF (protocol docs:
            # "CopyData messages (always one per row)"). They are gathered into a buffer and
            # converted per batch: per-row Python work would cost more than the query.
            batch, in_batch, written = bytearray(), 0, 0

            def flush() -> None:
                nonlocal in_batch, written
                handle.write(crlf_records(batch, in_batch))
                written += in_batch
                batch.clear()
                in_batch = 0
                report(max(written - 1, 0), total)  # minus the header

            with cursor.copy(sql, compiled.params) as copy:
                for row in copy:
                    batch += row
                    in_batch += 1
                    if in_batch >= COPY_BATCH_ROWS:
                        flush()
                if in_batch:
                    flush()
            return max(int(cursor.rowcount), 0)
        finally:
            cursor.close()
