"""Sign-in throttling (issue 15, finding 8): atomic, per account and per (account, address), shared through Redis."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest

from dashboard_app.auth import GENERIC_ERROR, THROTTLED_ERROR
from data.seed import seed
from data.users import create_user

from .helpers.web import sign_in

pytestmark = pytest.mark.slow
PASSWORD = "a-long-enough-password"


@pytest.fixture(scope="module")
def municipality(pg_url, module_random_seed):
    from data.db import get_engine

    engine = get_engine(pg_url)
    result = seed(engine, tickets=0, wards=1, municipalities=1, random_seed=module_random_seed)
    return engine, result.municipalities[0]["id"]


def new_user(municipality) -> str:
    engine, muni = municipality
    name = f"throttle-{uuid.uuid4().hex[:10]}"
    create_user(engine, name, PASSWORD, role="manager", municipality_id=muni)
    return name


def error_of(server, username: str, password: str) -> str | None:
    """The sign-in form's answer: None when signed in, else its error text."""
    _, response = sign_in(server.url, username, password)
    assert response.status_code == 302, response.status_code
    return (parse_qs(urlsplit(response.headers["Location"]).query).get("error") or [None])[0]


def test_concurrent_wrong_passwords_get_no_more_password_checks_than_the_limit(opsdash_server, pg_url, municipality):
    server = opsdash_server(pg_url, env={"OPSDASH_LOGIN_MAX_ATTEMPTS": "5"})
    name = new_user(municipality)
    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda _: error_of(server, name, "wrong-password"), range(40)))
    assert answers.count(GENERIC_ERROR) <= 5, f"{answers.count(GENERIC_ERROR)} password checks for a limit of 5"
    assert answers.count(GENERIC_ERROR) + answers.count(THROTTLED_ERROR) == 40


def test_failures_from_one_address_do_not_lock_another_user_out_there(opsdash_server, pg_url, municipality):
    server = opsdash_server(pg_url, env={"OPSDASH_LOGIN_MAX_ATTEMPTS": "5"})
    guessed, neighbour = new_user(municipality), new_user(municipality)
    assert [error_of(server, guessed, "wrong") for _ in range(5)] == [GENERIC_ERROR] * 5
    assert error_of(server, guessed, PASSWORD) == THROTTLED_ERROR  # the guessed account, from that address
    assert error_of(server, neighbour, PASSWORD) is None  # a colleague behind the same NAT signs in


def test_the_limit_is_shared_by_server_processes_through_redis(opsdash_server, pg_url, redis_url, municipality):
    first = opsdash_server(pg_url, redis_url=redis_url, env={"OPSDASH_LOGIN_MAX_ATTEMPTS": "4"})
    second = opsdash_server(pg_url, redis_url=redis_url, env={"OPSDASH_LOGIN_MAX_ATTEMPTS": "4"})
    name = new_user(municipality)
    assert [error_of(first, name, "wrong") for _ in range(2)] == [GENERIC_ERROR] * 2
    assert [error_of(second, name, "wrong") for _ in range(2)] == [GENERIC_ERROR] * 2
    assert error_of(second, name, PASSWORD) == THROTTLED_ERROR
    assert error_of(first, name, PASSWORD) == THROTTLED_ERROR
