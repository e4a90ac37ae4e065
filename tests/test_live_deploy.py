"""docs/deployment/nginx-opsdash.conf, run for real: nginx in front of two opsdash serve processes."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from data.seed import seed

from .helpers.databases import user_of
from .helpers.live import add_ticket, new_pages, sign_in, ticketing_message, wait_for_text, wait_until
from .helpers.servers import ROOT, free_port
from .helpers.services import service_missing
from .test_live_servers import LIVE, publish

CONFIG = ROOT / "docs" / "deployment" / "nginx-opsdash.conf"


@pytest.fixture(scope="session")
def nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        service_missing("nginx is not installed (apt-get install -y nginx-light)")
    return path


def nginx_config(tmp: Path, listen: int, upstreams: list[int]) -> Path:
    """The documented site config with our ports, inside a minimal main config writing only under ``tmp``."""
    site = CONFIG.read_text(encoding="utf-8")
    for documented, actual in (("listen 8080;", f"listen 127.0.0.1:{listen};"),
                               ("server 127.0.0.1:5006;", f"server 127.0.0.1:{upstreams[0]};"),
                               ("server 127.0.0.1:5007;", f"server 127.0.0.1:{upstreams[1]};")):
        assert site.count(documented) == 1, f"the documented config no longer has {documented!r}"
        site = site.replace(documented, actual)
    (tmp / "opsdash.conf").write_text(site, encoding="utf-8")
    main = tmp / "nginx.conf"
    temp_paths = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                        "uwsgi", "scgi"))
    main.write_text(
        f"daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{ access_log {tmp}/access.log; {temp_paths} include {tmp}/opsdash.conf; }}\n",
        encoding="utf-8",
    )
    return main


def test_documented_nginx_config_passes_nginx_syntax_check(nginx, tmp_path):
    main = nginx_config(tmp_path, free_port(), [free_port(), free_port()])
    check = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr


@pytest.mark.slow
@pytest.mark.browser
def test_dashboards_through_nginx_are_sticky_and_live(nginx, tmp_path, random_seed, pg_engine, pg_url, redis_url, chromium_browser,
                                                      opsdash_server):
    result = seed(pg_engine, tickets=100, wards=2, municipalities=1, random_seed=random_seed)
    muni = result.municipalities[0]
    listen = free_port()
    env = {"OPSDASH_ALLOWED_ORIGINS": f"127.0.0.1:{listen}", "OPSDASH_LIVE_INTERVAL_MS": "200"}
    servers = [opsdash_server(pg_url, redis_url=redis_url, env=env) for _ in range(2)]
    main = nginx_config(tmp_path, listen, [s.port for s in servers])
    proxy = subprocess.Popen([nginx, "-c", str(main), "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{listen}"
    try:
        def answers() -> bool:
            try:
                return requests.get(f"{base}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(answers, what="nginx to proxy /health")
        users = [user_of(result, "manager"), user_of(result, "admin"), user_of(result, "ward_councillor")]
        pages = new_pages(chromium_browser, len(users))
        for page, user in zip(pages, users):
            # The document (HTTP GET) and its websocket must reach the same process,
            # or the session would not connect: live status proves both went through.
            sign_in(page, base, user)
            wait_for_text(page, LIVE, what="a live session through the proxy")
        # A ticket the database holds in the councillor's ward: the hub routes by that row.
        via = add_ticket(pg_engine, muni["id"], muni["wards"][0], tracking_number=f"VIA-NGINX-{uuid.uuid4().hex[:6]}")
        publish(redis_url, muni["id"], ticketing_message("ticket_created", muni["wards"][0], via["tracking_number"]))
        for page in pages:
            wait_for_text(page, via["tracking_number"], what="the event through the proxy")
    finally:
        proxy.terminate()
        proxy.wait(10)
