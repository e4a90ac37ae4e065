"""Who a plain HTTP request is signed in as: the cookie rules of the web layer, for our own routes.

The streaming export route and the HTTP API (cookie case) accept exactly
what a dashboard page accepts (``web_session.py``): Panel's signed ``user``
cookie (tornado ``get_secure_cookie`` with the cookie secret); with our own
sign-in also a live ``web_sessions`` record for that same user (signed out,
password changed, disabled: refused at once); mapped to a users-table name
as the dashboard maps it (``session.username_for_sign_in``; under OIDC the
provider's verified e-mail from Panel's signed ``id_token`` cookie).
"""
from __future__ import annotations

from panel.config import config

from data.errors import NotAuthorized
from data.web_sessions import valid_session
from data.workers import SHORT

from .session import username_for_sign_in
from .settings import get_engine, get_settings
from .web_session import OWN_PROVIDERS, SESSION_COOKIE, signed_cookie, signed_user_info


class SignInRequired(NotAuthorized):
    """No signed-in user (``ended``: there was one, and that sign-in no longer stands). A 401, not a 403."""

    def __init__(self, ended: bool = False) -> None:
        super().__init__("your sign-in has ended" if ended else "not signed in")
        self.ended = ended


def cookie_secret() -> str | None:
    """``OPSDASH_COOKIE_SECRET``, else the secret the server was started with (``panel serve --cookie-secret``)."""
    return get_settings().cookie_secret or config.cookie_secret or None


async def signed_in_username(handler) -> str:
    """The users-table username of the request's sign-in.

    SignInRequired without one (or one that ended), NotAuthorized when it maps to no account;
    other errors (database down) propagate: the caller answers 503.
    """
    signed_in = signed_cookie(handler.get_secure_cookie, "user") if cookie_secret() else None
    if not signed_in:
        raise SignInRequired()
    engine = get_engine()
    if config.oauth_provider in OWN_PROVIDERS:
        # The sign-in must still stand: a copied cookie of a signed-out session opens nothing.
        session_id = signed_cookie(handler.get_secure_cookie, SESSION_COOKIE)
        record = await SHORT.run(valid_session, engine, session_id=session_id)
        if record is None or record.username != signed_in:
            raise SignInRequired(ended=True)
    return await SHORT.run(username_for_sign_in, engine, signed_in, config.oauth_provider,
                           signed_user_info(handler.get_secure_cookie))
