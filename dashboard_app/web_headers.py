"""Security headers and cookie attributes for every response the server sends (issue 15).

A Tornado output transform (``panel_fence`` adds it to Bokeh's application),
so Panel's, Bokeh's and our handlers all get the same treatment without each
remembering to.

The Content-Security-Policy is what the dashboard needs, measured in
Chromium (``tests/test_browser_security.py`` fails on any CSP violation):
- scripts only from the server itself, plus what Panel 1.9 needs, measured:
  ``'unsafe-inline'`` for the inline bootstrap scripts Bokeh and Panel's
  templates write into every page (one carries the per-page session token,
  so no fixed hash can allow it); ``'unsafe-eval'`` because Panel's
  ReactiveHTML models run their ``_scripts`` through ``new Function`` (every
  template's TemplateActions and the NotificationArea are such models;
  without it the page stops at "EvalError ... _render_script"); ``blob:``
  for es-module-shims, which loads (and fetches: ``connect-src``) the
  template's ES modules as blobs. BokehJS itself needed none of the three.
- styles inline as well: Bokeh and Panel put ``<style>`` elements and style
  attributes into every component.
- fonts, images and everything else from the server only (issue 17): no
  Google Fonts (the pages use system fonts, ``components.panel_compat.serve_pages_without_google_fonts``)
  and no icon font from a CDN (Panel's named icons are Tabler's webfont from
  cdn.jsdelivr.net at ``@latest``: give a widget an SVG icon instead);
  ``data:`` for fonts and images Bokeh and Panel inline, ``blob:`` images;
  websockets to the same origin.
- ``frame-ancestors 'none'`` (with ``X-Frame-Options: DENY`` for older
  browsers): no other site can frame the dashboard or the sign-in form.
"""
from __future__ import annotations

from http.cookies import SimpleCookie

import tornado.httputil
import tornado.web

from .settings import get_settings

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def served_over_https() -> bool:
    return get_settings().https


def harden_cookie(header: str, secure: bool) -> str:
    """A ``Set-Cookie`` value with HttpOnly, SameSite=Lax (unless it says otherwise) and, over HTTPS, Secure.

    No cookie of ours is for scripts (the sign-in form's CSRF token goes in the form itself).
    """
    jar = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # not parseable: leave it as it came
        return header
    if len(jar) != 1:
        return header
    morsel = next(iter(jar.values()))
    morsel["httponly"] = True
    if not morsel["samesite"]:
        morsel["samesite"] = "Lax"
    if secure:
        morsel["secure"] = True
    return morsel.OutputString()


class SecurityHeaders(tornado.web.OutputTransform):
    def transform_first_chunk(self, status_code: int, headers: tornado.httputil.HTTPHeaders, chunk: bytes,
                              finishing: bool) -> tuple[int, tornado.httputil.HTTPHeaders, bytes]:
        for name, value in HEADERS.items():
            if name not in headers:
                headers[name] = value
        secure = served_over_https()
        if secure and "Strict-Transport-Security" not in headers:
            headers["Strict-Transport-Security"] = "max-age=31536000"
        cookies = headers.get_list("Set-Cookie")
        if cookies:
            del headers["Set-Cookie"]
            for cookie in cookies:
                headers.add("Set-Cookie", harden_cookie(cookie, secure))
        return status_code, headers, chunk
