"""docs/deployment/ for a metro, checked: the nginx config (``nginx -t``, then run for real) and the systemd unit.

nginx runs with exactly the documented file, only its ports, certificate paths and upstream
addresses substituted, in front of two small Tornado upstreams that say who answered: TLS,
the redirect from HTTP, gzip for static files but never for pages, the websocket upgrade,
stickiness by the signed-in cookie, and ``/metrics`` never reaching a process.
"""
from __future__ import annotations

import asyncio
import configparser
import gzip
import re
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest
import requests
import tornado.httpclient
import tornado.httpserver
import tornado.ioloop
import tornado.web
import tornado.websocket

from .helpers.servers import ROOT, free_port
from .helpers.services import service_missing
from .test_settings_fields import readme_rows

DEPLOYMENT = ROOT / "docs" / "deployment"
METRO = DEPLOYMENT / "nginx-opsdash-metro.conf"
UNIT = DEPLOYMENT / "opsdash@.service"
ENV_EXAMPLE = DEPLOYMENT / "opsdash.env.example"
DOCUMENTED_UPSTREAMS = ("10.0.1.11:5006", "10.0.1.11:5007", "10.0.1.12:5006", "10.0.1.12:5007")
#: The test's own self-signed certificate: requests says so on every call.
pytestmark = pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
SCRIPT = "window.opsdash = " + "'static file text that compresses well ' + " * 400 + "'';\n"


@pytest.fixture(scope="module")
def nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        service_missing("nginx is not installed (apt-get install -y nginx-light; .ci/run installs it)")
    return path


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        service_missing("openssl is not installed (apt-get install -y openssl)")
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    made = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=ops.example.gov.za", "-keyout", str(key), "-out", str(cert)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return cert, key


def metro_config(tmp: Path, https_port: int, http_port: int, upstreams: list[int]) -> Path:
    """The documented metro config with test ports, certificate and upstreams, in a minimal main config."""
    site = METRO.read_text(encoding="utf-8")
    cert, key = self_signed_certificate(tmp)
    replacements = [("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
                    ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                    ("/etc/ssl/opsdash/fullchain.pem", str(cert)), ("/etc/ssl/opsdash/privkey.pem", str(key))]
    replacements += [(f"server {documented};", f"server 127.0.0.1:{upstreams[i % len(upstreams)]};")
                     for i, documented in enumerate(DOCUMENTED_UPSTREAMS)]
    for documented, actual in replacements:
        assert site.count(documented) == 1, f"the documented config no longer has {documented!r}"
        site = site.replace(documented, actual)
    (tmp / "opsdash.conf").write_text(site, encoding="utf-8")
    temp_paths = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                        "uwsgi", "scgi"))
    main = tmp / "nginx.conf"
    main.write_text(
        f"daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{ access_log {tmp}/access.log; {temp_paths} include {tmp}/opsdash.conf; }}\n",
        encoding="utf-8",
    )
    return main


class Upstreams:
    """Two Tornado servers on one loop in a thread, standing in for two ``opsdash serve`` processes."""

    def __init__(self) -> None:
        self.ports = [free_port(), free_port()]
        self.metrics_requests = 0
        self.seen_headers: list[dict[str, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _app(self, port: int) -> tornado.web.Application:
        upstreams = self

        class Page(tornado.web.RequestHandler):
            def get(self) -> None:
                upstreams.seen_headers.append(dict(self.request.headers))
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.write(f"<html><body>answered by {port} " + "page text " * 300 + "</body></html>")

        class Script(tornado.web.RequestHandler):
            def get(self) -> None:
                self.set_header("Content-Type", "application/javascript")
                self.write(SCRIPT)

        class Metrics(tornado.web.RequestHandler):
            def get(self) -> None:
                upstreams.metrics_requests += 1
                self.write("opsdash_sessions 1\n")

        class Echo(tornado.websocket.WebSocketHandler):
            def check_origin(self, origin: str) -> bool:
                return True

            def on_message(self, message) -> None:
                self.write_message(f"{port}:{message}")

        return tornado.web.Application([(r"/static/.*", Script), (r"/metrics.*", Metrics), (r"/app/ws", Echo),
                                        (r"/.*", Page)])

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._servers = [tornado.httpserver.HTTPServer(self._app(port)) for port in self.ports]
        for server, port in zip(self._servers, self.ports):
            server.listen(port, address="127.0.0.1")
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Upstreams:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        def stop() -> None:
            for server in self._servers:
                server.stop()
            self._loop.stop()
        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)


@pytest.fixture
def proxied(nginx, tmp_path) -> Iterator[tuple[str, str, Upstreams]]:
    """(https base URL, http base URL, upstreams) with nginx running the metro config."""
    https_port, http_port = free_port(), free_port()
    with Upstreams() as upstreams:
        main = metro_config(tmp_path, https_port, http_port, upstreams.ports)
        proxy = subprocess.Popen([nginx, "-c", str(main), "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            base = f"https://127.0.0.1:{https_port}"
            for _ in range(100):
                try:
                    requests.get(base + "/", verify=False, timeout=2)
                    break
                except requests.ConnectionError:
                    assert proxy.poll() is None, (tmp_path / "error.log").read_text()
                    threading.Event().wait(0.1)
            yield base, f"http://127.0.0.1:{http_port}", upstreams
        finally:
            proxy.terminate()
            proxy.wait(timeout=15)



def answered_by(base: str, user_cookie: str) -> str:
    text = requests.get(base + "/app", verify=False, timeout=5, cookies={"user": user_cookie}).text
    return re.search(r"answered by (\d+)", text).group(1)


def test_metro_nginx_config_passes_nginx_syntax_check(nginx, tmp_path):
    main = metro_config(tmp_path, free_port(), free_port(), [free_port(), free_port()])
    check = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr and "test is successful" in check.stderr


@pytest.mark.slow
def test_metro_nginx_serves_tls_gzips_static_not_pages_upgrades_websockets_sticks_and_hides_metrics(proxied):
    base, plain, upstreams = proxied
    redirect = requests.get(plain + "/app?x=1", allow_redirects=False, timeout=5)
    assert redirect.status_code == 301 and redirect.headers["Location"].startswith("https://")
    assert redirect.headers["Location"].endswith("/app?x=1")

    page = requests.get(base + "/app", verify=False, timeout=5, headers={"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and "answered by" in page.text
    assert "Content-Encoding" not in page.headers  # the page carries a session token: never compressed
    headers = upstreams.seen_headers[-1]
    assert headers.get("X-Forwarded-Proto") == "https" and headers.get("X-Real-Ip") == "127.0.0.1"

    script = requests.get(base + "/static/js/app.js", verify=False, timeout=5, headers={"Accept-Encoding": "gzip"},
                          stream=True)
    assert script.headers.get("Content-Encoding") == "gzip"
    raw = script.raw.read(decode_content=False)
    assert len(raw) < len(SCRIPT) / 5 and gzip.decompress(raw).decode() == SCRIPT

    for path in ("/metrics", "/metrics/", "/metrics?name=x", "//metrics"):
        hidden = requests.get(base + path, verify=False, timeout=5, headers={"Authorization": "Bearer " + "x" * 20})
        assert hidden.status_code == 404, path
    assert upstreams.metrics_requests == 0

    answered = {answered_by(base, "signed-user-a") for _ in range(6)}
    assert len(answered) == 1  # one signed-in browser, one process
    spread = {answered_by(base, f"signed-user-{i}") for i in range(24)}
    assert spread == {str(port) for port in upstreams.ports}  # users spread over the processes

    async def websocket_echo() -> str:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        request = tornado.httpclient.HTTPRequest(base.replace("https", "wss") + "/app/ws", ssl_options=context,
                                                 headers={"Cookie": "user=signed-user-a"})
        connection = await tornado.websocket.websocket_connect(request)
        try:
            await connection.write_message("ping")
            return await asyncio.wait_for(connection.read_message(), 10)
        finally:
            connection.close()

    echoed = asyncio.run(websocket_echo())
    assert echoed == f"{answered.pop()}:ping"  # upgraded, and on the same process as the page


def test_systemd_unit_runs_opsdash_serve_unprivileged_restarts_and_keeps_secrets_out():
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service["ExecStart"].split()[1:4] == ["serve", "--address", "${LISTEN_ADDRESS}"]
    assert service["ExecStart"].endswith("--port %i") and service["ExecStart"].split()[0].endswith("/bin/opsdash")
    assert service["User"] not in ("root", "0") and service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > 0
    assert service["EnvironmentFile"] == "/etc/opsdash/opsdash.env" and service["NoNewPrivileges"] == "yes"
    # Best-compressed static files outlive a restart (PrivateTmp's /tmp does not): compression.static_copies_folder.
    assert service["CacheDirectory"] == "opsdash"
    assert not any(key.startswith("Environment") and "SECRET" in value for key, value in service.items())
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # Every OPSDASH_ variable of the example environment is a documented setting.
    documented = {row.split("`")[1] for row in readme_rows()}
    example = [line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
               if line and not line.startswith("#")]
    assert set(example) - {"LISTEN_ADDRESS"} <= documented and "LISTEN_ADDRESS" in example


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        service_missing("systemd-analyze is not installed (apt-get install -y systemd; .ci/run installs it)")
    fake = tmp_path / "opsdash"
    fake.write_text("#!/bin/sh\n", encoding="utf-8")
    fake.chmod(0o755)
    unit = tmp_path / "opsdash@5006.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/opsdash/venv/bin/opsdash", str(fake)),
                    encoding="utf-8")
    check = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    said = check.stdout + check.stderr
    assert check.returncode == 0 and "opsdash@5006.service" not in said, said
