"""The live bus past one Redis: a Redis Cluster and Sentinel, each started by the test on loopback ports.

What must hold (issue 19, docs/deployment.md "From one host to a metro"):
- a plain ``PUBLISH dashboard:{municipality}`` (the ticketing system's) on ANY node of a cluster
  reaches the sessions of every process, each process keeping ONE subscriber connection;
- when the node a hub is subscribed at dies, the hub moves to another node, marks its
  sessions for resync, and events published afterwards reach them;
- with Sentinel, the hub follows the master Sentinel promotes;
- sign-in throttling counts in the same Redis, whatever its kind.
Each test starts its own servers (redis-server, redis-cli) and kills them at the end.
"""
from __future__ import annotations

import asyncio
import json
import random
import re

import pytest

from dashboard_app.throttle import LoginThrottle
from data.bus import RedisBus
from data.errors import ConfigError
from data.events import BusUnavailable, channel_for
from data.redis_nodes import ClusterNodes, parse_cluster_nodes, parse_redis_url, sync_client
from data.scope import Scope

from .helpers.live import fresh_municipality, run, started_hub, ticketing_message, until
from .helpers.redis_servers import redis_cluster, redis_sentinel



def manager(muni) -> Scope:
    return Scope(municipality_id=muni, role="manager", username="m")


def publish_on(node, muni, tracking: str) -> int:
    """The ticketing system's plain PUBLISH on one node (its own connection); the receivers that node counted."""
    client = node.client()
    try:
        return int(client.publish(channel_for(muni), json.dumps(ticketing_message("ticket_created", "W1", tracking))))
    finally:
        client.close()


def numbers(feed) -> list[str]:
    return [e.tracking_number for e in feed.drain().events]


# ------------------------------------------------------------------ the URL (no servers)

def test_cluster_and_sentinel_urls_parse_and_bad_ones_say_what_is_wrong():
    cluster = parse_redis_url("redis+cluster://:s%40cret@10.0.0.1:7000,10.0.0.2:7001")
    assert (cluster.kind, cluster.nodes, cluster.password, cluster.bus_name) == (
        "cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001)), "s@cret", "redis-cluster")
    assert "s@cret" not in repr(cluster) and "cret" not in repr(cluster)
    sentinel = parse_redis_url("redis+sentinel://s1:26379,s2:26379/opsdash/2")
    assert (sentinel.kind, sentinel.nodes, sentinel.service, sentinel.db) == (
        "sentinel", (("s1", 26379), ("s2", 26379)), "opsdash", 2)
    for bad, says in [("redis+cluster://h", "host:port"), ("redis+cluster://h:1/3", "only database 0"),
                      ("redis+sentinel://h:1", "service name"), ("redis+sentinel://h:1/s/x", "service_name[/db]"),
                      ("redis+cluster://h:99999", "host:port"), ("memcached://h:1", "must start with")]:
        with pytest.raises(ValueError, match=re.escape(says)):
            parse_redis_url(bad)


def test_settings_accept_cluster_and_sentinel_urls_and_name_the_variable_when_wrong(settings_from):
    assert settings_from(OPSDASH_REDIS_URL="redis+cluster://127.0.0.1:7000,127.0.0.1:7001").redis_url
    assert settings_from(OPSDASH_REDIS_URL="redis+sentinel://127.0.0.1:26379/opsdash").redis_url
    with pytest.raises(ConfigError, match="OPSDASH_REDIS_URL needs the Sentinel service name") as raised:
        settings_from(OPSDASH_REDIS_URL="redis+sentinel://:hunter2-secret@127.0.0.1:26379")
    assert "hunter2" not in str(raised.value)


def test_cluster_nodes_start_anywhere_learn_the_healthy_ones_and_retry_the_last_used_first():
    seeds = (("a", 1), ("b", 2), ("c", 3))
    starts = {ClusterNodes(seeds, random.Random(seed)).order()[0] for seed in range(30)}
    assert starts == set(seeds)  # processes spread over the nodes
    nodes = ClusterNodes(seeds[:1])
    nodes.learned(parse_cluster_nodes(
        "id1 10.0.0.9:7009@17009 slave id2 0 1 1 connected\n"
        "id2 a:1@10001 myself,master - 0 0 1 connected 0-5460\n"
        "id3 10.0.0.8:7008@17008 master,fail - 0 0 1 disconnected\n"
        "id4 10.0.0.7:7007@17007,host7 master - 0 0 1 connected 5461-10922\n"))
    assert nodes.known == [("a", 1), ("10.0.0.9", 7009), ("10.0.0.7", 7007)]
    nodes.used(("10.0.0.7", 7007))
    assert nodes.order() == [("10.0.0.7", 7007), ("a", 1), ("10.0.0.9", 7009)]


# ------------------------------------------------------------------ Redis Cluster

@pytest.mark.redis
@pytest.mark.slow
def test_a_publish_on_any_cluster_node_reaches_every_process_and_each_keeps_one_subscriber(tmp_path):
    muni = fresh_municipality()
    with redis_cluster(tmp_path) as cluster:
        async def scenario():
            buses = [RedisBus(cluster.url, client_name=f"opsdash-hub-scale-{i}") for i in range(3)]
            async with started_hub(buses[0]) as one, started_hub(buses[1]) as two, started_hub(buses[2]) as three:
                feeds = [hub.register(manager(muni)) for hub in (one, two, three)]
                sent = []
                for i, node in enumerate(cluster.nodes):  # masters and replicas alike
                    sent.append(f"N{i}")
                    publish_on(node, muni, sent[-1])
                for feed in feeds:
                    await until(lambda feed=feed: len(feed) == len(sent), what="every node's event at every hub")
                    assert sorted(numbers(feed)) == sorted(sent)  # none lost, none twice (nodes' links: any order)
                per_node = cluster.pubsub_clients("opsdash-hub-scale-")
                assert sum(per_node.values()) == 3, per_node  # one subscriber connection per process
                assert {hub.snapshot()["node"] for hub in (one, two, three)} <= {n.address for n in cluster.nodes}
                # Our own publisher (opsdash publish, the simulator) on the cluster too.
                await buses[0].publish(channel_for(muni), json.dumps(ticketing_message("ticket_created", "W1", "bus")))
                for feed in feeds:
                    await until(lambda feed=feed: len(feed) == 1, what="the bus's own publish")
        run(scenario())


@pytest.mark.redis
@pytest.mark.slow
def test_when_the_hubs_cluster_node_dies_it_moves_to_another_resyncs_and_gets_later_events(tmp_path):
    muni = fresh_municipality()
    with redis_cluster(tmp_path) as cluster:
        first = cluster.nodes[0]  # a master (redis-cli makes the first nodes masters)
        assert cluster.role(first) == "master"
        # The URL names that master alone: the hub starts there and learns the others from it.
        bus = RedisBus(f"redis+cluster://{first.address}", client_name="opsdash-hub-failover")

        async def scenario():
            async with started_hub(bus) as hub:
                feed = hub.register(manager(muni))
                assert hub.snapshot()["node"] == first.address
                publish_on(cluster.nodes[1], muni, "before")
                await until(lambda: len(feed) == 1, what="the event before the failure")
                assert numbers(feed) == ["before"]
                first.stop()  # the node the hub is connected to dies
                await until(lambda: hub.counters["disconnects"] >= 1, what="the hub to notice", timeout=15)
                await until(lambda: hub.status == "live" and hub.snapshot()["node"] not in ("", first.address),
                            what="the hub live on another node", timeout=20)
                assert feed.drain().resync  # events may have been missed: the session reloads from the database
                # The failed master's replica is promoted (the cluster's own failover) and the cluster is whole.
                cluster.wait_masters(3, timeout=30)
                cluster.wait_ok(timeout=30)
                for node in cluster.live_nodes():
                    publish_on(node, muni, f"after-{node.port}")
                expected = [f"after-{n.port}" for n in cluster.live_nodes()]
                await until(lambda: len(feed) == len(expected), what="every event published after the failover")
                assert sorted(numbers(feed)) == sorted(expected)
                assert sum(cluster.pubsub_clients("opsdash-hub-failover").values()) == 1  # still exactly one
        run(scenario())


@pytest.mark.redis
@pytest.mark.slow
def test_sign_in_throttle_counts_in_the_cluster_across_processes(tmp_path):
    with redis_cluster(tmp_path) as cluster:
        one, two = LoginThrottle(3, 60, cluster.url), LoginThrottle(3, 60, cluster.url)
        assert [one.reserve("thandi", "10.0.0.1"), two.reserve("thandi", "10.0.0.1"),
                one.reserve("thandi", "10.0.0.1"), two.reserve("thandi", "10.0.0.1")] == [True, True, True, False]
        client = sync_client(cluster.url, timeout_s=2)
        try:
            assert client.ping()
        finally:
            client.close()


# ------------------------------------------------------------------ Sentinel

@pytest.mark.redis
@pytest.mark.slow
def test_with_sentinel_the_hub_follows_the_promoted_master(tmp_path):
    muni = fresh_municipality()
    with redis_sentinel(tmp_path) as setup:
        bus = RedisBus(setup.url, client_name="opsdash-hub-sentinel")
        publisher = RedisBus(setup.url, client_name="opsdash-publisher-sentinel")

        async def scenario():
            async with started_hub(bus) as hub:
                feed = hub.register(manager(muni))
                assert hub.snapshot()["node"] == setup.master.address and hub.snapshot()["bus"] == "redis-sentinel"
                await publisher.publish(channel_for(muni), json.dumps(ticketing_message("ticket_created", "W1", "before")))
                await until(lambda: len(feed) == 1, what="the event before the failover")
                assert numbers(feed) == ["before"]
                setup.master.stop()
                await until(lambda: hub.counters["disconnects"] >= 1, what="the hub to notice", timeout=15)
                await until(lambda: setup.master_address() == setup.replica.address,
                            what="Sentinel to promote the replica", timeout=30)
                await until(lambda: hub.status == "live" and hub.snapshot()["node"] == setup.replica.address,
                            what="the hub live on the new master", timeout=30)
                assert feed.drain().resync
                for _ in range(40):  # the publisher follows too: its old connection was to the dead master
                    try:
                        await publisher.publish(channel_for(muni), json.dumps(
                            ticketing_message("ticket_created", "W1", "after")))
                        break
                    except BusUnavailable:
                        await asyncio.sleep(0.25)
                await until(lambda: len(feed) == 1, what="the event after the failover")
                assert numbers(feed) == ["after"]
            await publisher.close()

        run(scenario())
        throttle = LoginThrottle(2, 60, setup.url)
        assert [throttle.reserve("sipho", "10.0.0.2") for _ in range(3)] == [True, True, False]
