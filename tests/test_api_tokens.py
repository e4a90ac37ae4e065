"""Personal API tokens (issue 18): made once, stored hashed, refused when revoked, expired or disabled; every use recorded.

The data layer on SQLite and PostgreSQL, and ``opsdash token`` as a real process.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from data.api_tokens import (
    api_tokens,
    create_token,
    list_tokens,
    parse_expiry,
    revoke_token,
    verify_token,
)
from data.errors import InvalidValue, NotFound
from data.models import User

from .helpers.databases import user_of
from .helpers.servers import run_opsdash

TOKEN = re.compile(r"^opsdash_[A-Za-z0-9_-]{43}$")


def test_a_token_is_stored_only_as_its_hash_and_acts_as_its_user(engine, make_seed):
    manager = user_of(make_seed(tickets=20), "manager")["username"]
    info, token = create_token(engine, manager, "power-bi", timedelta(days=90))
    assert TOKEN.match(token)
    with engine.connect() as conn:
        rows = [tuple(str(v) for v in row) for row in conn.execute(select(api_tokens)).all()]
    mine = next(row for row in rows if row[0] == info.id)
    assert not any(token in value or token[8:] in value for row in rows for value in row)
    assert hashlib.sha256(token.encode()).hexdigest() in mine
    used = verify_token(engine, token, address="198.51.100.7")
    assert (used.username, used.token_id) == (manager, info.id)
    listed = next(t for t in list_tokens(engine, manager) if t.id == info.id)
    assert (listed.label, listed.state(), listed.last_used_from) == ("power-bi", "active", "198.51.100.7")
    assert listed.last_used_at is not None and listed.expires_at - listed.created_at == timedelta(days=90)


def test_revoked_expired_unknown_malformed_and_disabled_users_tokens_are_refused(engine, make_seed):
    result = make_seed(tickets=20)
    manager, councillor = user_of(result, "manager")["username"], user_of(result, "ward_councillor")["username"]
    revoked_info, revoked = create_token(engine, manager, "revoked")
    assert revoke_token(engine, revoked_info.id) is True
    assert revoke_token(engine, revoked_info.id) is False  # already revoked
    past = datetime.now(timezone.utc) - timedelta(days=2)
    _, expired = create_token(engine, manager, "expired", timedelta(days=1), now=past)
    _, disabled = create_token(engine, councillor, "councillor")
    assert verify_token(engine, disabled) is not None
    with engine.begin() as conn:
        conn.execute(update(User).where(User.username == councillor).values(is_active=False))
    _, good = create_token(engine, manager, "good")
    for refused in (revoked, expired, disabled, good[:-1] + ("A" if good[-1] != "A" else "B"), good + "x",
                    "opsdash_" + "x" * 42, "", "Bearer " + good, good.upper(), "\x00" * 51, "é" * 51):
        assert verify_token(engine, refused) is None, refused
    assert verify_token(engine, good) is not None
    states = {t.label: t.state() for t in list_tokens(engine, manager)}
    assert (states["revoked"], states["expired"], states["good"]) == ("revoked", "expired", "active")
    with pytest.raises(NotFound):
        revoke_token(engine, "nosuchtoken")


def test_tokens_need_a_label_an_active_user_and_a_sane_expiry(engine, make_seed):
    result = make_seed(tickets=10)
    manager = user_of(result, "manager")["username"]
    with pytest.raises(InvalidValue):
        create_token(engine, manager, "   ")
    with pytest.raises(NotFound):
        create_token(engine, "nobody-at-all", "x")
    assert parse_expiry(None) == timedelta(days=90) and parse_expiry("12h") == timedelta(hours=12)
    assert parse_expiry("never") is None and parse_expiry(" 30D ") == timedelta(days=30)
    for bad in ("0d", "90", "1y", "-3d", "99999d", "d", "90d; drop table"):
        with pytest.raises(InvalidValue):
            parse_expiry(bad)


def test_tokens_die_with_their_user(engine, make_seed):
    result = make_seed(tickets=10, municipalities=1)
    citizen = user_of(result, "citizen")["username"]
    info, token = create_token(engine, citizen, "gone")
    with engine.begin() as conn:  # data.db enforces foreign keys on SQLite too
        conn.execute(User.__table__.delete().where(User.username == citizen))
    assert verify_token(engine, token) is None
    assert info.id not in {t.id for t in list_tokens(engine)}


def test_cli_prints_the_token_once_lists_without_it_and_revokes(engine, db_url, make_seed, tmp_path):
    manager = user_of(make_seed(tickets=10), "manager")["username"]
    made = run_opsdash("token", "create", "--user", manager, "--label", "power-bi", "--expires", "30d",
                       database_url=db_url, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert TOKEN.match(token) and "not shown again" in made.stdout
    token_id = re.search(r"created API token (\w+) for", made.stdout).group(1)
    assert verify_token(engine, token, address="cli-test") is not None
    listed = run_opsdash("token", "list", "--user", manager, database_url=db_url, cwd=tmp_path)
    assert listed.returncode == 0 and token_id in listed.stdout and "power-bi" in listed.stdout
    assert token not in listed.stdout and token[8:20] not in listed.stdout and "cli-test" in listed.stdout
    revoked = run_opsdash("token", "revoke", token_id, database_url=db_url, cwd=tmp_path)
    assert revoked.returncode == 0 and f"API token {token_id} revoked" in revoked.stdout
    assert verify_token(engine, token) is None
    for args, message in ((["create", "--user", manager, "--label", "x", "--expires", "forever"], "--expires"),
                          (["create", "--user", "nobody-at-all", "--label", "x"], "no user named"),
                          (["revoke", "nosuchtoken"], "no API token")):
        done = run_opsdash("token", *args, database_url=db_url, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
