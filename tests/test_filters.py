"""Hostile filter values: a clear InvalidFilter or a correct (literal) result, never another exception.

Filters arrive from widgets, URL parameters, the command line and notebooks;
all of them come through ``TicketFilters`` / ``TicketFilters.parse``.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data import InvalidFilter, TicketFilters, count_tickets, counts_by, scoped_tickets, ticket_kpis
from data.filters import MAX_SEARCH_LENGTH, MAX_VALUES
from data.scope import Scope
from data.aggregates import created_and_resolved_by_day
from data.tickets import iter_ticket_chunks, ticket_page

from .helpers.databases import add_tickets, ticket_record

# Citizen text full of LIKE wildcards, the escape character and SQL quoting.
TEXTS = (
    "Water 100% gone since Monday",
    "pipe_burst near the school",
    "back\\slash in the address",
    "O'Brien Road; DROP TABLE tickets; --",
    'a "quoted" complaint',
    "plain pothole",
    "50%_off\\ sign vandalised",
    "École Ëlandstraat: krag is af",
)


@pytest.fixture
def literal_world(engine):
    """A fresh municipality whose tickets carry TEXTS, plus a sensitive twin of each."""
    tenant = uuid.uuid4()
    rows = [ticket_record(tenant, description=t, address=f"{i} Main Road") for i, t in enumerate(TEXTS)]
    rows += [ticket_record(tenant, description=t, is_sensitive=True) for t in TEXTS]
    rows += [ticket_record(tenant, description=t, category="GBV") for t in TEXTS]
    add_tickets(engine, rows)
    return Scope(municipality_id=tenant, role="manager"), rows


def literal_matches(needle: str) -> set[str]:
    return {t for t in TEXTS if needle.lower() in t.lower()}


@pytest.mark.parametrize("needle", ["%", "_", "\\", "100%", "e_b", "%_", "\\ s", "'", '"', "'; DROP TABLE tickets; --",
                                    "%%%%", "____", "[a-z]", "*", "?", "' OR '1'='1"])
def test_search_matches_wildcards_and_quotes_literally(engine, literal_world, needle):
    scope, _ = literal_world
    frame = scoped_tickets(engine, scope, TicketFilters(search=needle))
    assert set(frame["description"]) == literal_matches(needle)
    assert count_tickets(engine, scope, TicketFilters(search=needle)) == len(literal_matches(needle))


@pytest.mark.parametrize("needle", TEXTS + ("", "water"))
def test_search_never_finds_sensitive_tickets(engine, literal_world, needle):
    scope, rows = literal_world
    sensitive_ids = {str(r["id"]) for r in rows if r["is_sensitive"] or r["category"].lower() == "gbv"}
    frame = scoped_tickets(engine, scope, TicketFilters(search=needle))
    assert not set(frame["id"]) & sensitive_ids
    # Exactly the one visible ticket per matching text, never its sensitive twins.
    assert len(frame) == len(literal_matches(needle))


def test_search_is_case_insensitive_and_whitespace_tolerant(engine, literal_world):
    scope, _ = literal_world
    frame = scoped_tickets(engine, scope, TicketFilters(search="  PIPE_BURST   near "))
    assert list(frame["description"]) == ["pipe_burst near the school"]


@pytest.mark.parametrize("needle", ["école", "ÉCOLE", "ëlandstraat", "ËLANDSTRAAT"])
def test_search_folds_case_beyond_ascii_on_every_database(engine, literal_world, needle):
    scope, _ = literal_world
    assert list(scoped_tickets(engine, scope, TicketFilters(search=needle))["description"]) == [
        "École Ëlandstraat: krag is af"]


def test_search_covers_tracking_number_and_address(engine, literal_world):
    scope, rows = literal_world
    visible = rows[3]
    by_number = scoped_tickets(engine, scope, TicketFilters(search=visible["tracking_number"].lower()))
    assert list(by_number["id"]) == [str(visible["id"])]
    by_address = scoped_tickets(engine, scope, TicketFilters(search="3 Main Road"))
    assert list(by_address["id"]) == [str(visible["id"])]


HOSTILE = [
    ({"search": "x\x00y"}, "NUL"),
    ({"search": "a" * 10_000}, "too long"),
    ({"search": "\ud800"}, "not valid Unicode"),
    ({"search": 42}, "search must be text"),
    ({"search": {"$ne": ""}}, "search must be text"),
    ({"statuses": 5}, "status must be a list"),
    ({"statuses": {"open": 1}}, "status must be a list"),
    ({"statuses": [1, 2]}, "status must contain text"),
    ({"statuses": ["open", None]}, "status must contain text"),
    ({"statuses": ["reopened"]}, "unknown status 'reopened'"),
    ({"statuses": ["open' OR 1=1 --"]}, "unknown status"),
    ({"statuses": ["x" * 10_000]}, "unknown status"),
    ({"statuses": [f"s{i}" for i in range(MAX_VALUES + 1)]}, "at most"),
    ({"categories": ["gbv"]}, "unknown category 'gbv'"),
    ({"categories": "GBV"}, "unknown category 'gbv'"),
    ({"categories": ["water", "Gbv"]}, "unknown category 'gbv'"),
    ({"categories": ["uni-corns!"]}, "unknown category"),
    ({"categories": ["\uff27\uff22\uff36 "]}, "unknown category 'gbv'"),
    ({"categories": b"water"}, "category must be a list"),
    ({"wards": ["W1'; DROP TABLE tickets; --"]}, "not a ward id"),
    ({"wards": ["W%"]}, "not a ward id"),
    ({"wards": ["W" * 10_000]}, "not a ward id"),
    ({"wards": [7]}, "ward must contain text"),
    ({"created_from": "yesterday"}, "created from must be a date"),
    ({"created_from": "2026-13-45"}, "created from must be a date"),
    ({"created_from": "2026-01-01'; DROP TABLE tickets"}, "created from must be a date"),
    ({"created_to": 20260101}, "created to must be a date"),
    ({"created_to": ["2026-01-01"]}, "created to must be a date"),
    ({"created_to": "9" * 10_000}, "created to must be a date"),
    ({"created_from": "2026-02-01", "created_to": "2026-01-01"}, "after the 'created to' date"),
]


@pytest.mark.parametrize("values,message", HOSTILE, ids=[m for _, m in HOSTILE])
def test_hostile_filter_values_give_a_clear_invalid_filter(values, message):
    with pytest.raises(InvalidFilter, match=message.replace("(", r"\(")) as caught:
        TicketFilters(**values)
    assert len(str(caught.value)) < 300  # a message, not an echo of the attack


@pytest.mark.parametrize("values,message", [
    ({"colour": "red"}, "unknown filter 'colour'"),
    ({"status; DROP TABLE": "open"}, "unknown filter"),
    ({1: "open"}, "unknown filter '1'"),
    ({None: "open"}, "unknown filter 'None'"),
    (["status", "open"], "names and values"),
    ("status=open", "names and values"),
])
def test_parse_rejects_unknown_keys_and_non_mappings(values, message):
    with pytest.raises(InvalidFilter, match=message):
        TicketFilters.parse(values)


def test_empty_values_mean_no_filter_and_lists_collapse():
    assert TicketFilters(statuses=None, categories="", wards=[], created_from=None, search=None).is_empty()
    parsed = TicketFilters.parse({"status": "open, in_progress,open", "category": ["Water"], "q": ["  pipe  "],
                                  "from": ["2026-01-01T08:00:00+02:00"], "to": datetime(2026, 1, 31, tzinfo=timezone.utc)})
    assert parsed.statuses == ("open", "in_progress")
    assert parsed.categories == ("water",)
    assert parsed.search == "pipe"
    assert (parsed.created_from, parsed.created_to) == (date(2026, 1, 1), date(2026, 1, 31))
    assert TicketFilters(search="x" * MAX_SEARCH_LENGTH).search == "x" * MAX_SEARCH_LENGTH
    assert TicketFilters.parse(TicketFilters(statuses=["open"], search="a_b").to_query()) == TicketFilters(
        statuses=("open",), search="a_b")


def test_unknown_ward_or_empty_date_range_gives_a_correct_empty_result(engine, literal_world):
    scope, _ = literal_world
    for filters in (TicketFilters(wards=["no-such-ward"]), TicketFilters(created_from="1999-01-01", created_to="1999-01-02")):
        assert scoped_tickets(engine, scope, filters).empty
        assert count_tickets(engine, scope, filters) == 0
        assert counts_by(engine, scope, "status", filters).empty
        assert ticket_kpis(engine, scope, filters).total == 0
        assert ticket_page(engine, scope, filters).total == 0


@pytest.mark.parametrize("call,message", [
    (lambda e, s: ticket_page(e, s, page=0), "page must be"),
    (lambda e, s: ticket_page(e, s, page="2"), "page must be"),
    (lambda e, s: ticket_page(e, s, page_size=10_000), "page size"),
    (lambda e, s: ticket_page(e, s, page=True), "page must be"),
    (lambda e, s: scoped_tickets(e, s, limit="10; DROP TABLE tickets"), "limit must be"),
    (lambda e, s: scoped_tickets(e, s, limit=-1), "limit must be"),
    (lambda e, s: scoped_tickets(e, s, offset=1.5), "offset must be"),
    (lambda e, s: list(iter_ticket_chunks(e, s, chunk_size=0)), "chunk size must be"),
    (lambda e, s: created_and_resolved_by_day(e, s, days="30"), "days must be"),
    (lambda e, s: scoped_tickets(e, s, sort=[("description", "asc")]), "cannot sort by"),
    (lambda e, s: scoped_tickets(e, s, sort=[("created_at; DROP TABLE tickets", "asc")]), "cannot sort by"),
    (lambda e, s: scoped_tickets(e, s, sort=[("created_at", "sideways")]), "sort direction"),
    (lambda e, s: scoped_tickets(e, s, columns=["tenant_id"]), "unknown column"),
    (lambda e, s: scoped_tickets(e, s, columns=["is_sensitive"]), "unknown column"),
    (lambda e, s: counts_by(e, s, "is_sensitive"), "cannot group by"),
    (lambda e, s: scoped_tickets(e, s, {"statuses": ["open"]}), "must be a TicketFilters"),
    (lambda e, s: created_and_resolved_by_day(e, s, days=0), "days must be"),
])
def test_bad_paging_sorting_and_grouping_give_invalid_filter(engine, literal_world, call, message):
    scope, _ = literal_world
    with pytest.raises(InvalidFilter, match=message):
        call(engine, scope)


# Anything a URL, widget or JSON body could carry, including text with
# surrogates and control characters.
LOOSE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec=None), max_size=30)
    | st.sampled_from(["open", "water", "gbv", "W1", "2026-01-01", "%", "_", "\\"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from(["status", "category", "ward", "from", "to", "q", "search", "statuses", "bogus"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(KEYS, LOOSE, max_size=4))
def test_any_loose_input_is_rejected_clearly_or_queries_without_error(engine, literal_world, values):
    scope, rows = literal_world
    try:
        filters = TicketFilters.parse(values)
    except InvalidFilter as exc:
        assert str(exc)
        return
    frame = scoped_tickets(engine, scope, filters)
    assert count_tickets(engine, scope, filters) == len(frame)
    assert "gbv" not in set(frame["category"].str.lower())
    assert not frame["id"].isin([str(r["id"]) for r in rows if r["is_sensitive"]]).any()


def test_applied_filters_drop_a_councillors_ward_and_keep_every_other_value():
    """What a scope applies of the filters: what the queries use and what an export's audit records."""
    from data.filters import applied_filters

    asked = TicketFilters(statuses=("open",), categories=("water",), wards=("W2", "W1"), search="pipe",
                          created_from=date(2026, 1, 1), created_to=date(2026, 1, 31))
    municipality = uuid.uuid4()
    councillor = Scope(municipality_id=municipality, role="ward_councillor", ward_id="W1")
    for role in ("manager", "admin"):
        assert applied_filters(Scope(municipality_id=municipality, role=role), asked) == asked
    assert applied_filters(councillor, asked) == TicketFilters(
        statuses=("open",), categories=("water",), search="pipe", created_from=date(2026, 1, 1),
        created_to=date(2026, 1, 31))
    assert applied_filters(councillor, None) == TicketFilters()
    with pytest.raises(InvalidFilter):
        applied_filters(councillor, {"wards": "W2"})
