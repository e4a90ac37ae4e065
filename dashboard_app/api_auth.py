"""Who calls the HTTP API (``/api/v1/``), and whether they may (docs/api.md, issue 18).

Two credentials, checked on the server for every request:
- ``Authorization: Bearer <token>``: a personal API token (``data.api_tokens``;
  every use recorded: when, from which address);
- without that header, the signed-in cookie with the web layer's session rules
  (``request_user.signed_in_username``), for same-origin browser use. A
  cross-site request (``Sec-Fetch-Site: cross-site``) may not use the cookie.

Then the rate limit of the credential (``throttle.ApiRateLimit``) and the
user's Scope, from the users table (never from the request). Any refusal is an
``ApiRefusal``: a status and the ``detail`` text of the JSON body.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from data.api_tokens import verify_token
from data.errors import NotAuthorized
from data.models import DASHBOARD_ROLES
from data.scope import Scope, scope_for_user
from data.users import find_account
from data.workers import SHORT

from .request_user import SignInRequired, signed_in_username
from .settings import get_engine
from .throttle import get_api_rate_limit

#: The plan's wording for every role without a dashboard (field workers, citizens).
ROLE_DETAIL = "Dashboard access requires manager, admin, or ward councillor role"
BEARER_FORMAT = "Authorization must be 'Bearer <token>' with a token from 'opsdash token create'"
BAD_TOKEN = "The API token is not valid: unknown, revoked or expired"
NO_CREDENTIAL = "Authentication required: send 'Authorization: Bearer <token>' or sign in"
ENDED = "Your sign-in has ended; sign in again or use an API token"
CROSS_SITE = "A cross-site request cannot use the sign-in cookie; use an API token"
#: The longest Authorization header looked at (a token is 51 characters).
MAX_HEADER = 200


class ApiRefusal(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def unauthenticated(detail: str) -> ApiRefusal:
    return ApiRefusal(401, detail, {"WWW-Authenticate": 'Bearer realm="opsdash"'})


@dataclass(frozen=True)
class ApiCaller:
    username: str
    credential: str  # what the rate limit counts: ``token:<id>`` or ``user:<name>``
    scope: Scope


def bearer_token(header: str) -> str:
    """The token of an ``Authorization`` header; ApiRefusal(401) for any other shape."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if len(header) > MAX_HEADER or scheme.lower() != "bearer" or not value or any(c.isspace() for c in value):
        raise unauthenticated(BEARER_FORMAT)
    return value


def _dashboard_scope(engine: Engine, username: str) -> Scope:
    """The user's Scope; a role without a dashboard gets the plan's 403 wording."""
    try:
        return scope_for_user(engine, username)
    except NotAuthorized:
        account = find_account(engine, username=username)
        if account is not None and account.is_active and account.role not in {r.value for r in DASHBOARD_ROLES}:
            raise NotAuthorized(ROLE_DETAIL) from None
        raise


def _admit(engine: Engine, credential: str, username: str) -> ApiCaller:
    limit = get_api_rate_limit()
    if not limit.allow(credential):
        raise ApiRefusal(429, f"Too many requests: at most {limit.per_minute} a minute for this credential; "
                              "try again in a minute", {"Retry-After": str(limit.WINDOW_S)})
    try:
        scope = _dashboard_scope(engine, username)
    except NotAuthorized as exc:
        raise ApiRefusal(403, str(exc)) from None
    return ApiCaller(username, credential, scope)


def _token_caller(engine: Engine, token: str, address: str | None) -> ApiCaller:
    user = verify_token(engine, token, address=address)
    if user is None:
        raise unauthenticated(BAD_TOKEN)
    return _admit(engine, f"token:{user.token_id}", user.username)


async def api_caller(handler) -> ApiCaller:
    """The caller of ``handler``'s request, admitted; ApiRefusal otherwise (other errors: the database)."""
    request = handler.request
    header = request.headers.get("Authorization")
    engine = get_engine()
    if header is not None:
        return await SHORT.run(_token_caller, engine, bearer_token(header), request.remote_ip)
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        raise ApiRefusal(403, CROSS_SITE)
    try:
        username = await signed_in_username(handler)
    except SignInRequired as exc:
        raise unauthenticated(ENDED if exc.ended else NO_CREDENTIAL) from None
    except NotAuthorized as exc:
        raise ApiRefusal(403, str(exc)) from None
    return await SHORT.run(_admit, engine, f"user:{username}", username)
