"""Sign-in rows (data.web_sessions): ended ones are forgotten after a while, live and recent ones kept."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from data.seed import seed
from data.web_sessions import forget_old_sessions, session_key, start_session, valid_session, web_sessions


def test_sign_ins_ended_over_30_days_ago_are_deleted_and_nothing_else(engine, make_seed):
    username = make_seed(tickets=5, municipalities=1).users[0]["username"]
    now = datetime.now(timezone.utc)
    day = timedelta(days=1)
    old = start_session(engine, username, day, now=now - 40 * day)  # ended 39 days ago
    recent = start_session(engine, username, day, now=now - 20 * day)  # ended 19 days ago: kept (audit)
    live = start_session(engine, username, day, now=now)
    forgotten = forget_old_sessions(engine)
    with engine.connect() as conn:
        keys = set(conn.execute(select(web_sessions.c.key).where(
            web_sessions.c.key.in_([session_key(s) for s in (old, recent, live)]))).scalars())
        others_old = conn.execute(select(func.count()).select_from(web_sessions).where(
            web_sessions.c.expires_at < now - 30 * day)).scalar_one()
    assert forgotten >= 1 and others_old == 0
    assert keys == {session_key(recent), session_key(live)}
    assert valid_session(engine, session_id=live) is not None


def test_a_served_process_forgets_old_sign_ins_when_it_starts(opsdash_server, pg_url, pg_engine, random_seed):
    username = seed(pg_engine, tickets=5, wards=2, municipalities=1, random_seed=random_seed).users[0]["username"]
    old = start_session(pg_engine, username, timedelta(days=1), now=datetime.now(timezone.utc) - timedelta(days=40))
    opsdash_server(pg_url)
    deadline = time.monotonic() + 20
    while True:  # the server forgets them once its event loop runs, then hourly
        with pg_engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(web_sessions)
                                .where(web_sessions.c.key == session_key(old))).scalar_one()
        if not left:
            break
        assert time.monotonic() < deadline, "the served process kept a sign-in that ended 39 days ago"
        time.sleep(0.2)
