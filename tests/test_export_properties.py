"""Property-based export tests (hypothesis), on SQLite and PostgreSQL.

Random worlds (the strategies of test_properties.py: sensitive tickets by
flag and by gbv in any case, wards including None, another municipality)
get hostile citizen text: formula starters, quotes, line breaks, characters
xlsx cannot hold, non-BMP text. For a random user and random filters every
export path must give exactly the rows of ``scoped_tickets`` and of the
Python oracle, with every cell inert.
"""
from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from data import NotAuthorized
from data.export import export_tickets
from data.scope import Scope

from .conftest import add_tickets
from .export_support import expected_csv, expected_xlsx, oracle_frame, read_csv, read_xlsx
from .test_properties import SETTINGS, expected_rows, filter_values, is_sensitive, users, worlds

HOSTILE = st.text(alphabet="=+-@\t\r\n'\" ,;aZ\u00eb\u0101\u2014\U0001F6B0\x07\x0b\x1b\ufffe", max_size=12)
STARTS_A_FORMULA = re.compile(r"""^[ '"]*[=+\-@\t\r\n]""")
# Each example writes three files; fewer examples than the read-path properties keep the suite quick.
EXPORT_SETTINGS = settings(SETTINGS, max_examples=40)


@EXPORT_SETTINGS
@given(world=worlds(), user=users, data=st.data())
def test_every_export_path_gives_exactly_the_visible_rows_with_inert_cells(engine, tmp_path_factory, world, user,
                                                                             data):
    municipality_id, rows = world
    for row in rows:
        row["description"] = data.draw(HOSTILE, label="description")
    add_tickets(engine, rows)
    try:
        scope = Scope(municipality_id=municipality_id, role=user.role, ward_id=user.ward_id, timezone=user.timezone,
                      username="prop")
    except NotAuthorized:
        return  # no dashboard role, or a councillor without a ward: no export at all
    filters = data.draw(filter_values(rows), label="filters")
    frame = oracle_frame(engine, scope, filters)
    visible = expected_rows(rows, scope, filters)
    assert sorted(frame["tracking_number"]) == sorted(r["tracking_number"] for r in visible)
    hidden = {r["tracking_number"] for r in rows} - {r["tracking_number"] for r in visible}
    assert not any(is_sensitive(r) for r in visible)

    out = tmp_path_factory.mktemp("export")
    chunk_size = data.draw(st.integers(1, 7), label="chunk_size")
    csv_paths = [False, True] if engine.dialect.name == "postgresql" else [False]
    for use_copy in csv_paths:
        path = out / f"copy-{use_copy}.csv"
        result = export_tickets(engine, scope, filters, "csv", path, use_copy=use_copy, chunk_size=chunk_size)
        _, got = read_csv(path)
        assert result.row_count == len(got) == len(visible)
        assert got == expected_csv(frame)
        assert not hidden & {r[0].lstrip("'") for r in got}
        # A cell that could start a formula carries the leading apostrophe that makes it text.
        assert all(cell.startswith("'") for r in got for cell in r if STARTS_A_FORMULA.match(cell))
        assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r", "\n") for r in got for cell in r)

    sheet_rows = data.draw(st.integers(1, 6), label="sheet_rows")
    path = out / "export.xlsx"
    result = export_tickets(engine, scope, filters, "xlsx", path, sheet_rows=sheet_rows, chunk_size=chunk_size)
    _, got, book = read_xlsx(path)
    assert got == expected_xlsx(frame)
    assert result.sheets == max(1, -(-len(visible) // sheet_rows)) == len(book.sheetnames) - 1
    for sheet in book.worksheets[:-1]:
        assert all(c.data_type != "f" for r in sheet.iter_rows() for c in r)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(st.lists(HOSTILE, min_size=1, max_size=4), max_size=8))
def test_copy_record_ends_become_crlf_and_quoted_line_breaks_stay(records):
    """COPY sends LF-terminated rows; only the record ends become CRLF, whatever the text holds."""
    import csv
    import io

    from data.export import crlf_records

    def written(terminator: str) -> bytes:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator=terminator).writerows(records)
        return buffer.getvalue().encode("utf-8")

    assert crlf_records(bytearray(written("\n")), len(records)) == written("\r\n")
