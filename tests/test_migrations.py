"""Schema migrations: the search column and index (0002, 0003) on PostgreSQL and SQLite, pg_trgm optional.

Also what bulk seeding does to those indexes: rebuilt after a large load into
an empty table, kept (and the table readable) when it already has tickets.
"""
from __future__ import annotations

import uuid

import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from data import TicketFilters, scoped_tickets
from data.db import _alembic_config, make_engine, migrate, schema_revision
from data.models import Ticket
from data.scope import Scope

from .helpers.databases import add_tickets, copy_row, empty_pg_database, ticket_record

TRGM_INDEXES = {"ix_tickets_search_text_trgm"}
OLD_TRGM_INDEXES = {"ix_tickets_description_trgm", "ix_tickets_tracking_number_trgm", "ix_tickets_address_trgm"}


def _head() -> str:
    from alembic.script import ScriptDirectory

    from data.db import MIGRATIONS_DIR

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


HEAD = _head()


def index_names(engine) -> set[str]:
    return {ix["name"] for ix in inspect(engine).get_indexes("tickets")}


def search_index_oids(engine) -> dict[str, int]:
    """pg_class oid per trigram index: a dropped and rebuilt index gets a new one."""
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT c.relname, c.oid::bigint FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            r"WHERE i.indrelid = 'tickets'::regclass AND c.relname LIKE '%\_trgm'")).all())


@pytest.fixture
def fresh_pg_engine():
    """A new PostgreSQL database at the current schema and without tickets, as `opsdash seed` first meets it."""
    with empty_pg_database() as url:
        engine = make_engine(url)
        migrate(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def test_postgresql_has_the_search_index_and_not_the_old_ones(pg_engine):
    # Whether the planner picks it is checked by bench/bench_plans.py (plans are not behaviour).
    assert TRGM_INDEXES <= index_names(pg_engine) and not OLD_TRGM_INDEXES & index_names(pg_engine)


def test_search_text_is_kept_by_the_database_on_sqlite_too(sqlite_url):
    engine = make_engine(sqlite_url)
    assert schema_revision(engine) == HEAD
    assert not (TRGM_INDEXES | OLD_TRGM_INDEXES) & index_names(engine)
    tenant = uuid.uuid4()
    add_tickets(engine, [ticket_record(tenant, tracking_number="T-ÉCOLE-1", description="Burst pipe",
                                       address=None)])
    with engine.connect() as conn:
        stored = conn.execute(select(Ticket.search_text).where(Ticket.tenant_id == tenant)).scalar_one()
    assert stored == "t-école-1\x1fburst pipe\x1f"
    found = scoped_tickets(engine, Scope(municipality_id=tenant, role="admin"), TicketFilters(search="école"))
    assert len(found) == 1
    # The separator keeps a match inside one field: "1 burst" spans number and description.
    assert scoped_tickets(engine, Scope(municipality_id=tenant, role="admin"), TicketFilters(search="1 burst")).empty


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrations_downgrade_and_upgrade_again(dialect, tmp_path):
    def round_trip(engine) -> None:
        migrate(engine)
        config = _alembic_config(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        assert schema_revision(engine) == "0001" and not TRGM_INDEXES & index_names(engine)
        migrate(engine)
        assert schema_revision(engine) == HEAD
        engine.dispose()

    if dialect == "sqlite":
        round_trip(make_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}"))
        return
    with empty_pg_database() as url:
        round_trip(make_engine(url))
        assert TRGM_INDEXES <= index_names(make_engine(url))


def test_migration_skips_search_indexes_when_pg_trgm_cannot_be_created(tmp_path):
    """A role that may create tables but not extensions (a locked-down ticketing database)."""
    role = f"opsdash_r_{uuid.uuid4().hex[:8]}"
    with empty_pg_database() as url:
        admin = make_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            conn.execute(text(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"'))
            conn.execute(text(f'REVOKE CREATE ON DATABASE "{url.rsplit("/", 1)[1]}" FROM PUBLIC'))
        limited = make_engine(url.replace("postgres@", f"{role}@"))
        try:
            migrate(limited)  # no error: the indexes are skipped with a warning
            assert schema_revision(limited) == HEAD
            assert not TRGM_INDEXES & index_names(limited)
            tenant = uuid.uuid4()
            add_tickets(limited, [ticket_record(tenant, description="100% burst_pipe")])
            found = scoped_tickets(limited, Scope(municipality_id=tenant, role="admin"), TicketFilters(search="t_p"))
            assert len(found) == 1  # search still correct, only unindexed
        finally:
            limited.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP OWNED BY "{role}"'))
            admin.dispose()
        with make_engine(url.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def seed_rows(tenant: uuid.UUID, count: int, fail_after: int | None = None):
    for i in range(count):
        if fail_after is not None and i == fail_after:
            raise RuntimeError("generator failed mid-load")
        yield copy_row(ticket_record(tenant, description=f"bulk row {i}"))


def test_bulk_load_rebuilds_the_search_indexes_and_a_failed_load_keeps_them(fresh_pg_engine):
    from data.seed import insert_tickets

    engine = fresh_pg_engine
    before = search_index_oids(engine)
    failed = uuid.uuid4()
    with pytest.raises(RuntimeError, match="mid-load"):
        insert_tickets(engine, seed_rows(failed, 50, fail_after=20), rebuild_indexes=True)
    assert search_index_oids(engine) == before  # the drop was rolled back with the rows
    assert scoped_tickets(engine, Scope(municipality_id=failed, role="manager")).empty

    tenant = uuid.uuid4()
    assert insert_tickets(engine, seed_rows(tenant, 50), rebuild_indexes=True) == 50
    after = search_index_oids(engine)
    assert set(after) == TRGM_INDEXES and not set(after.values()) & set(before.values())  # rebuilt
    scope = Scope(municipality_id=tenant, role="manager")
    assert len(scoped_tickets(engine, scope, TicketFilters(search="bulk row 4"))) == 1 + 10  # 4, 40-49


def test_large_seed_into_an_empty_database_rebuilds_the_search_indexes(fresh_pg_engine, monkeypatch):
    import data.seed

    monkeypatch.setattr(data.seed, "BULK_LOAD_ROWS", 200)
    before = search_index_oids(fresh_pg_engine)
    result = data.seed.seed(fresh_pg_engine, tickets=300, wards=2, municipalities=1, random_seed=5)
    after = search_index_oids(fresh_pg_engine)
    assert set(after) == TRGM_INDEXES and not set(after.values()) & set(before.values())  # dropped, built again
    scope = Scope(municipality_id=uuid.UUID(result.municipalities[0]["id"]), role="manager")
    found = scoped_tickets(fresh_pg_engine, scope, TicketFilters(search="pipe"))
    assert len(found) > 0 and found["description"].str.contains("pipe", case=False).all()


def test_large_seed_into_a_database_with_tickets_keeps_the_search_indexes(fresh_pg_engine, monkeypatch):
    import data.seed

    data.seed.seed(fresh_pg_engine, tickets=50, wards=2, municipalities=1, random_seed=5)  # under the threshold
    monkeypatch.setattr(data.seed, "BULK_LOAD_ROWS", 200)
    before = search_index_oids(fresh_pg_engine)
    assert data.seed.seed(fresh_pg_engine, tickets=300, wards=2, municipalities=1, random_seed=6).tickets == 300
    assert search_index_oids(fresh_pg_engine) == before and set(before) == TRGM_INDEXES  # never dropped


def test_bulk_load_into_a_table_with_tickets_never_blocks_a_dashboard_reading_it(fresh_pg_engine):
    from data.seed import insert_tickets

    engine = fresh_pg_engine
    add_tickets(engine, [ticket_record(uuid.uuid4())])
    seen: list[int] = []

    def rows_read_midway():
        for i, row in enumerate(seed_rows(uuid.uuid4(), 50)):
            if i == 25:  # the load's transaction is open and COPY is running
                with engine.connect() as reader:  # another connection, as a dashboard's
                    reader.execute(text("SET lock_timeout = '2s'"))  # fail, not hang, if the table is locked
                    seen.append(reader.execute(text("SELECT count(*) FROM tickets")).scalar_one())
            yield row

    assert insert_tickets(engine, rows_read_midway(), rebuild_indexes=True) == 50
    assert seen == [1]  # read at once, and only what was committed


def test_a_whole_municipalitys_median_after_a_bulk_load_is_the_middle_answer(fresh_pg_engine):
    """After a bulk load (the index of 0004 built by it), the median is exact. That both of its
    statements are index-only scans is checked by bench/bench_plans.py."""
    from datetime import timedelta

    from data.aggregates import median_first_response_s
    from data.seed import insert_tickets

    engine = fresh_pg_engine
    assert "ix_tickets_first_response" in index_names(engine)
    tenant = uuid.uuid4()

    def rows():
        for i in range(20_000):
            record = ticket_record(tenant, description=f"row {i}")
            if i % 4:  # three in four answered, after i seconds
                record["first_responded_at"] = record["created_at"] + timedelta(seconds=i)
            yield copy_row(record)

    insert_tickets(engine, rows())
    median = median_first_response_s(engine, Scope(municipality_id=tenant, role="manager"))
    answered = sorted(i for i in range(20_000) if i % 4)
    assert median == pytest.approx((answered[7_499] + answered[7_500]) / 2)  # 15,000 answered: the middle two
