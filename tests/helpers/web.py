"""Helpers for the web-layer security tests: sign-in through the real form, the page's Bokeh token, the websocket."""
from __future__ import annotations

import asyncio
import json
import re
from html import unescape
from urllib.parse import urlsplit

import requests

TOKEN_RE = re.compile(r'"token":\s*"([^"]+)"')
XSRF_RE = re.compile(r'name="_xsrf"\s+value="([^"]+)"')


def origin_of(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def sign_in(base_url: str, username: str, password: str, http: requests.Session | None = None,
            origin: str | None = None, next_url: str | None = None) -> tuple[requests.Session, requests.Response]:
    """Sign in as a browser does: fetch the form (its CSRF token and cookie), POST it from the site's origin.

    Does not follow the redirect; ``http`` keeps the cookies. ``origin`` overrides the Origin header
    (a cross-site form); ``next_url`` is the link the sign-in came from (``/login?next=...``).
    """
    from urllib.parse import quote

    http = http or requests.Session()
    form = http.get(f"{base_url}/login" + (f"?next={quote(next_url)}" if next_url else ""), timeout=30)
    token = XSRF_RE.search(form.text)
    data = {"username": username, "password": password}
    if token:
        data["_xsrf"] = unescape(token.group(1))
    response = http.post(f"{base_url}/login", data=data, allow_redirects=False, timeout=60,
                         headers={"Origin": origin or origin_of(base_url), "Referer": f"{base_url}/login"})
    return http, response


def page_token(http: requests.Session, base_url: str) -> str | None:
    """The Bokeh session token embedded in the dashboard page (None when the page has none)."""
    response = http.get(f"{base_url}/", timeout=60)
    match = TOKEN_RE.search(response.text)
    return match.group(1) if match else None


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def _pull_document(base_url: str, cookies: str, token: str, timeout: float) -> str:
    """Open the dashboard websocket with ``cookies`` and ``token``; the document JSON the server sends."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    url = "ws" + base_url[4:] + "/ws"
    request = HTTPRequest(url, headers={"Cookie": cookies, "Origin": origin_of(base_url)},
                          request_timeout=timeout, connect_timeout=timeout)
    try:
        conn = await websocket_connect(request, subprotocols=["bokeh", token])
    except HTTPClientError as exc:
        return f"refused: {exc.code}"
    try:
        header = await asyncio.wait_for(conn.read_message(), timeout)
        if header is None:
            return "closed"
        for _ in range(2):  # metadata, content of the ACK
            await asyncio.wait_for(conn.read_message(), timeout)
        if json.loads(header).get("msgtype") != "ACK":
            return f"no ACK: {header}"
        for part in ({"msgid": "t1", "msgtype": "PULL-DOC-REQ"}, {}, {}):
            await conn.write_message(json.dumps(part))
        while True:
            frame = await asyncio.wait_for(conn.read_message(), timeout)
            if frame is None:
                return "closed"
            if '"PULL-DOC-REPLY"' in frame:
                await conn.read_message()  # metadata
                return await conn.read_message() or "closed"
    finally:
        conn.close()


def pull_document(base_url: str, cookies: dict[str, str] | str, token: str, timeout: float = 30) -> str:
    """What the websocket gives these cookies and this token: the document JSON, or ``refused: CODE``/``closed``."""
    header = cookies if isinstance(cookies, str) else cookie_header(cookies)
    return asyncio.run(_pull_document(base_url, header, token, timeout))


async def _socket_lifetime(base_url: str, cookies: str, token: str, on_open, limit: float) -> float | None:
    """Seconds from ``on_open()`` (called once the socket is acknowledged) until the server closes it."""
    import time

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest("ws" + base_url[4:] + "/ws", headers={"Cookie": cookies, "Origin": origin_of(base_url)})
    conn = await websocket_connect(request, subprotocols=["bokeh", token])
    try:
        for _ in range(3):
            await conn.read_message()
        for part in ({"msgid": "t1", "msgtype": "PULL-DOC-REQ"}, {}, {}):
            await conn.write_message(json.dumps(part))
        await asyncio.get_running_loop().run_in_executor(None, on_open)
        start = time.monotonic()
        while time.monotonic() - start < limit:
            try:
                frame = await asyncio.wait_for(conn.read_message(), limit)
            except asyncio.TimeoutError:
                break
            if frame is None:
                return time.monotonic() - start
        return None
    finally:
        conn.close()


def socket_closed_after(base_url: str, cookies: dict[str, str], token: str, on_open, limit: float = 75) -> float | None:
    """Open the websocket, run ``on_open``, then wait: seconds until the server closed it (None: still open)."""
    return asyncio.run(_socket_lifetime(base_url, cookie_header(cookies), token, on_open, limit))
