"""Who is this session? Decided on the server from Panel's signed cookie."""
from __future__ import annotations

import panel as pn

from data.errors import NotAuthorized
from data.scope import Scope, scope_for_user

from .settings import get_engine


def current_username() -> str:
    """``pn.state.user`` (Panel sets it from the signed cookie); NotAuthorized when nobody signed in."""
    username = pn.state.user
    if not username or username == "guest":
        raise NotAuthorized("you are not signed in")
    return str(username)


def current_scope() -> Scope:
    """The Scope of the signed-in user.

    Raises NotAuthorized when nobody is signed in, the user is unknown or
    their role has no dashboard.
    """
    return scope_for_user(get_engine(), current_username())
