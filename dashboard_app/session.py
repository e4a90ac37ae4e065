"""Who is this session? Decided on the server from Panel's signed cookie."""
from __future__ import annotations

from concurrent.futures import Future
from functools import partial
from typing import Any, Mapping

import panel as pn
from sqlalchemy import Engine

from components.store import DashboardStore
from data.errors import NotAuthorized
from data.replica import ReadRoute
from data.scope import Scope, scope_for_user
from data.users import find_account

from .live import process_hub
from .settings import get_engine
from .web_session import OWN_PROVIDERS, session_claims


def username_for_sign_in(
    engine: Engine, user: str | None, provider: str | None, user_info: Mapping[str, Any] | None
) -> str:
    """The users-table username of a signed-in browser.

    With our own provider the cookie holds the username. With an external
    OAuth/OIDC provider (``--oauth-provider generic|azure|google|...``) the
    provider's e-mail claim is looked up in ``users.email``: an identity
    provider can never pick a local username, and an address the provider
    marks unverified is refused.
    """
    if not user or user == "guest":
        raise NotAuthorized("you are not signed in")
    if provider in OWN_PROVIDERS:
        return str(user)
    info = dict(user_info or {})
    if info.get("email_verified") is False:
        raise NotAuthorized("your sign-in provider has not verified your e-mail address")
    email = info.get("email") or (user if "@" in str(user) else None)
    account = find_account(engine, email=str(email)) if email else None
    if account is None:
        raise NotAuthorized("no OpsDash account uses the e-mail address of this sign-in; ask an administrator")
    return account.username


def prefetch_dashboard(engine: Engine, username: str, reads: ReadRoute | None = None) -> list[Future[None]]:
    """Start loading what ``username``'s dashboard shows first (``DashboardStore.prefetch``); its loads.

    For the moment of sign-in, when the browser is only about to ask for the
    page. Nothing happens for a role without a dashboard. The figures are
    those of the user's Scope, shared under the same key (and change mark)
    as the views', so nothing here can widen what anyone sees.
    """
    try:
        scope = scope_for_user(engine, username)
    except NotAuthorized:
        return []
    store = DashboardStore(scope=scope, engine=engine, reads=reads,
                           change_mark=partial(process_hub().change_mark, scope.municipality_id))
    return store.prefetch()


def current_username() -> str:
    """The signed-in user of this session (NotAuthorized when none or unmapped).

    Read from the claims the server put into this session's signed token when the page was
    requested (``web_session.page_claims``): the page's token carries no cookie.
    """
    claims = session_claims()
    provider = pn.config.oauth_provider
    if provider in OWN_PROVIDERS and not claims.get("session"):
        raise NotAuthorized("your sign-in has ended; sign in again")
    return username_for_sign_in(get_engine(), claims.get("user"), provider, claims.get("user_info"))


def current_scope() -> Scope:
    """The Scope of the signed-in user.

    Raises NotAuthorized when nobody is signed in, the user is unknown or
    their role has no dashboard.
    """
    return scope_for_user(get_engine(), current_username())
