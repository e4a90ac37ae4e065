"""Short-lived signed tokens for the large-export HTTP route.

A token names the user, the format and the filters, and expires after a few
minutes. The route accepts it only together with the signed ``user`` cookie
of the same user, and takes the filters from the token (signed, so a
browser cannot alter them) and the Scope from the users table (never from
the request). HMAC-SHA256 under a key derived from the cookie secret, so a
token can never pass for a cookie or the other way round.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from .errors import NotAuthorized
from .filters import TicketFilters

TOKEN_TTL_S = 600
_PURPOSE = b"opsdash-export-token-v1"


def _key(secret: str) -> bytes:
    if not secret:
        raise NotAuthorized("large exports are unavailable: the server has no cookie secret")
    return hmac.new(secret.encode("utf-8"), _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_export_token(secret: str, username: str, fmt: str, filters: TicketFilters, *,
                      ttl_s: int = TOKEN_TTL_S, now: float | None = None) -> str:
    payload = {"u": username, "f": fmt, "q": filters.to_dict(), "exp": int((now or time.time()) + ttl_s)}
    body = _b64(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    signature = _b64(hmac.new(_key(secret), body.encode("ascii"), hashlib.sha256).digest())
    return f"{body}.{signature}"


def verify_export_token(secret: str, token: str, username: str, *,
                        now: float | None = None) -> tuple[str, TicketFilters]:
    """The (format, filters) of a valid token for ``username``; NotAuthorized otherwise."""
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 8192:
        raise NotAuthorized("the download link is not valid; start the export again from the dashboard")
    body, signature = token.split(".")
    expected = _b64(hmac.new(_key(secret), body.encode("ascii", "replace"), hashlib.sha256).digest())
    if not hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode("ascii")):
        raise NotAuthorized("the download link is not valid; start the export again from the dashboard")
    try:
        payload = json.loads(_unb64(body))
        owner, fmt, query, expires = payload["u"], payload["f"], payload["q"], int(payload["exp"])
    except (ValueError, KeyError, TypeError):
        raise NotAuthorized("the download link is not valid; start the export again from the dashboard") from None
    if owner != username:
        raise NotAuthorized("this download link belongs to another user")
    if (now or time.time()) > expires:
        raise NotAuthorized("the download link has expired; start the export again from the dashboard")
    return fmt, TicketFilters.parse(query)
