"""Where Redis is (``OPSDASH_REDIS_URL``): one server, a Redis Cluster, or a master that Sentinel names.

OpsDash uses Redis for classic Pub/Sub (the live bus, ``data.bus``) and for a few
counters (sign-in throttling). Each kind of deployment works for both:

- ``redis://host:port/db`` (``rediss://``, ``unix://``): one server.
- ``redis+cluster://host:port[,host:port...]``: a Redis Cluster. The cluster
  broadcasts a classic ``PUBLISH`` to every node, masters and replicas, so
  the ticketing system may publish on any node and the hub subscribes on ONE
  node, any node (still one subscriber connection per process). Processes
  start at a random node, so their subscriptions spread over the cluster.
  When that node goes away the hub's reconnect (``data.hub``) lands on another
  node this process knows: the URL's seeds plus every healthy node that
  ``CLUSTER NODES`` listed at the last connection. Counters use redis-py's
  ``RedisCluster`` (the throttle's two keys share a hash slot). Sharded
  Pub/Sub (``SPUBLISH``) is not what the ticketing system uses, so it is not used.
- ``redis+sentinel://host:port[,host:port...]/service_name[/db]``: the master
  the Sentinels name for ``service_name``, asked again at every (re)connection,
  so after a failover the hub and the publishers follow the new master.

A user name and password in the URL (``redis+cluster://:secret@h:p,...``) are
the Redis nodes' (the master's, for Sentinel); Sentinels themselves are asked
without a password.

redis-py is imported inside the functions: ``data`` stays quick to import for
scripts that never touch Redis (as ``data.bus``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

Kind = Literal["single", "cluster", "sentinel"]
SCHEMES: dict[str, Kind] = {"redis": "single", "rediss": "single", "unix": "single",
                            "redis+cluster": "cluster", "redis+sentinel": "sentinel"}
#: How the bus names each kind (``/health``, the hub's snapshot).
BUS_NAMES = {"single": "redis", "cluster": "redis-cluster", "sentinel": "redis-sentinel"}
#: CLUSTER NODES flags of a node not to connect to.
UNHEALTHY_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``OPSDASH_REDIS_URL``."""

    url: str = field(repr=False)
    kind: Kind
    nodes: tuple[tuple[str, int], ...] = ()  # cluster seeds or sentinels
    service: str | None = None  # sentinel only
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def bus_name(self) -> str:
        return BUS_NAMES[self.kind]

    def credentials(self) -> dict[str, str]:
        return {k: v for k, v in (("username", self.username), ("password", self.password)) if v}


def parse_redis_url(url: str) -> RedisTarget:
    """The deployment ``url`` names; ValueError (a phrase naming what is wrong, without the URL) otherwise."""
    scheme, sep, rest = url.partition("://")
    kind = SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        raise ValueError("must start with redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://")
    if kind == "single":
        parsed = urlsplit(url)
        try:
            parsed.port
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        database = parsed.path.strip("/")
        if scheme.lower() != "unix" and database and not database.isdigit():
            raise ValueError("must end in a database number like /0")
        return RedisTarget(url, "single", db=int(database) if database.isdigit() else 0)
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    credentials, _, location = rest.rpartition("@")
    hosts, _, path = location.partition("/")
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"needs host:port for every {'node' if kind == 'cluster' else 'sentinel'} "
                             f"(comma separated), got {item.strip()[:60]!r}")
        nodes.append((host, int(port)))
    parts = [unquote(p) for p in path.split("/") if p]
    service, db = None, 0
    if kind == "cluster":
        if parts and parts != ["0"]:
            raise ValueError("names a database, but a Redis Cluster has only database 0 "
                             "(redis+cluster://host:port[,host:port...])")
    else:
        if not parts:
            raise ValueError("needs the Sentinel service name: redis+sentinel://host:port[,host:port...]/service_name")
        service = parts[0]
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ValueError("must be redis+sentinel://host:port[,host:port...]/service_name[/db]")
        db = int(parts[1]) if len(parts) == 2 else 0
    user, _, password = credentials.partition(":")
    return RedisTarget(url, kind, tuple(nodes), service, db, unquote(user) or None, unquote(password) or None)


def parse_cluster_nodes(reply: Any) -> list[tuple[str, int]]:
    """The healthy nodes of a ``CLUSTER NODES`` reply (raw text, or redis-py's parsed dict), masters and replicas."""
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    if isinstance(reply, dict):  # redis-py's parse: "host:port" -> {"flags": ..., ...}
        entries = [(address, str(info.get("flags", ""))) for address, info in reply.items()]
    else:
        entries = [(parts[1], parts[2]) for parts in (line.split() for line in str(reply).splitlines()) if len(parts) > 2]
    healthy = []
    for address, flags in entries:
        if UNHEALTHY_FLAGS & set(flags.split(",")):
            continue
        host, _, port = address.split("@", 1)[0].split(",", 1)[0].rpartition(":")
        if host and port.isdigit() and int(port) > 0:
            healthy.append((host.strip("[]"), int(port)))
    return healthy


class ClusterNodes:
    """The nodes of a Redis Cluster this process may connect to, in the order to try them.

    Starts from the URL's seeds at a random one (processes spread over the cluster);
    ``learned`` adds the nodes a connected node lists. The node used last comes first
    (a brief disconnect returns to it), then the others in turn.
    """

    def __init__(self, seeds: tuple[tuple[str, int], ...], rng: random.Random | None = None) -> None:
        self.known: list[tuple[str, int]] = list(dict.fromkeys(seeds))
        self._start = (rng or random).randrange(len(self.known)) if self.known else 0

    def order(self) -> list[tuple[str, int]]:
        start = self._start % len(self.known)
        return self.known[start:] + self.known[:start]

    def used(self, node: tuple[str, int]) -> None:
        self._start = self.known.index(node)

    def learned(self, nodes: list[tuple[str, int]]) -> None:
        for node in nodes:
            if node not in self.known:
                self.known.append(node)


async def connect_node(target: RedisTarget, nodes: ClusterNodes | None = None, **options: Any):
    """A redis.asyncio client of one server to subscribe or publish on, and what else to close with it.

    single: the URL's server. sentinel: the master the Sentinels name now.
    cluster: the first node of ``nodes`` that answers (``CLUSTER NODES`` then teaches
    ``nodes`` the rest). Raises ConnectionError when none answers (a cluster's, at once;
    the others' at the first command).
    """
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel
    from redis.exceptions import RedisError

    if target.kind == "single":
        return aioredis.Redis.from_url(target.url, **options), []
    if target.kind == "sentinel":
        timeouts = {k: options[k] for k in ("socket_connect_timeout", "socket_timeout") if k in options}
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs=timeouts)
        client = sentinel.master_for(target.service, redis_class=aioredis.Redis, db=target.db,
                                     **target.credentials(), **options)
        return client, list(sentinel.sentinels)
    nodes = nodes or ClusterNodes(target.nodes)
    failures = []
    for host, port in nodes.order():
        client = aioredis.Redis(host=host, port=port, **target.credentials(), **options)
        try:
            nodes.learned(parse_cluster_nodes(await client.execute_command("CLUSTER", "NODES")))
        except (RedisError, OSError) as exc:
            failures.append(f"{host}:{port} ({type(exc).__name__})")
            await client.aclose()
            continue
        nodes.used((host, port))
        return client, []
    raise ConnectionError(f"no node of the Redis Cluster answered: {', '.join(failures)[:300]}")


def sync_client(url: str, *, timeout_s: float):
    """A blocking redis-py client for counters and pings (``RedisCluster`` for a cluster).

    A cluster client learns the slots at construction: it raises when no seed answers.
    """
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    target = parse_redis_url(url)
    timeouts = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
    if target.kind == "single":
        return redis.Redis.from_url(url, **timeouts)
    if target.kind == "cluster":
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], **target.credentials(),
                            **timeouts)
    return Sentinel(list(target.nodes), sentinel_kwargs=timeouts).master_for(
        target.service, db=target.db, **target.credentials(), **timeouts)


__all__ = ["BUS_NAMES", "ClusterNodes", "RedisTarget", "connect_node", "parse_cluster_nodes", "parse_redis_url",
           "sync_client"]
