"""Property-based export tests (hypothesis), on SQLite and PostgreSQL.

Random worlds (the strategies of test_properties.py: sensitive tickets by
flag and by gbv in any case, wards including None, another municipality)
get hostile citizen text: formula starters, quotes, line breaks, characters
xlsx cannot hold, non-BMP text. For a random user and random filters every
export path must give exactly the rows of ``scoped_tickets`` and of the
Python oracle, with every cell inert.
"""
from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from data import NotAuthorized
from data.export import export_tickets
from data.scope import Scope

from .helpers.databases import add_tickets, ticket_record
from .helpers.export import (
    excel_text,
    expected_csv,
    expected_xlsx,
    oracle_frame,
    read_csv,
    read_xlsx,
    starts_a_formula,
    xml_text,
)
from .test_properties import SETTINGS, expected_rows, filter_values, is_sensitive, users, worlds

HOSTILE = st.text(alphabet="=+-@\t\r\n'\" ,;aZ\u00eb\u0101\u2014\U0001F6B0\x07\x0b\x1b\ufffe", max_size=12)
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
        assert all(cell.startswith("'") for r in got for cell in r if starts_a_formula(cell))
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


# ---- formula starts in Unicode spellings (issue 14) -----------------------------------------
# Blank and invisible characters a spreadsheet may skip or a reader cannot see, named one by one
# (no-break, typographic and ideographic spaces, zero-width characters, BOM, word joiner, bidi
# controls, tag characters, fillers, selectors, C0/C1 controls), quotes in their full-width forms,
# and whatever else hypothesis finds among space separators and format characters.
INVISIBLE = st.one_of(
    st.sampled_from([" ", "\u00a0", "\u2000", "\u2002", "\u2003", "\u2007", "\u2009", "\u200a", "\u202f",
                     "\u205f", "\u3000", "\u1680", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060",
                     "\u2061", "\u2064", "\ufeff", "\u00ad", "\u061c", "\u180e", "\u202a", "\u202e", "\u2066",
                     "\u2069", "\U000e0001", "\U000e0041", "\u3164", "\uffa0", "\u115f", "\ufe0f", "\u034f",
                     "\U000e0100", "\x07", "\x0b", "\x1b", "\x85", "\u2028", "\u2029", '"', "'", "\uff02",
                     "\uff07"]),
    st.characters(categories=["Zs", "Cf"]),
)
# = + - @ and their compatibility forms (full-width, small, super- and subscript), the minus sign,
# and OWASP's tab, CR and LF.
SIGNS = st.sampled_from(["=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20", "\ufe66", "\ufe62", "\ufe63",
                         "\ufe6b", "\u207c", "\u208c", "\u207a", "\u208a", "\u207b", "\u208b", "\u2212", "\u2a75",
                         "\ufb29", "\t", "\r", "\n"])
BENIGN = st.sampled_from(["-5", "+27 82 555 0101", "+27825550101", "5-3", "plain", "a=b", "\u2013 dash",
                          "\uff5c pipe", "\u2796 heavy", "1 + 1", "Amanzi ayaphuma", "", "x@y.za"])
PAYLOAD = st.sampled_from(["1+1", "SUM(A1:A9)", "cmd|' /C calc'!A0", "HYPERLINK(\"http://x\")", "5", "27 82 555",
                           "A1", ""])
CELL_TEXT = st.one_of(
    st.builds(lambda lead, sign, rest: "".join(lead) + sign + rest, st.lists(INVISIBLE, max_size=4), SIGNS, PAYLOAD),
    st.builds(lambda lead, text: "".join(lead) + text, st.lists(INVISIBLE, max_size=3), BENIGN),
    st.builds(lambda sign, rest: sign + rest, st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
              PAYLOAD),
)


@EXPORT_SETTINGS
@given(texts=st.lists(CELL_TEXT, min_size=1, max_size=8), data=st.data())
def test_formula_starts_in_any_unicode_spelling_are_inert_in_csv_and_xlsx(engine, tmp_path_factory, texts, data):
    """Oracle: tests.helpers.export.starts_a_formula, written from OWASP and issue 14, not from data/."""
    ours = uuid.uuid4()
    rows = [ticket_record(ours, description=text, address=text[::-1], tracking_number=f"T-{i}-{uuid.uuid4().hex[:8]}")
            for i, text in enumerate(texts)]
    add_tickets(engine, rows)
    scope = Scope(municipality_id=ours, role="manager", username="prop")
    out = tmp_path_factory.mktemp("formula")
    chunk_size = data.draw(st.integers(1, 5), label="chunk_size")
    for use_copy in ([False, True] if engine.dialect.name == "postgresql" else [False]):
        path = out / f"copy-{use_copy}.csv"
        export_tickets(engine, scope, None, "csv", path, use_copy=use_copy, chunk_size=chunk_size)
        got = {(r[4], r[5]) for r in read_csv(path)[1]}
        want = {tuple("'" + t if starts_a_formula(t) else t for t in (r["description"], r["address"])) for r in rows}
        assert got == want

    path = out / "export.xlsx"
    export_tickets(engine, scope, None, "xlsx", path, chunk_size=chunk_size)
    _, _, book = read_xlsx(path)
    seen = set()
    for row in book["Tickets"].iter_rows(min_row=2):
        for cell in row[4:6]:
            text = excel_text(cell.value) if cell.value is not None else ""
            assert cell.data_type == "s" or cell.value is None
            assert bool(cell.quotePrefix) == starts_a_formula(text), repr(text)
            seen.add(text)
    assert seen == {xml_text(t) for r in rows for t in (r["description"], r["address"])}
