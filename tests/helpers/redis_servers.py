"""Private Redis deployments on loopback ports, started and removed by a test: a Redis Cluster, a Sentinel setup.

Each server is a child ``redis-server`` process writing only under the given folder, without
persistence; ``stop`` ends it (SIGKILL, as a crash would) and the context managers end every
one they started, whatever happens in the test.
"""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import redis

from .servers import free_port
from .services import service_missing

#: Failure detection for the tests: a node or master silent this long is failed over.
NODE_TIMEOUT_MS = 1000


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise AssertionError("no free pair of ports (port, port + 10000) for a Redis Cluster node")


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        service_missing("redis-server is not installed (apt-get install -y redis-server)")
    return path


def redis_cli_binary() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        service_missing("redis-cli is not installed (apt-get install -y redis-tools)")
    return path


@dataclass
class RedisProcess:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2, socket_timeout=5, **kwargs)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill it as a crash would (no shutdown, no goodbye to clients)."""
        if self.alive:
            self.process.kill()
        self.process.wait(timeout=10)


def _wait(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


def start_redis(folder: Path, *args: str, port: int | None = None, config: str | None = None) -> RedisProcess:
    """One ``redis-server`` on 127.0.0.1 (``config``: a file's text, for a Sentinel), answering PING."""
    binary = redis_server_binary()
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"redis-{port}.log"
    command = [binary]
    if config is not None:
        conf = folder / f"redis-{port}.conf"
        conf.write_text(config, encoding="utf-8")
        command.append(str(conf))
    command += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "no",
                "--logfile", str(log), *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisProcess(port, process, log)
    try:
        _wait(lambda: server.client().ping(), 15, f"redis-server on port {port} (log {log})")
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class RedisCluster:
    nodes: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def live_nodes(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.alive]

    def node_at(self, address: str) -> RedisProcess:
        return next(n for n in self.nodes if n.address == address)

    def role(self, node: RedisProcess) -> str:
        return node.client().execute_command("ROLE")[0].decode()

    def wait_ok(self, timeout: float = 30) -> None:
        """Every live node says cluster_state:ok and sees its own slots covered."""
        def ok() -> bool:
            return all(b"cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO") for n in self.live_nodes())
        _wait(ok, timeout, "the Redis Cluster to report cluster_state:ok on every live node", interval=0.2)

    def wait_masters(self, count: int, timeout: float = 30) -> None:
        """Until ``count`` live nodes are masters (a replica promoted in place of a dead master)."""
        _wait(lambda: sum(self.role(n) == "master" for n in self.live_nodes()) == count, timeout,
              f"{count} live masters", interval=0.2)

    def pubsub_clients(self, name_prefix: str) -> dict[str, int]:
        """Pub/Sub connections per node (``host:port``) whose client name starts with ``name_prefix``."""
        counts = {}
        for node in self.live_nodes():
            clients = node.client().client_list(_type="pubsub")
            counts[node.address] = sum(1 for c in clients if c.get("name", "").startswith(name_prefix))
        return counts


@contextlib.contextmanager
def redis_cluster(folder: Path, *, masters: int = 3, replicas: int = 1) -> Iterator[RedisCluster]:
    """``masters`` masters with ``replicas`` replicas each, created by ``redis-cli --cluster create``."""
    cli = redis_cli_binary()
    cluster = RedisCluster()
    try:
        for _ in range(masters * (1 + replicas)):
            port = cluster_port()
            cluster.nodes.append(start_redis(
                folder / str(port), "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--repl-diskless-sync-delay", "0", port=port))
        created = subprocess.run([cli, "--cluster", "create", *(n.address for n in cluster.nodes),
                                  "--cluster-replicas", str(replicas), "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
        cluster.wait_ok()
        # A replica can take over only once it holds its master's data: wait for every first sync.
        _wait(lambda: all(n.client().info("replication").get("master_link_status") == "up"
                          for n in cluster.nodes if cluster.role(n) == "slave"), 30, "every replica in sync")
        yield cluster
    finally:
        for node in cluster.nodes:
            node.stop()


@dataclass
class SentinelSetup:
    master: RedisProcess
    replica: RedisProcess
    sentinel: RedisProcess
    service: str = "opsdash"

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.sentinel.address}/{self.service}"

    def master_address(self) -> str:
        host, port = self.sentinel.client().execute_command("SENTINEL", "get-master-addr-by-name", self.service)
        return f"{host.decode()}:{port.decode()}"

    def replicas_known(self) -> int:
        return len(self.sentinel.client().execute_command("SENTINEL", "replicas", self.service))


@contextlib.contextmanager
def redis_sentinel(folder: Path, service: str = "opsdash") -> Iterator[SentinelSetup]:
    """One master, one replica of it, one Sentinel watching them (quorum 1, 1 s to declare the master down)."""
    started: list[RedisProcess] = []
    try:
        master = start_redis(folder / "master", "--repl-diskless-sync-delay", "0")
        started.append(master)
        replica = start_redis(folder / "replica", "--replicaof", "127.0.0.1", str(master.port),
                              "--repl-diskless-sync-delay", "0")
        started.append(replica)
        _wait(lambda: replica.client().info("replication").get("master_link_status") == "up", 20,
              "the replica to sync with its master")
        port = free_port()
        sentinel = start_redis(folder / "sentinel", "--sentinel", port=port, config=(
            f"sentinel monitor {service} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {service} {NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {service} 10000\n"
            f"sentinel parallel-syncs {service} 1\n"))
        started.append(sentinel)
        setup = SentinelSetup(master, replica, sentinel, service)
        # Sentinel learns the replica from the master's INFO (every 10 s at first): a failover needs it.
        _wait(lambda: setup.replicas_known() >= 1, 30, "Sentinel to discover the replica", interval=0.25)
        yield setup
    finally:
        for server in started:
            server.stop()
