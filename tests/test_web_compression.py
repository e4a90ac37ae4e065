"""Compressed responses and cache lifetimes of a real ``opsdash serve`` (issue 17), over plain HTTP.

What the browser sees (no host but the server's, compressed scripts) is in
``tests/test_browser_light.py``; this file checks the bytes: every encoding
decodes to exactly the file on disk, revalidation still answers 304, the
dashboard page stays uncompressed (BREACH) while the sign-in page is
compressed, and the streamed CSV export arrives compressed, in chunks, with
the same rows as without compression. And the copy of Panel's script
template that defers the page's scripts still matches Panel's own.
"""
from __future__ import annotations

import gzip
import hashlib
import re
import time
from pathlib import Path
from urllib.parse import quote

import bokeh
import brotli
import panel
import panel.auth  # noqa: F401  (first: it imports our provider while it loads, see dashboard_app/auth.py)
import pytest
import requests

from dashboard_app.compression import (IMMUTABLE, REVALIDATE, CompressedCache, accepted_encoding, cache_control,
                                      compress_whole, static_copies_folder)
from data.export_token import sign_export_token
from data.filters import TicketFilters

from .helpers.databases import user_of
from .helpers.servers import OpsDashServer, seeded_server
from .helpers.web import sign_in

BOKEH_JS = Path(bokeh.__file__).parent / "server" / "static" / "js" / "bokeh.min.js"
PANEL_DIST = Path(panel.__file__).parent / "dist"
LUXON = "bundled/datatabulator/luxon/build/global/luxon.min.js"


@pytest.fixture(scope="module")
def site(pg_url, tmp_path_factory, module_random_seed):
    # Enough tickets that the manager's CSV is several of the export route's 256 KB blocks.
    with seeded_server(pg_url, tmp_path_factory.mktemp("compression"), dict(tickets=2500, wards=2, municipalities=1),
                       random_seed=module_random_seed) as served:
        yield served


def raw_get(url: str, accept: str | None, http: requests.Session | None = None, **headers: str) -> requests.Response:
    """GET without decoding: ``.content`` is the body as sent (``Accept-Encoding`` exactly ``accept``)."""
    headers = dict(headers)
    headers["Accept-Encoding"] = accept or "identity"
    response = (http or requests).get(url, headers=headers, stream=True, timeout=60)
    response._content = response.raw.read(decode_content=False)
    return response


def decoded(response: requests.Response) -> bytes:
    encoding = response.headers.get("Content-Encoding")
    if encoding == "br":
        return brotli.decompress(response.content)
    if encoding == "gzip":
        return gzip.decompress(response.content)
    assert encoding is None, encoding
    return response.content


def script_urls(html: str) -> list[str]:
    return re.findall(r'<script[^>]+src="([^"]+)"', html)


def test_brotli_gzip_or_nothing_as_the_browser_asks_and_every_body_is_the_file(site):
    _, server = site
    url = f"{server.url}/static/js/bokeh.min.js?v=x"
    on_disk = BOKEH_JS.read_bytes()
    for accept, expected in [("gzip, deflate, br, zstd", "br"), ("gzip, deflate", "gzip"), (None, None),
                             ("br;q=0, gzip;q=0.5", "gzip"), ("gzip;q=0", None)]:
        response = raw_get(url, accept)
        assert response.status_code == 200
        assert response.headers.get("Content-Encoding") == expected, accept
        assert "Accept-Encoding" in response.headers["Vary"]
        assert decoded(response) == on_disk, accept
        if expected:
            assert len(response.content) < len(on_disk) // 3


def test_a_static_files_best_compression_is_kept_and_served_whole(site):
    _, server = site
    url = f"{server.url}/static/extensions/panel/panel.min.js?v=1"
    on_disk = (PANEL_DIST / "panel.min.js").read_bytes()
    first = raw_get(url, "br")
    assert decoded(first) == on_disk
    # The best (quality 11) copy is made in the background after the first request.
    for _ in range(100):
        time.sleep(0.1)
        again = raw_get(url, "br")
        if "Content-Length" in again.headers:
            break
    assert int(again.headers["Content-Length"]) == len(again.content) <= len(first.content)
    assert decoded(again) == on_disk


def best_copy(cache: CompressedCache, key: tuple[str, str, str], raw: bytes) -> bytes:
    cache.make(key, raw)
    for _ in range(600):
        body = cache.get(key)
        if body is not None:
            return body
        time.sleep(0.05)
    raise AssertionError(f"no best copy of {key} after 30 s")


@pytest.mark.parametrize("encoding", ["br", "gzip"])
def test_a_best_copy_is_kept_for_the_next_process_which_uses_it_instead_of_compressing_again(tmp_path, encoding):
    """Made anew by every process, brotli 11 of the page's scripts took a core from each process's first sign-ins."""
    raw = (PANEL_DIST / "panel.min.js").read_bytes()[:200_000]
    key = ("/static/extensions/panel/panel.min.js", '"etag"', encoding)
    first = best_copy(CompressedCache(folder=tmp_path), key, raw)
    assert first == compress_whole(raw, encoding)
    kept = list(tmp_path.iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == first and not kept[0].name.startswith(".part")
    # What the next process finds is what it serves: a quick copy planted in its place comes back as it is.
    quick = brotli.compress(raw, quality=1) if encoding == "br" else gzip.compress(raw, compresslevel=1)
    assert quick != first
    kept[0].write_bytes(quick)
    assert best_copy(CompressedCache(folder=tmp_path), key, raw) == quick


def test_a_kept_copy_that_is_not_exactly_the_file_is_made_again(tmp_path):
    """A damaged copy, or one of other content planted under the file's name, is never served."""
    raw = (PANEL_DIST / "panel.min.js").read_bytes()[:100_000]
    key = ("/static/extensions/panel/panel.min.js", '"etag"', "br")
    best_copy(CompressedCache(folder=tmp_path), key, raw)
    (kept,) = tmp_path.iterdir()
    for planted in (b"not brotli at all", brotli.compress(b"alert('not the file')"), kept.read_bytes()[:-10]):
        kept.write_bytes(planted)
        body = best_copy(CompressedCache(folder=tmp_path), key, raw)
        assert brotli.decompress(body) == raw
        assert kept.read_bytes() == body  # and the good copy replaces the bad one
    # No folder it may write to: the copies stay in memory, served all the same.
    blocked = tmp_path / "a-file-not-a-folder"
    blocked.write_text("")
    assert brotli.decompress(best_copy(CompressedCache(folder=blocked), key, raw)) == raw


def test_a_later_process_finds_a_kept_copy_by_the_files_etag_and_checks_it_against_that_hash(tmp_path):
    """Tornado's static ETag is the file's SHA-512: the copy is served from a file's first request on."""
    raw = (PANEL_DIST / "panel.min.js").read_bytes()[:150_000]
    etag = f'"{hashlib.sha512(raw).hexdigest()}"'
    key = ("/static/extensions/panel/panel.min.js", etag, "br")
    made = best_copy(CompressedCache(folder=tmp_path), key, raw)
    later = CompressedCache(folder=tmp_path)
    assert later.get(key) is None and later.kept_for(key) == made
    assert later.get(key) == made  # in memory from then on
    assert CompressedCache(folder=tmp_path).kept_for((key[0], '"not-a-content-hash"', "br")) is None
    assert CompressedCache(folder=tmp_path).kept_for((key[0], etag, "gzip")) is None  # none made
    (kept,) = tmp_path.iterdir()
    for planted in (b"not brotli at all", brotli.compress(b"alert('not the file')"), made[:-10]):
        kept.write_bytes(planted)
        assert CompressedCache(folder=tmp_path).kept_for(key) is None
        preloaded = CompressedCache(folder=tmp_path)
        preloaded.preload().result(30)
        assert preloaded.kept_for(key) is None
    kept.write_bytes(made)
    preloaded = CompressedCache(folder=tmp_path)
    preloaded.preload().result(30)
    kept.unlink()  # read at start: found in memory, whatever happens to the folder since
    assert preloaded.kept_for(key) == made


def test_a_restarted_server_sends_its_best_copy_whole_at_a_files_first_request(pg_url, tmp_path):
    """No quick compression streamed on the event loop of a new process for a file an earlier one compressed."""
    url_path = "/static/extensions/panel/panel.min.js?v=1"
    on_disk = (PANEL_DIST / "panel.min.js").read_bytes()
    env = {"CACHE_DIRECTORY": str(tmp_path / "cache")}
    first = OpsDashServer(database_url=pg_url, log_dir=tmp_path, env=env)
    first.start()
    try:
        assert "Content-Length" not in raw_get(first.url + url_path, "br").headers  # streamed: no copy yet
        for _ in range(300):
            if "Content-Length" in raw_get(first.url + url_path, "br").headers:
                break
            time.sleep(0.1)
    finally:
        first.stop()
    assert len(list((tmp_path / "cache" / "static").glob("*.br"))) == 1
    second = OpsDashServer(database_url=pg_url, log_dir=tmp_path, env=env)
    second.start()
    try:
        response = raw_get(second.url + url_path, "br")
    finally:
        second.stop()
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert decoded(response) == on_disk


def test_best_copies_live_in_systemds_cache_directory_when_there_is_one(monkeypatch, tmp_path):
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path}:/elsewhere")
    assert static_copies_folder() == tmp_path / "static"
    monkeypatch.delenv("CACHE_DIRECTORY")
    assert static_copies_folder().name.startswith("opsdash-static-")


def test_versioned_files_are_cached_for_a_year_and_the_rest_revalidate_with_a_304(site):
    _, server = site
    versioned = raw_get(f"{server.url}/static/js/bokeh.min.js?v=abc", "gzip")
    assert versioned.headers["Cache-Control"] == IMMUTABLE and "Expires" not in versioned.headers
    pinned = raw_get(f"{server.url}/static/extensions/panel/bundled/datatabulator/tabulator-tables@6.4.0/"
                     "dist/js/tabulator.min.js", "gzip")
    assert pinned.headers["Cache-Control"] == IMMUTABLE
    plain = raw_get(f"{server.url}/static/extensions/panel/{LUXON}", "gzip")
    assert plain.headers["Cache-Control"] == REVALIDATE
    assert plain.headers["Etag"].startswith('W/"')  # a compressed copy: a weak validator
    assert decoded(plain) == (PANEL_DIST / LUXON).read_bytes()
    revalidated = raw_get(f"{server.url}/static/extensions/panel/{LUXON}", "gzip",
                          **{"If-None-Match": plain.headers["Etag"]})
    assert revalidated.status_code == 304 and revalidated.content == b""
    assert revalidated.headers["Cache-Control"] == REVALIDATE


def test_the_dashboard_page_is_never_compressed_the_sign_in_page_is(site):
    result, server = site
    form = raw_get(f"{server.url}/login", "gzip, br")
    assert form.status_code == 200 and form.headers.get("Content-Encoding") == "br"
    assert b'name="_xsrf"' in decoded(form)
    user = user_of(result, "ward_councillor")
    http, _ = sign_in(server.url, user["username"], user["password"])
    page = raw_get(f"{server.url}/?q=guess", "gzip, br", http=http)
    assert page.status_code == 200 and b'"token"' in page.content
    assert "Content-Encoding" not in page.headers  # it carries the session token: BREACH
    # ...while every script it names comes compressed.
    for src in script_urls(page.text):
        if src.startswith(("static/", "./static/")):
            script = raw_get(f"{server.url}/{src.removeprefix('./')}", "gzip, br", http=http)
            assert script.headers.get("Content-Encoding") == "br", src


def test_the_streamed_csv_export_arrives_compressed_in_chunks_with_the_same_rows(site):
    result, server = site
    manager = user_of(result, "manager")
    http, _ = sign_in(server.url, manager["username"], manager["password"])
    link = "/export/download?token=" + quote(sign_export_token(server.cookie_secret, manager["username"], "csv",
                                                               TicketFilters()))
    plain = raw_get(server.url + link, None, http=http)
    compressed = raw_get(server.url + link, "gzip", http=http)
    assert plain.status_code == compressed.status_code == 200
    assert int(plain.headers["Content-Length"]) == len(plain.content) > 2 * 256 * 1024  # several blocks
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert compressed.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in compressed.headers
    assert len(compressed.content) < len(plain.content) // 2
    # The same export twice: only the export's own time stamp may differ (none is in the rows).
    assert gzip.decompress(compressed.content) == plain.content
    assert compressed.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("header, expected", [
    ("gzip, deflate, br, zstd", "br"), ("gzip, deflate", "gzip"), ("", None), ("identity", None),
    ("br;q=0, gzip", "gzip"), ("BR;Q=0.1", "br"), ("*", "br"), ("*;q=0, gzip;q=0", None), ("gzip;q=bogus", None),
])
def test_accept_encoding_is_read_with_its_weights(header, expected):
    assert accepted_encoding(header) == expected


@pytest.mark.parametrize("path, query, expected", [
    ("/static/js/bokeh.min.js", "v=6acf7fa1", IMMUTABLE),
    ("/static/extensions/panel/css/button.css", "v=1.9.4", IMMUTABLE),
    ("/static/extensions/panel/bundled/@microsoft/fast-components@2.30.6/dist/fast-components.js", "", IMMUTABLE),
    ("/opsdash/static/extensions/panel/bundled/notyf@3/notyf.min.js", "", REVALIDATE),
    ("/static/extensions/panel/bundled/reactiveesm/es-module-shims@^1.10.0/dist/x.js", "", REVALIDATE),
    ("/static/extensions/panel/bundled/datatabulator/luxon/build/global/luxon.min.js", "", REVALIDATE),
    ("/favicon.ico", "", "public, max-age=86400"),
    ("/", "v=1", None), ("/export/download", "token=x", None), ("/login", "", None),
])
def test_only_files_whose_url_names_their_version_are_immutable(path, query, expected):
    assert cache_control(path, query) == expected
