"""Compressed responses and cache lifetimes for what OpsDash serves itself (issue 17).

A Tornado output transform, added to Bokeh's Tornado application next to the
security headers (``components.panel_compat.add_response_transform``, at ``server.start``), so Bokeh's, Panel's and
our own handlers are all treated alike, with or without a proxy in front.

Compression (brotli where the browser offers it, else gzip):
- JavaScript, CSS, JSON, SVG, icons, CSV and other text, from 1 KB up; a
  response written in several chunks (static files, the streamed export) is
  compressed chunk by chunk and each chunk flushed, so streaming still streams
  (the export then goes chunked, without Content-Length: a browser shows its
  progress without a total).
- Static files (Bokeh's and Panel's ``/static/``, ``/components/``, the
  favicon) are the page's weight: their best compression (brotli quality 11,
  gzip level 9; ~1.8 s of CPU for bokeh.min.js) is made once in a background
  thread (brotli and zlib release the GIL), kept in memory keyed by the file's
  ETag (a hash of its content) and in a folder of this user's for later
  processes (``CompressedCache``). A later process serves a kept copy from the
  file's first request on; until a copy is ready, a quicker setting streams the
  file.
- HTML is compressed only on the sign-in page. The dashboard's page carries
  the Bokeh session token beside what the request sent (its query and headers,
  in the token's claims): compressed, its length could let someone who can
  both send a signed-in browser to chosen URLs and watch the encrypted
  traffic guess the token (BREACH). Its ~18 KB stay uncompressed. The sign-in
  page is safe: its only secret, the CSRF token, is masked anew in every
  response (Tornado's version 2 tokens, made against BREACH), and it echoes
  nothing from the request but one of a few fixed messages.

Cache lifetimes of static files:
- versioned URLs (Bokeh's ``?v=<content hash>``, Panel's ``?v=<version>``, a
  path naming an exact package version such as ``tabulator-tables@6.4.0``):
  ``public, max-age=31536000, immutable``: a returning browser asks nothing;
- the rest (``luxon.min.js``, ``notyf@3``, ...): ``no-cache``, so a returning
  browser revalidates by ETag (a 304 of a few hundred bytes) and never keeps
  a file an upgrade has changed at the same URL;
- the favicon: a day.
"""
from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import tempfile
import threading
import zlib
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import brotli
import tornado.httputil
import tornado.web

from data.settings import systemd_cache_directory

log = logging.getLogger("opsdash.compression")

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
FAVICON_CACHE = "public, max-age=86400"
#: Below this a compressed body gains less than its headers cost.
MIN_LENGTH = 1024
COMPRESSIBLE = {"application/javascript", "application/x-javascript", "application/json", "application/xml",
                "image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon"}
#: (brotli quality, gzip level). Responses made per request (pages, JSON, the streamed export): the cheapest
#: that still compresses well; a 256 KB block of export CSV measured 0.6 ms of CPU at brotli 3 (6.5x
#: smaller), 1.2 ms at gzip 1 (4.9x), against 4.6 ms at gzip 6 (7.0x): the export streams on the event loop
#: every session shares. Static files before their best copy is ready: a little more (~2 ms per 64 KB of script).
#: Their best copy, made once in the background: ~1.8 s of CPU for bokeh.min.js at brotli 11.
PER_REQUEST, QUICK, BEST = (3, 1), (5, 6), (11, 9)
STATIC_PATH = re.compile(r"(?:^|/)(?:static|components)/")
#: A path segment naming an exact version (``name@1.2.3``): its contents never change at that URL.
EXACT_VERSION = re.compile(r"@\d+\.\d+\.\d+(?:[-+][\w.]+)?/")
SIGN_IN_PATH = re.compile(r"/login/?$")
#: Tornado's static ETag: the SHA-512 of the file, in hex (``StaticFileHandler.get_content_version``).
SHA512_HEX = re.compile(r"[0-9a-f]{128}")
#: A kept copy's file name: the SHA-512 of the file it compresses, and the encoding.
KEPT_NAME = re.compile(r"[0-9a-f]{128}\.(?:br|gzip)")


class CompressedCache:
    """Best-compressed static bodies, keyed by (path, ETag, encoding); bounded, least recently used out first.

    One background worker makes them; a page's first load asks ~25 files at once, so up to 64
    wait (their raw bytes, ~4.5 MB for a page), files over 8 MB are not kept: a burst of requests
    for many different static files costs one core for a while, never a queue without end.

    Each best copy is also kept in ``folder``, named by the SHA-512 of the file's content, for every
    later process and restart: brotli 11 of the dashboard's scripts is ~7 s of CPU, and made anew by
    each process it took a core from its first sign-ins (10M tickets, paired: a process's first session
    2.4 s against 2.8 s, the next sign-ins 1.9 s against 2.4 s; docs/performance.md). Tornado's static
    ETag is that same SHA-512, so a process finds a kept copy at a file's first request
    (``kept_for``) and serves it at once, instead of streaming a quick compression on the event
    loop meanwhile (~0.18 s of a process's first sign-in). A copy read back is used only if it
    decompresses to bytes of the SHA-512 it is named by, so a damaged or planted one is made again;
    without a writable folder the copies stay in memory only.
    """

    def __init__(self, max_bytes: int = 48 * 1024 * 1024, max_pending: int = 64,
                 max_file: int = 8 * 1024 * 1024, folder: Path | None = None) -> None:
        self.max_bytes, self.max_pending, self.max_file = max_bytes, max_pending, max_file
        self.folder = folder
        self._bodies: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._size = 0
        self._pending: set[tuple[str, str, str]] = set()
        self._preloaded: dict[tuple[str, str], bytes] = {}  # (SHA-512, encoding): checked copies read at start
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opsdash-compress")

    def get(self, key: tuple[str, str, str]) -> bytes | None:
        with self._lock:
            body = self._bodies.get(key)
            if body is not None:
                self._bodies.move_to_end(key)
            return body

    def make(self, key: tuple[str, str, str], raw: bytes) -> None:
        """Compress ``raw`` at the best setting in the background, then keep it under ``key``."""
        with self._lock:
            if key in self._bodies or key in self._pending or len(self._pending) >= self.max_pending:
                return
            self._pending.add(key)
        self._worker.submit(self._make, key, raw)

    def kept_for(self, key: tuple[str, str, str]) -> bytes | None:
        """The copy an earlier process kept of the file whose ETag is ``key[1]`` (its SHA-512), checked
        against that hash, now kept in memory too; None when there is none (or the ETag is no SHA-512)."""
        digest = key[1].removeprefix("W/").strip('"')
        if not SHA512_HEX.fullmatch(digest):
            return None
        with self._lock:
            body = self._preloaded.pop((digest, key[2]), None)
        if body is None:
            body = self._read(digest, key[2])
        if body is not None:
            self._remember(key, body)
        return body

    def preload(self, max_bytes: int = 8 * 1024 * 1024) -> Future:
        """Read the most recently used kept copies, up to ``max_bytes``, in the background (done when the
        Future is): a new process's first page then finds them in memory (reading and checking them on its
        event loop took ~60 ms of a process's first sign-in)."""
        return self._worker.submit(self._preload, max_bytes)

    def _preload(self, max_bytes: int) -> None:
        try:
            kept = sorted((p for p in self.folder.iterdir() if KEPT_NAME.fullmatch(p.name)),
                          key=lambda p: p.stat().st_mtime, reverse=True) if self.folder is not None else []
        except OSError:
            return
        total = 0
        for path in kept:
            digest, encoding = path.name.split(".")
            body = self._read(digest, encoding)
            if body is None:
                continue
            total += len(body)
            if total > max_bytes:
                return
            with self._lock:
                self._preloaded[(digest, encoding)] = body

    def _make(self, key: tuple[str, str, str], raw: bytes) -> None:
        try:
            digest = hashlib.sha512(raw).hexdigest()
            body = self._read(digest, key[2])
            if body is None:
                body = compress_whole(raw, key[2])
                self._keep(digest, key[2], body)
            self._remember(key, body)
        finally:
            with self._lock:
                self._pending.discard(key)

    def _remember(self, key: tuple[str, str, str], body: bytes) -> None:
        with self._lock:
            if key in self._bodies:
                return
            self._bodies[key] = body
            self._size += len(body)
            while self._size > self.max_bytes and self._bodies:
                _, dropped = self._bodies.popitem(last=False)
                self._size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()
            self._size = 0

    def _path(self, digest: str, encoding: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{digest}.{encoding}"

    def _read(self, digest: str, encoding: str) -> bytes | None:
        """The best copy an earlier process kept under ``digest``, if it decompresses to bytes of that SHA-512."""
        path = self._path(digest, encoding)
        try:
            body = path.read_bytes() if path is not None else None
            if body is None or hashlib.sha512(decompress_whole(body, encoding)).hexdigest() != digest:
                return None
            os.utime(path)  # used: among the copies the next process reads first (``preload``)
            return body
        except (OSError, brotli.error, zlib.error):
            return None

    def _keep(self, digest: str, encoding: str, body: bytes) -> None:
        """Write the copy for later processes: whole or not at all (a temporary file renamed)."""
        path = self._path(digest, encoding)
        if path is None:
            return
        part = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".part-", delete=False) as part:
                part.write(body)
            os.replace(part.name, path)
        except OSError:
            log.debug("could not keep a compressed copy in %s", path.parent, exc_info=True)
            if part is not None:
                Path(part.name).unlink(missing_ok=True)


def static_copies_folder() -> Path:
    """Where the best copies of static files are kept between processes and restarts.

    systemd's ``CacheDirectory=`` (``$CACHE_DIRECTORY``, docs/deployment/opsdash@.service: kept
    across restarts, shared by the host's instances); else a folder of this user's in the
    system's temporary folder.
    """
    systemd = systemd_cache_directory()
    if systemd is not None:
        return systemd / "static"
    owner = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    return Path(tempfile.gettempdir()) / f"opsdash-static-{owner}"


STATIC_CACHE = CompressedCache(folder=static_copies_folder())


def compress_whole(raw: bytes, encoding: str) -> bytes:
    if encoding == "br":
        return brotli.compress(raw, quality=BEST[0])
    compressor = zlib.compressobj(BEST[1], zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(raw) + compressor.flush()


def decompress_whole(body: bytes, encoding: str) -> bytes:
    return brotli.decompress(body) if encoding == "br" else zlib.decompress(body, 16 + zlib.MAX_WBITS)


def stream_encoder(encoding: str, setting: tuple[int, int]) -> Callable[[bytes, bool], bytes]:
    """A function (chunk, last) -> compressed bytes that can be sent now (each chunk flushed)."""
    if encoding == "br":
        compressor = brotli.Compressor(quality=setting[0])
        return lambda chunk, last: compressor.process(chunk) + (compressor.finish() if last else compressor.flush())
    gzip = zlib.compressobj(setting[1], zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return lambda chunk, last: gzip.compress(chunk) + gzip.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def accepted_encoding(accept_encoding: str) -> str | None:
    """``br`` or ``gzip`` when the request's Accept-Encoding allows it (brotli first), else None."""
    offered: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        name, *params = [part.strip() for part in item.split(";")]
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:  # malformed: not offered
                    quality = 0.0
        if name:
            offered[name] = quality
    for encoding in ("br", "gzip"):
        if offered.get(encoding, offered.get("*", 0.0)) > 0:
            return encoding
    return None


def cache_control(path: str, query: str) -> str | None:
    """The Cache-Control of a static file's response (None: leave the handler's)."""
    if path.endswith("/favicon.ico"):
        return FAVICON_CACHE
    if not STATIC_PATH.search(path):
        return None
    versioned = re.search(r"(?:^|&)v=[^&]", query) is not None or EXACT_VERSION.search(path) is not None
    return IMMUTABLE if versioned else REVALIDATE


def weak(etag: str) -> str:
    return etag if etag.startswith("W/") else f"W/{etag}"


def compressible(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind.startswith("text/") or kind in COMPRESSIBLE


class CompressedResponses(tornado.web.OutputTransform):
    """Content-Encoding br/gzip and static cache lifetimes on every response (see the module's docstring)."""

    def __init__(self, request: tornado.httputil.HTTPServerRequest) -> None:
        self.path, self.query = request.path, request.query
        self.encoding = None
        if request.method == "GET" and "Range" not in request.headers:
            self.encoding = accepted_encoding(request.headers.get("Accept-Encoding", ""))
        self.static = bool(STATIC_PATH.search(self.path)) or self.path.endswith("/favicon.ico")
        self._encode: Callable[[bytes, bool], bytes] | None = None
        self._raw: list[bytes] | None = None  # a static file's raw chunks, for its best copy
        self._raw_size = 0
        self._cache_key: tuple[str, str, str] | None = None
        self._done = False  # the whole body went out with the first chunk (a cached copy)

    def transform_first_chunk(self, status_code: int, headers: tornado.httputil.HTTPHeaders, chunk: bytes,
                              finishing: bool) -> tuple[int, tornado.httputil.HTTPHeaders, bytes]:
        lifetime = cache_control(self.path, self.query) if status_code in (200, 304) else None
        if lifetime is not None:
            headers["Cache-Control"] = lifetime
            headers.pop("Expires", None)
        content_type = headers.get("Content-Type", "")
        etag = headers.get("Etag")
        if status_code == 304 and etag and self.encoding and self.static and compressible(content_type):
            headers["Etag"] = weak(etag)  # the validator the 200 before it carried
        if status_code != 200 or not compressible(content_type) or "Content-Encoding" in headers:
            return status_code, headers, chunk
        if content_type.startswith("text/event-stream"):
            # Event streams stay plain: events are a few hundred bytes each, and a compressor per open
            # stream (brotli keeps a window of megabytes) would cost more memory than it saves bytes.
            return status_code, headers, chunk
        if content_type.startswith("text/html") and not SIGN_IN_PATH.search(self.path):
            return status_code, headers, chunk  # BREACH: see the module's docstring
        vary = headers.get("Vary")
        headers["Vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
        if self.encoding is None or (finishing and len(chunk) < MIN_LENGTH):
            return status_code, headers, chunk
        headers["Content-Encoding"] = self.encoding
        headers.pop("Accept-Ranges", None)  # ranges would be of the compressed body, which Tornado cannot serve
        if etag:  # another representation of the same content: a weak validator (Tornado compares weakly)
            headers["Etag"] = weak(etag)
        if self.static and etag:
            self._cache_key = (self.path, etag, self.encoding)
            cached = STATIC_CACHE.get(self._cache_key) or STATIC_CACHE.kept_for(self._cache_key)
            if cached is not None:
                headers["Content-Length"] = str(len(cached))
                self._done = True
                return status_code, headers, cached
            self._raw = []
        self._encode = stream_encoder(self.encoding, QUICK if self._raw is not None else PER_REQUEST)
        body = self.transform_chunk(chunk, finishing)
        if finishing:
            headers["Content-Length"] = str(len(body))
        else:
            headers.pop("Content-Length", None)  # chunked from here on
        return status_code, headers, body

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        if self._done:
            return b""
        if self._encode is None:
            return chunk
        if self._raw is not None:
            self._raw.append(chunk)
            self._raw_size += len(chunk)
            if self._raw_size > STATIC_CACHE.max_file:  # too large to keep: not collected either
                self._raw = None
            elif finishing and self._cache_key is not None:
                STATIC_CACHE.make(self._cache_key, b"".join(self._raw))
                self._raw = None
        return self._encode(chunk, finishing)
