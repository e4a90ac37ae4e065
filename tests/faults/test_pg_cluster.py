"""The private PostgreSQL cluster helper itself (tests/helpers/pg_cluster.py): what the fault suite and the
replica tests stand on. A restart keeps the data on the same port; a replica streams the primary's writes."""
from __future__ import annotations

import pytest

from ..helpers.live import wait_until
from ..helpers.pg_cluster import pg_cluster, replica_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_private_cluster_restarts_on_its_port_with_its_data_and_streams_to_a_replica():
    """Lost: nothing. Checked: a committed row survives the restart, and every row written on the
    primary (before and after the replica was made) is read on the replica."""
    with pg_cluster() as primary:
        assert primary.port != 5432
        primary.execute("CREATE TABLE marks (n int)")
        primary.execute("INSERT INTO marks VALUES (1)")
        primary.stop()
        assert not primary.answers()
        primary.start()
        assert primary.execute("SELECT n FROM marks") == [(1,)]
        with replica_of(primary) as replica:
            assert replica.port != primary.port
            assert replica.execute("SELECT pg_is_in_recovery()") == [(True,)]
            primary.execute("INSERT INTO marks VALUES (2)")
            wait_until(lambda: replica.execute("SELECT n FROM marks ORDER BY n") == [(1,), (2,)], timeout=20,
                       what="the primary's write on the replica")
