"""``/metrics``: this process's Prometheus metrics, for the operator token only.

The route exists only when ``OPSDASH_METRICS_TOKEN`` is set (``routes.py``):
without a token there is nothing to scrape and the URL is a plain 404. With
one, a request without ``Authorization: Bearer <token>`` (or with another
token) gets 401 and no figure: drop counts by reason would tell an outsider
when sensitive-category events arrive, as ``/health``'s details would.

The metric objects are in ``data/metrics.py``; what only the server has (the
live hub, the connection pool, the worker lanes) is read when scraped, through
the collectors ``register_process_collectors`` adds at server start.
"""
from __future__ import annotations

import logging

import tornado.web

from data import workers
from data.metrics import HubCollector, LaneCollector, PoolCollector, ReplicaCollector, exposition, register_collector

from .health_route import operator_token_given
from .live import hub_snapshot
from .log_format import RequestContext
from .settings import get_engine, get_read_route

METRICS_PATH = r"/metrics"
log = logging.getLogger("opsdash.routes")
_registered = False


def register_process_collectors() -> None:
    """The scrape-time figures of a served process: live hub, connection pools, worker lanes, replica (once)."""
    global _registered
    if _registered:
        return
    _registered = True
    register_collector(HubCollector(hub_snapshot))
    register_collector(PoolCollector(_engines))
    register_collector(ReplicaCollector(get_read_route))
    register_collector(LaneCollector(workers.snapshot))


def _engines() -> dict[str, object]:
    replica = get_read_route().replica
    return {"primary": get_engine(), **({"replica": replica} if replica is not None else {})}


class MetricsHandler(RequestContext, tornado.web.RequestHandler):
    """Prometheus text format for ``Authorization: Bearer <OPSDASH_METRICS_TOKEN>``; 401 otherwise."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if not operator_token_given(self.request.headers.get("Authorization")):
            log.info("/metrics refused: no or wrong operator token from %s", self.request.remote_ip)
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer realm="opsdash-metrics"')
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish("The operator token is required (Authorization: Bearer ...).\n")
            return
        body, content_type = exposition()
        self.set_header("Content-Type", content_type)
        self.finish(body)
