"""Exports through a real ``opsdash serve`` on PostgreSQL: the buttons in Chromium and the streaming route.

The server's large-export threshold sits between a councillor's and a
manager's row count, so the councillor's buttons use Panel's FileDownload
and the manager's the streaming route; both files are read back and
compared with ``scoped_tickets``.
"""
from __future__ import annotations

import base64
import json
import re
import time
import uuid
from dataclasses import dataclass
from urllib.error import HTTPError
from urllib.parse import quote, urljoin
from urllib.request import Request, urlopen

import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import tornado.web
from panel.util import base64url_encode
from sqlalchemy import select

from dashboard_app.export_route import export_link
from data.db import get_engine
from data.export_token import sign_export_token
from data.filters import TicketFilters
from data.models import ExportAudit
from data.seed import SeedResult, seed
from data.tickets import count_tickets
from data.users import find_account

from .helpers.browser import browser_sign_in
from .helpers.databases import add_tickets, scope_of, ticket_record, user_of
from .helpers.export import expected_csv, expected_xlsx, oracle_frame, read_csv, read_xlsx
from .helpers.servers import OpsDashServer
from .helpers.web import sign_in

HOSTILE = "=HYPERLINK(\"http://evil\",\"click\") Amanzi \u2014 \u00eb"
FILENAME = re.compile(r"^tickets_[a-z0-9-]+_\d{8}_\d{6}\.(csv|xlsx)$")


@dataclass
class ExportSite:
    engine: object
    result: SeedResult
    server: OpsDashServer

    def user(self, role: str) -> dict:
        return user_of(self.result, role)

    def scope(self, role: str):
        return scope_of(self.engine, self.result, role)

    def get(self, path: str, username: str | None = None, cookie: str | None = None,
            signed: dict[str, str] | None = None):
        """GET on the server signed in as ``username`` (a session record and its signed cookies), with a
        given raw cookie header, or the ``signed`` cookies (name -> value, signed as Panel signs them);
        (status, headers, body)."""
        from datetime import timedelta

        from data.web_sessions import start_session

        headers = {}
        if username is not None:
            signed = {"user": username, "opsdash_session": start_session(self.engine, username, timedelta(hours=1))}
        if signed is not None:
            headers["Cookie"] = "; ".join(
                f"{name}={tornado.web.create_signed_value(self.server.cookie_secret, name, value).decode()}"
                for name, value in signed.items())
        elif cookie is not None:
            headers["Cookie"] = cookie
        try:
            with urlopen(Request(self.server.url + path, headers=headers), timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def link(self, username: str, fmt: str, filters: TicketFilters = TicketFilters(), **kwargs) -> str:
        token = sign_export_token(self.server.cookie_secret, username, fmt, filters, **kwargs)
        return f"/export/download?token={quote(token)}"

    def audits(self, username: str) -> list[ExportAudit]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(ExportAudit).where(ExportAudit.username == username)
                                     .order_by(ExportAudit.id)).all())


@pytest.fixture(scope="module")
def export_site(pg_url, tmp_path_factory, module_random_seed):
    engine = get_engine(pg_url)
    result = seed(engine, tickets=600, wards=3, municipalities=2, random_seed=module_random_seed)
    councillor = user_of(result, "ward_councillor")
    add_tickets(engine, [ticket_record(uuid.UUID(councillor["municipality_id"]), ward_id=councillor["ward_id"],
                                       description=HOSTILE, address="@SUM(1+1)")])
    small = count_tickets(engine, scope_of(engine, result, "ward_councillor"))
    large = count_tickets(engine, scope_of(engine, result, "manager"))
    assert small < large
    server = OpsDashServer(database_url=pg_url, log_dir=tmp_path_factory.mktemp("export-server"),
                           env={"OPSDASH_LARGE_EXPORT_ROWS": str((small + large) // 2)})
    server.start()
    try:
        yield ExportSite(engine, result, server)
    finally:
        server.stop()


# ---- the streaming route, over plain HTTP ---------------------------------------------------

def test_route_streams_exactly_the_users_rows_and_audits(export_site):
    manager = export_site.user("manager")["username"]
    status, headers, body = export_site.get(export_site.link(manager, "csv"), username=manager)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    filename = re.search(r'filename="([^"]+)"', headers["Content-Disposition"]).group(1)
    assert FILENAME.match(filename) and filename.endswith(".csv")
    assert read_csv(body)[1] == expected_csv(oracle_frame(export_site.engine, export_site.scope("manager"), None))
    assert export_site.audits(manager)[-1].channel == "http"


@pytest.mark.parametrize("cookie", [None, "user=manager", "user=\"2|1:0|10:1|4:user|8:bWFuYWdlcg==|forged\""])
def test_route_refuses_without_a_signed_user_cookie(export_site, cookie):
    manager = export_site.user("manager")["username"]
    status, _, body = export_site.get(export_site.link(manager, "csv"), cookie=cookie)
    assert status == 401 and b"Sign in" in body


def test_route_refuses_another_users_token_a_tampered_one_and_an_expired_one(export_site):
    councillor = export_site.user("ward_councillor")["username"]
    manager = export_site.user("manager")["username"]
    before = len(export_site.audits(councillor)) + len(export_site.audits(manager))
    cases = [
        export_site.link(manager, "csv"),  # a manager's link with a councillor's cookie
        export_site.link(councillor, "csv")[:-3] + "AAA",
        export_site.link(councillor, "csv", now=time.time() - 3600),
        "/export/download",
    ]
    for path in cases:
        status, _, body = export_site.get(path, username=councillor)
        assert status == 403, path
        assert b"Traceback" not in body
    assert len(export_site.audits(councillor)) + len(export_site.audits(manager)) == before


def test_route_takes_the_scope_from_the_user_record_not_from_the_token_filters(export_site):
    councillor = export_site.user("ward_councillor")
    other_ward = next(w for w in export_site.result.municipalities[0]["wards"] if w != councillor["ward_id"])
    link = export_site.link(councillor["username"], "xlsx", TicketFilters(wards=(other_ward,)))
    status, _, body = export_site.get(link, username=councillor["username"])
    assert status == 200
    path = export_site.server.log_path.with_name("councillor.xlsx")
    path.write_bytes(body)
    rows = read_xlsx(path)[1]
    assert rows == expected_xlsx(oracle_frame(export_site.engine, export_site.scope("ward_councillor"), None))
    assert {r[6] for r in rows} == {councillor["ward_id"]}
    assert TicketFilters.parse(json.loads(export_site.audits(councillor["username"])[-1].filters)) == TicketFilters()


def test_route_refuses_a_user_disabled_after_the_link_was_made(export_site):
    from sqlalchemy import update

    from data.models import User
    from data.users import create_user

    councillor = export_site.user("ward_councillor")
    name = f"councillor-{uuid.uuid4().hex[:8]}"
    create_user(export_site.engine, name, "a-long-enough-password", role="ward_councillor",
                municipality_id=councillor["municipality_id"], ward_id=councillor["ward_id"])
    link = export_site.link(name, "csv")
    assert export_site.get(link, username=name)[0] == 200
    with export_site.engine.begin() as conn:
        conn.execute(update(User).where(User.username == name).values(is_active=False))
    status, _, body = export_site.get(link, username=name)
    assert status == 401 and b"sign-in has ended" in body  # a disabled user's sessions no longer count


def test_links_are_signed_with_panels_cookie_secret_when_opsdash_has_none(export_site, pg_url, tmp_path):
    """``panel serve --cookie-secret X`` without OPSDASH_COOKIE_SECRET: X signs the links too."""
    server = OpsDashServer(database_url=pg_url, log_dir=tmp_path, panel_convention=True, secret_in_env=False)
    server.start()
    try:
        site = ExportSite(export_site.engine, export_site.result, server)
        manager = site.user("manager")["username"]
        status, _, body = site.get(site.link(manager, "csv"), username=manager)
        assert status == 200, body[:300]
        assert read_csv(body)[1] == expected_csv(oracle_frame(site.engine, site.scope("manager"), None))
        assert site.get(site.link(manager, "csv"))[0] == 401  # still: no signed-in user, no export
    finally:
        server.stop()


def test_route_answers_a_bad_format_with_a_clear_400(export_site):
    manager = export_site.user("manager")["username"]
    status, _, body = export_site.get(export_site.link(manager, "pdf"), username=manager)
    assert status == 400 and b"unknown export format 'pdf'" in body


# ---- the route under OIDC sign-in (--oauth-provider generic) --------------------------------
# Panel's OAuth handlers set a signed ``user`` cookie with the provider's name for the user and a
# signed ``id_token`` cookie with its claims; the cookies are made here the same way, so no
# identity provider is needed (the one configured below does not exist).

def oidc_cookies(subject: str, email: str | None, verified: bool = True) -> dict[str, str]:
    claims = {"sub": subject, "email_verified": verified} | ({"email": email} if email else {})
    return {"user": subject, "id_token": base64url_encode(json.dumps(claims))}


@pytest.fixture(scope="module")
def oidc_site(export_site, pg_url, tmp_path_factory):
    nowhere = "http://127.0.0.1:1"
    server = OpsDashServer(database_url=pg_url, log_dir=tmp_path_factory.mktemp("export-oidc"),
                           oauth_provider="generic", panel_args=[
                               "--oauth-key", "opsdash-test", "--oauth-secret", "not-a-real-secret",
                               "--oauth-extra-params", json.dumps({"AUTHORIZE_URL": f"{nowhere}/authorize",
                                                                   "TOKEN_URL": f"{nowhere}/token",
                                                                   "USER_URL": f"{nowhere}/userinfo"})])
    server.start()
    try:
        yield ExportSite(export_site.engine, export_site.result, server)
    finally:
        server.stop()


def email_of(site: ExportSite, role: str) -> str:
    return find_account(site.engine, username=site.user(role)["username"]).email


def test_oidc_user_downloads_through_the_route_as_the_account_of_their_verified_email(oidc_site):
    manager = oidc_site.user("manager")["username"]
    cookies = oidc_cookies("idp-subject-7f3a", email_of(oidc_site, "manager").upper())
    status, headers, body = oidc_site.get(oidc_site.link(manager, "csv"), signed=cookies)
    assert status == 200, body[:300]
    assert headers["Content-Type"].startswith("text/csv")
    assert read_csv(body)[1] == expected_csv(oracle_frame(oidc_site.engine, oidc_site.scope("manager"), None))
    assert oidc_site.audits(manager)[-1].channel == "http"


def test_oidc_route_refuses_other_users_tokens_expired_or_tampered_links_and_unmapped_sign_ins(oidc_site):
    manager = oidc_site.user("manager")["username"]
    councillor = oidc_site.user("ward_councillor")["username"]
    as_councillor = oidc_cookies("idp-councillor", email_of(oidc_site, "ward_councillor"))
    own = oidc_site.link(councillor, "csv")
    body, signature = own.split("token=")[1].replace("%3D", "=").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["q"] = {}  # drop filters, keep the signature
    widened = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    before = len(oidc_site.audits(councillor)) + len(oidc_site.audits(manager))
    cases = [  # (path, cookies, status, text in the answer)
        (oidc_site.link(manager, "csv"), as_councillor, 403, b"belongs to another user"),
        (oidc_site.link(councillor, "csv", now=time.time() - 3600), as_councillor, 403, b"expired"),
        (f"/export/download?token={quote(widened + '.' + signature)}", as_councillor, 403, b"not valid"),
        (own, None, 401, b"Sign in"),
        # The provider's name for the user is never an OpsDash username, even when they look alike.
        (oidc_site.link(manager, "csv"), {"user": manager}, 403, b"e-mail"),
        (own, oidc_cookies(councillor, email_of(oidc_site, "ward_councillor"), verified=False), 403, b"verified"),
        (own, oidc_cookies("idp-stranger", "stranger@elsewhere.example"), 403, b"no OpsDash account"),
    ]
    for path, cookies, code, text in cases:
        status, headers, answer = oidc_site.get(path, signed=cookies)
        assert (status, headers["Content-Type"]) == (code, "text/plain; charset=utf-8"), (path, cookies, answer)
        assert text in answer and "Content-Disposition" not in headers and b"Traceback" not in answer
    assert len(oidc_site.audits(councillor)) + len(oidc_site.audits(manager)) == before


# ---- the buttons, in Chromium --------------------------------------------------------------

def download(page, label: str, target_dir) -> tuple[str, object]:
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name=label).click()
    path = target_dir / info.value.suggested_filename
    info.value.save_as(path)
    return info.value.suggested_filename, path


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("role,channel", [("ward_councillor", "ui"), ("manager", "http")])
def test_both_buttons_download_exactly_the_scoped_rows(export_site, browser_page, tmp_path, role, channel):
    """Councillor: FileDownload over the websocket. Manager (above the threshold): the streaming route."""
    user = export_site.user(role)
    browser_sign_in(browser_page, export_site.server.url, user["username"], user["password"])
    frame = oracle_frame(export_site.engine, export_site.scope(role), None)

    name, path = download(browser_page, "Download CSV", tmp_path)
    assert FILENAME.match(name) and name.endswith(".csv")
    assert read_csv(path)[1] == expected_csv(frame)

    name, path = download(browser_page, "Download Excel", tmp_path)
    assert FILENAME.match(name) and name.endswith(".xlsx")
    assert read_xlsx(path)[1] == expected_xlsx(frame)

    audits = export_site.audits(user["username"])[-2:]
    assert [(a.format, a.channel, a.row_count) for a in audits] == [("csv", channel, len(frame)),
                                                                     ("xlsx", channel, len(frame))]
    if role == "ward_councillor":
        assert HOSTILE in frame["description"].tolist()


# ---- under a URL prefix (panel serve --prefix, or a proxy at a sub-path) ---------------------

def test_export_links_are_relative_to_the_app_root_never_absolute():
    secret = "x" * 32
    assert export_link(secret, "thandi", "csv", TicketFilters()).startswith("./export/download?token=")
    assert export_link(secret, "thandi", "csv", TicketFilters(), "..").startswith("../export/download?")


@pytest.mark.browser
@pytest.mark.slow
def test_under_a_prefix_sign_in_lands_on_the_app_and_the_large_export_link_downloads(export_site, pg_url, browser_page, tmp_path):
    threshold = export_site.server.extra_env["OPSDASH_LARGE_EXPORT_ROWS"]
    server = OpsDashServer(database_url=pg_url, log_dir=tmp_path, prefix="/opsdash",
                           env={"OPSDASH_LARGE_EXPORT_ROWS": threshold})
    server.start()
    try:
        site = ExportSite(export_site.engine, export_site.result, server)
        manager = site.user("manager")
        assert site.get(site.link(manager["username"], "csv"), username=manager["username"])[0] == 200
        _, refused = sign_in(server.url, manager["username"], "wrong")  # back to the form under the prefix
        assert urljoin(f"{server.url}/login", refused.headers["Location"]).startswith(f"{server.url}/login?error=")
        browser_sign_in(browser_page, server.url, manager["username"], manager["password"])
        with browser_page.expect_download(timeout=60_000) as info:
            browser_page.get_by_role("button", name="Download CSV").click()
        assert info.value.url.startswith(f"{server.url}/export/download?token=")  # the route, under the prefix
        path = tmp_path / info.value.suggested_filename
        info.value.save_as(path)
        assert read_csv(path)[1] == expected_csv(oracle_frame(site.engine, site.scope("manager"), None))
        assert site.audits(manager["username"])[-1].channel == "http"
    finally:
        server.stop()
