"""Who is this session? The Scope of the signed-in user, decided on the server."""
from __future__ import annotations

import panel as pn

from data.errors import NotAuthorized
from data.scope import Scope, scope_for_user

from .settings import get_engine


def current_scope() -> Scope:
    """The Scope of ``pn.state.user`` (set by Panel from the signed cookie).

    Raises NotAuthorized when nobody is signed in, the user is unknown or
    their role has no dashboard.
    """
    username = pn.state.user
    if not username or username == "guest":
        raise NotAuthorized("you are not signed in")
    return scope_for_user(get_engine(), username)
