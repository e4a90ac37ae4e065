"""Sign-in page and the mapping from a signed-in browser to a users-table account."""
from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import requests

from dashboard_app.auth import GENERIC_ERROR, THROTTLED_ERROR, login_page
from dashboard_app.throttle import LoginThrottle
from dashboard_app.session import username_for_sign_in
from data.errors import NotAuthorized
from data.seed import seed
from data.scope import scope_for_user
from data.tickets import scoped_tickets, ticket_page
from data.users import create_user

from .helpers.databases import user_of
from .helpers.live import wait_until
from .helpers.web import page_token, pull_document, sign_in


def test_login_page_keeps_the_username_and_password_fields():
    page = login_page("/login", "")
    assert 'name="username"' in page and 'name="password"' in page and 'type="password"' in page
    assert 'action="./login"' in page and 'method="post"' in page
    assert GENERIC_ERROR not in page


def test_login_page_shows_only_its_own_error_texts():
    assert THROTTLED_ERROR in login_page("/login", THROTTLED_ERROR)
    for forged in ("<script>alert(1)</script>", "Your account is locked, call 0800 123 456",
                   '"><img src=x onerror=alert(1)>'):
        page = login_page("/login", forged)
        assert GENERIC_ERROR in page
        assert forged not in page and "<script>alert" not in page and "0800" not in page


def test_own_provider_cookie_user_is_the_username(engine):
    assert username_for_sign_in(engine, "thandi", "opsdash", None) == "thandi"
    for nobody in (None, "", "guest"):
        with pytest.raises(NotAuthorized):
            username_for_sign_in(engine, nobody, "opsdash", None)


def test_oidc_sign_in_maps_the_verified_email_to_the_user_record(engine, make_seed):
    result = make_seed(tickets=0, random_seed=41)
    name = f"oidc-{uuid.uuid4().hex[:8]}"
    email = f"{name}@municipality.example"
    create_user(engine, name, "a-long-password-1", role="manager",
                municipality_id=result.municipalities[0]["id"], email=email)
    info = {"email": email.upper(), "email_verified": True}
    assert username_for_sign_in(engine, "provider-subject-123", "generic", info) == name
    assert username_for_sign_in(engine, email, "azure", None) == name  # --oauth-jwt-user email


def test_oidc_never_signs_in_by_local_username_or_unverified_email(engine, make_seed):
    result = make_seed(tickets=0, random_seed=42)
    manager = user_of(result, "manager")
    name = f"oidc-{uuid.uuid4().hex[:8]}"
    email = f"{name}@municipality.example"
    create_user(engine, name, "a-long-password-1", role="admin",
                municipality_id=result.municipalities[0]["id"], email=email)
    with pytest.raises(NotAuthorized):  # a provider account named like a local user is not that user
        username_for_sign_in(engine, manager["username"], "generic", {"name": manager["username"]})
    with pytest.raises(NotAuthorized):
        username_for_sign_in(engine, "x", "generic", {"email": email, "email_verified": False})
    with pytest.raises(NotAuthorized):
        username_for_sign_in(engine, "x", "generic", {"email": f"other-{email}"})


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
def test_throttle_limits_each_account_per_address_and_per_account_never_per_address_alone(shared):
    from dashboard_app.throttle import ACCOUNT_FACTOR
    from .helpers.services import require_redis
    from .helpers.services import REDIS_URL

    if shared:
        require_redis()
    throttle = LoginThrottle(max_attempts=3, window_s=60, redis_url=REDIS_URL if shared else None)
    a, b = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    assert [throttle.reserve(a, "10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert throttle.reserve(b, "10.0.0.1")  # another account behind the same address
    assert throttle.reserve(a, "10.0.0.2")  # the same account from elsewhere, until the account's own limit
    for n in range(3 * ACCOUNT_FACTOR):
        throttle.reserve(a, f"10.1.{n // 250}.{n % 250}")
    assert not throttle.reserve(a, "10.9.9.9")  # guessed from many addresses: the account is throttled
    throttle.succeeded(b, "10.0.0.1")
    assert throttle.reserve(b, "10.0.0.1")


@pytest.mark.slow
def test_served_sign_in_is_throttled_even_for_the_right_password(opsdash_server, pg_engine, pg_url, random_seed):
    result = seed(pg_engine, tickets=0, wards=2, municipalities=1, random_seed=random_seed)
    manager = user_of(result, "manager")
    server = opsdash_server(pg_url, env={"OPSDASH_LOGIN_MAX_ATTEMPTS": "3", "OPSDASH_LOGIN_WINDOW_S": "300"})

    def attempt(password: str) -> list[str]:
        _, response = sign_in(server.url, manager["username"], password)
        return parse_qs(urlsplit(response.headers["Location"]).query).get("error", [])

    assert [attempt("wrong") for _ in range(3)] == [[GENERIC_ERROR]] * 3
    assert attempt(manager["password"]) == [THROTTLED_ERROR]
    page = requests.get(f"{server.url}/login?error={THROTTLED_ERROR}", timeout=30).text
    assert THROTTLED_ERROR in page


def test_a_served_sign_in_starts_loading_its_dashboard_before_the_page_is_asked_for(opsdash_server, pg_engine, pg_url,
                                                                                      random_seed):
    """The figures, the median and the table's first page start at the sign-in POST and, quick, are ready before
    its redirect, so the page's first message already holds them.

    A Bokeh client that never reports a page load sees a view's figures only when they were in
    the cache while the page was built (tests/test_first_render.py): here, because the sign-in
    loaded them. Which queries run, and how often PostgreSQL reads the table, is bench/'s business.
    """
    result = seed(pg_engine, tickets=40, wards=2, municipalities=1, random_seed=random_seed)
    manager = user_of(result, "manager")
    server = opsdash_server(pg_url)

    def sign_in_as(role: str, password: str | None = None, next_url: str | None = None):
        user = user_of(result, role)
        http, response = sign_in(server.url, user["username"], password or user["password"], next_url=next_url)
        assert response.status_code == 302
        return http

    def prefetched() -> list[str]:
        return [line for line in server.log(tail=10**6).splitlines() if "prefetched the" in line]

    sign_in_as("manager", password="wrong")
    sign_in_as("field_worker")  # signed in, but no dashboard to load
    sign_in_as("manager", next_url="./?status=open")  # a link's own filters: other queries
    http = sign_in_as("manager")
    # Quick loads end before the redirect: the browser asks for a page they are ready for.
    assert sorted(line.split("prefetched the ")[1].split()[0] for line in prefetched()) == ["figures", "median", "table"]

    scope = scope_for_user(pg_engine, manager["username"])
    visible = scoped_tickets(pg_engine, scope, columns=("id",), sort=None)
    document = pull_document(server.url, http.cookies.get_dict(), page_token(http, server.url))
    assert f"{len(visible):,} tickets match the filters" in document
    assert ticket_page(pg_engine, scope, page_size=1).frame.tracking_number.iloc[0] in document  # the table's rows too
