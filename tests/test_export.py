"""Exports on SQLite and PostgreSQL: exactly the scoped rows, safe cells, audited, no partial files."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from data.errors import InvalidFilter, InvalidValue, NotAuthorized
from data.export import export_filename, export_tickets
from data.audit import recent_exports
from data.export_token import sign_export_token, verify_export_token
from data.filters import TicketFilters
from data.models import ExportAudit
from data.scope import Scope

from .helpers.databases import add_tickets, ticket_record
from .helpers.export import HEADERS, excel_text, expected_csv, expected_xlsx, oracle_frame, read_csv, read_xlsx

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
FORMATS = ("csv", "xlsx")
INJECTIONS = [
    "=1+1", "+27 82 555 0101", "-2+3", "@SUM(A1)", "\t=cmd", "\r=cmd", "\n=cmd", "  =HYPERLINK(\"http://x\")",
    "'=1+1", "\"=1+1", " \"' @x", "=cmd|' /C calc'!A0", "DDE(\"cmd\";\"/c calc\";\"x\")", "plain text",
]


def scope_for(municipality_id: uuid.UUID, role: str = "manager", ward: str | None = None,
              tz: str = "Africa/Johannesburg") -> Scope:
    return Scope(municipality_id=municipality_id, role=role, ward_id=ward, username=f"{role}-{uuid.uuid4().hex[:6]}",
                 municipality_slug="city-of-test", municipality_name="City of Test", timezone=tz)


def world(engine) -> tuple[uuid.UUID, uuid.UUID]:
    """Ours: visible tickets in W1/W2, sensitive ones by flag and by gbv in any case; plus another municipality."""
    ours, other = uuid.uuid4(), uuid.uuid4()
    rows = []
    for i in range(12):
        rows.append(ticket_record(ours, ward_id=("W1", "W2", None)[i % 3], created_at=NOW - timedelta(hours=i * 7),
                                  status=("open", "resolved")[i % 2], description=f"burst pipe {i}",
                                  resolved_at=NOW - timedelta(hours=i) if i % 2 else None))
    rows.append(ticket_record(ours, ward_id="W1", is_sensitive=True, description="secret flagged", resolved_at=None))
    for spelling in ("gbv", "GBV", "Gbv"):
        rows.append(ticket_record(ours, ward_id="W1", category=spelling, description=f"secret {spelling}",
                                  resolved_at=None))
    rows.append(ticket_record(other, ward_id="W1", description="other municipality", resolved_at=None))
    add_tickets(engine, rows)
    return ours, other


def export_rows(engine, scope, filters, fmt, path: Path, **kwargs) -> list[list]:
    export_tickets(engine, scope, filters, fmt, path, now=NOW, **kwargs)
    if fmt == "csv":
        header, rows = read_csv(path)
        assert header == HEADERS
        return rows
    header, rows, _ = read_xlsx(path)
    assert header[:8] == HEADERS[:8] and header[8] == f"Created ({scope.timezone})"
    return rows


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("role,ward,filters", [
    ("manager", None, TicketFilters()),
    ("admin", None, TicketFilters(statuses=("open",), search="pipe")),
    ("ward_councillor", "W1", TicketFilters()),
    # A forged ward filter cannot widen a councillor's view.
    ("ward_councillor", "W1", TicketFilters(wards=("W2",))),
])
def test_export_is_exactly_the_scoped_rows_never_sensitive_other_ward_or_other_municipality(
        engine, tmp_path, fmt, role, ward, filters):
    ours, _ = world(engine)
    scope = scope_for(ours, role, ward)
    rows = export_rows(engine, scope, filters, fmt, tmp_path / f"out.{fmt}")
    frame = oracle_frame(engine, scope, filters)
    assert rows == (expected_csv(frame) if fmt == "csv" else expected_xlsx(frame))
    assert len(rows) > 0
    text = repr(rows)
    assert "secret" not in text and "other municipality" not in text
    if role == "ward_councillor":
        assert {r[6] for r in rows} == {"W1"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_injection_payloads_are_neutralised_in_csv_and_literal_text_in_xlsx(engine, tmp_path, fmt):
    ours = uuid.uuid4()
    add_tickets(engine, [ticket_record(ours, description=p, address=p, tracking_number=f"{p}-{uuid.uuid4().hex[:6]}",
                                       created_at=NOW - timedelta(minutes=i)) for i, p in enumerate(INJECTIONS)])
    scope = scope_for(ours)
    path = tmp_path / f"out.{fmt}"
    rows = export_rows(engine, scope, None, fmt, path)
    by_text = {r[4]: r for r in rows}
    if fmt == "csv":
        for payload in INJECTIONS:
            risky = payload.lstrip(" '\"")[:1] in ("=", "+", "-", "@", "\t", "\r", "\n")
            cell = f"'{payload}" if risky else payload
            assert cell in by_text, payload
            assert by_text[cell][5] == cell and by_text[cell][0].startswith(cell)
        assert all(not c[:1] in "=+-@\t\r\n" for r in rows for c in r if c)
    else:
        _, _, book = read_xlsx(path)
        sheet = book["Tickets"]
        seen = set()
        for row in sheet.iter_rows(min_row=2):
            for cell in row[:8]:
                if cell.value is None:
                    continue
                assert cell.data_type == "s", "text is always a string cell, never a formula"
                text = excel_text(cell.value)
                assert cell.quotePrefix == bool(text.lstrip(" '\"")[:1] in ("=", "+", "-", "@", "\t", "\r", "\n"))
            seen.add(excel_text(row[4].value))
        assert seen == set(INJECTIONS)


# (text, whether it must be neutralised): spelled out, not computed, so no rule can agree with itself.
UNICODE_FORMULA_STARTS = [
    ("\uff1d1+1", True), ("\uff0bSUM(A1)", True), ("\uff0d2+3", True), ("\uff20SUM(A1)", True),
    ("\u00a0=1+1", True), ("\u200b=1+1", True), ("\ufeff=1+1", True), ("\u2060+1", True), ("\u3000@x", True),
    ("\u00a0\uff1dcmd|' /C calc'!A0", True), ("\u2003 \u200d-1", True), ("\ufe66 1", True), ("\ufe62 1", True),
    ("\ufe63 1", True), ("\u22121+1", True), ("\u207b1", True), ("\x0b=1", True), ("\u2028=1", True),
    ("\u3164=1", True), ("\uff02\uff1d1", True), ("\u00a0\t", True),
    # Benign: kept as they were (a leading sign is still neutralised, as OWASP asks).
    ("-5", True), ("+27 82 555 0101", True), ("5-3", False), ("a=b", False), ("\u00a0plain", False),
    ("\u2013 dash", False), ("\uff5c pipe", False), ("\u200bsafe=1", False),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_width_signs_and_invisible_leading_characters_start_formulas_too(engine, tmp_path, fmt):
    ours = uuid.uuid4()
    add_tickets(engine, [ticket_record(ours, description=text, created_at=NOW - timedelta(minutes=i))
                         for i, (text, _) in enumerate(UNICODE_FORMULA_STARTS)])
    path = tmp_path / f"out.{fmt}"
    rows = export_rows(engine, scope_for(ours), None, fmt, path)
    if fmt == "csv":
        assert [r[4] for r in rows] == ["'" + t if risky else t for t, risky in UNICODE_FORMULA_STARTS]
    else:
        _, _, book = read_xlsx(path)
        cells = [row[4] for row in book["Tickets"].iter_rows(min_row=2)]
        assert [(excel_text(c.value), bool(c.quotePrefix)) for c in cells] == [
            (t.replace("\x0b", ""), risky) for t, risky in UNICODE_FORMULA_STARTS]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unicode_text_round_trips_and_times_are_in_the_municipality_time_zone(engine, tmp_path, fmt):
    ours = uuid.uuid4()
    text = "Amanzi ayaphuma emgwaqweni \u2014 kuhle! Die kragonderbreking in Paarl is \u00eb\u00ef\u00f6 \U0001F6B0"
    created = datetime(2026, 1, 1, 22, 30, 15, 900000, tzinfo=timezone.utc)  # next day in India
    add_tickets(engine, [ticket_record(ours, description=text, address="Stra\u00dfe 1", created_at=created)])
    scope = scope_for(ours, tz="Asia/Kolkata")
    rows = export_rows(engine, scope, None, fmt, tmp_path / f"out.{fmt}")
    assert rows[0][4] == text and rows[0][5] == "Stra\u00dfe 1"
    if fmt == "csv":
        assert rows[0][8] == "2026-01-02T04:00:15+05:30"
    else:
        assert rows[0][8] == datetime(2026, 1, 2, 4, 0, 15)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_result_gives_a_header_only_file(engine, tmp_path, fmt):
    scope = scope_for(uuid.uuid4())
    assert export_rows(engine, scope, None, fmt, tmp_path / f"empty.{fmt}") == []


def test_xlsx_continues_on_further_sheets_and_describes_the_export(engine, tmp_path):
    ours, _ = world(engine)
    scope = scope_for(ours)
    path = tmp_path / "multi.xlsx"
    result = export_tickets(engine, scope, TicketFilters(search="pipe"), "xlsx", path, now=NOW, sheet_rows=5)
    assert result.row_count == 12 and result.sheets == 3
    header, rows, book = read_xlsx(path)
    assert book.sheetnames == ["Tickets", "Tickets 2", "Tickets 3", "About this export"]
    assert [book[n].max_row for n in book.sheetnames[:3]] == [6, 6, 3]
    assert rows == expected_xlsx(oracle_frame(engine, scope, TicketFilters(search="pipe")))
    first = book["Tickets"]
    assert first.freeze_panes == "A2" and first.auto_filter.ref == "A1:N6"
    assert all(c.font.b for c in first[1])
    assert first["I2"].is_date and first["I2"].number_format == "yyyy-mm-dd hh:mm:ss"
    widths = {i: d.width for d in first.column_dimensions.values() for i in range(d.min, d.max + 1)}
    assert sorted(widths) == list(range(1, 15)) and min(widths.values()) >= 14
    assert widths[5] >= 60 and widths[9] >= len("Created (Africa/Johannesburg)")
    about = dict(book["About this export"].iter_rows(values_only=True))
    assert about["Exported by"] == scope.username and about["Rows"] == "12"
    assert about["Filters"] == "q=pipe" and about["Time zone"] == "Africa/Johannesburg"
    assert about["Exported at"] == "2026-03-01T10:00:00+02:00"


def test_xlsx_truncates_overlong_text_with_a_marker_and_drops_characters_xml_cannot_hold(engine, tmp_path):
    ours = uuid.uuid4()
    # (No NUL: PostgreSQL text cannot hold one, so the ticketing system never stores it.)
    add_tickets(engine, [ticket_record(ours, description="x" * 40_000, address="bell\x07 and\x1b\ufffe ok\x0b")])
    path = export_tickets(engine, scope_for(ours), None, "xlsx", tmp_path / "t.xlsx").path
    _, rows, _ = read_xlsx(path)
    description, address = rows[0][4], rows[0][5]
    assert len(description) == 32_767 and description.endswith("[...truncated]")
    assert description.startswith("x" * 32_000)
    assert address == "bell and ok"


def test_every_export_writes_an_audit_row(engine, tmp_path):
    ours, _ = world(engine)
    scope = scope_for(ours, "ward_councillor", "W2")
    filters = TicketFilters(statuses=("open",))
    result = export_tickets(engine, scope, filters, "csv", tmp_path / "a.csv", channel="http", now=NOW)
    [audit] = recent_exports(engine, username=scope.username)
    assert audit.id == result.audit_id
    assert (audit.username, audit.municipality_id, audit.ward_id, audit.format, audit.channel) == (
        scope.username, ours, "W2", "csv", "http")
    assert audit.row_count == result.row_count == len(read_csv(tmp_path / "a.csv")[1]) > 0
    assert TicketFilters.parse(__import__("json").loads(audit.filters)) == filters
    assert audit.created_at == NOW and audit.duration_ms >= 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_audit_row_and_about_sheet_record_only_the_filters_that_applied(engine, tmp_path, fmt):
    """A councillor's ward filter is ignored (their scope fixes the ward), so it is not recorded either."""
    ours, _ = world(engine)
    asked = TicketFilters(statuses=("open",), wards=("W2",))
    for scope, applied in [(scope_for(ours, "ward_councillor", "W1"), TicketFilters(statuses=("open",))),
                           (scope_for(ours, "manager"), asked)]:
        result = export_tickets(engine, scope, asked, fmt, tmp_path / f"{scope.username}.{fmt}", now=NOW)
        [audit] = recent_exports(engine, username=scope.username)
        assert TicketFilters.parse(json.loads(audit.filters)) == applied
        assert result.filters == applied
        if fmt == "xlsx":
            about = dict(read_xlsx(result.path)[2]["About this export"].iter_rows(values_only=True))
            assert about["Filters"] == applied.describe()


def audit_count(engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(ExportAudit.id)).all())


@pytest.mark.parametrize("fmt,output,error", [
    ("pdf", "out.pdf", "unknown export format 'pdf'"),
    ("csv", "missing-folder/out.csv", "does not exist"),
    ("xlsx", ".", "it is a directory"),
])
def test_bad_input_gets_a_clear_error_and_leaves_no_file(engine, tmp_path, fmt, output, error):
    ours, _ = world(engine)
    before = audit_count(engine)
    with pytest.raises(InvalidValue, match=error):
        export_tickets(engine, scope_for(ours), None, fmt, tmp_path / output)
    assert list(tmp_path.iterdir()) == [] and audit_count(engine) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_failing_midway_leaves_no_file_keeps_an_older_one_and_is_audited_as_failed(engine, tmp_path, fmt):
    ours, _ = world(engine)
    target = tmp_path / f"keep.{fmt}"
    target.write_bytes(b"previous export")
    before = audit_count(engine)
    scope = scope_for(ours)

    def explode(done: int, total: int) -> None:
        if done:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        export_tickets(engine, scope, None, fmt, target, progress=explode, chunk_size=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert target.read_bytes() == b"previous export" and audit_count(engine) == before + 1
    [audit] = recent_exports(engine, username=scope.username)
    assert (audit.outcome, audit.format, audit.channel) == ("failed", fmt, "ui")


def test_unwritable_folder_is_refused_with_a_clear_message(engine):
    """A read-only file system (/proc): refused even for root, whom permission bits do not stop."""
    with pytest.raises(InvalidValue, match="cannot write the export to /proc/x.csv"):
        export_tickets(engine, scope_for(uuid.uuid4()), None, "csv", "/proc/x.csv")
    assert not Path("/proc/x.csv").exists()


def test_postgresql_copy_path_writes_the_same_bytes_as_the_chunked_path(pg_engine, tmp_path):
    ours = uuid.uuid4()
    add_tickets(pg_engine, [ticket_record(ours, description=p + ' "quoted"\r\nsecond line', address=None,
                                          created_at=NOW - timedelta(minutes=i), resolved_at=NOW)
                            for i, p in enumerate(INJECTIONS)])
    scope = scope_for(ours, tz="America/St_Johns")
    for use_copy in (True, False):
        export_tickets(pg_engine, scope, TicketFilters(search="quoted"), "csv", tmp_path / f"{use_copy}.csv",
                       use_copy=use_copy, chunk_size=4)
    copied = (tmp_path / "True.csv").read_bytes()
    assert copied == (tmp_path / "False.csv").read_bytes()
    assert copied.count(b"\r\n") == len(INJECTIONS) * 2 + 1  # record ends are CRLF, embedded ones kept
    _, rows = read_csv(copied)
    assert rows == expected_csv(oracle_frame(pg_engine, scope, TicketFilters(search="quoted")))
    assert rows[0][8].endswith("-03:30")


def test_filename_names_the_municipality_and_local_time():
    scope = scope_for(uuid.uuid4(), tz="Africa/Johannesburg")
    assert export_filename(scope, "xlsx", NOW) == "tickets_city-of-test_20260301_100000.xlsx"
    odd = Scope(municipality_id=uuid.uuid4(), role="admin", municipality_slug="../Evil Name!", timezone="UTC")
    assert export_filename(odd, "csv", NOW) == "tickets_evil-name_20260301_080000.csv"
    with pytest.raises(InvalidValue):
        export_filename(odd, "exe", NOW)


def test_export_token_is_bound_to_user_filters_and_time():
    filters = TicketFilters(statuses=("open",), search="pipe")
    token = sign_export_token("secret-1", "thandi", "xlsx", filters, now=1000)
    assert verify_export_token("secret-1", token, "thandi", now=1100) == ("xlsx", filters)
    with pytest.raises(NotAuthorized, match="another user"):
        verify_export_token("secret-1", token, "sipho", now=1100)
    with pytest.raises(NotAuthorized, match="expired"):
        verify_export_token("secret-1", token, "thandi", now=1000 + 601)
    with pytest.raises(NotAuthorized, match="not valid"):
        verify_export_token("secret-2", token, "thandi", now=1100)
    body, signature = token.split(".")
    forged = sign_export_token("secret-1", "thandi", "xlsx", TicketFilters(), now=1000).split(".")[0]
    for bad in (f"{forged}.{signature}", f"{body}.{signature[:-2]}", "", "a.b.c", body, "\u00e9.\u00e9"):
        with pytest.raises(NotAuthorized):
            verify_export_token("secret-1", bad, "thandi", now=1100)


def test_bad_filter_values_are_refused_before_any_file_is_written(engine, tmp_path):
    with pytest.raises(InvalidFilter):
        TicketFilters.parse({"status": "bogus"})
    with pytest.raises(InvalidValue):
        export_tickets(engine, scope_for(uuid.uuid4()), {"status": "open"}, "csv", tmp_path / "x.csv")
    assert list(tmp_path.iterdir()) == []
