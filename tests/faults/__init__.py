"""The fault suite (issue 19): real services stopped, slowed, restarted and signalled under real pages.

Each test says in its docstring what it checked was not lost. The machine's shared PostgreSQL
and Redis are never restarted here: a test that takes a service away starts a private one on a
loopback port (``tests/helpers/pg_cluster.py``, ``tests/helpers/redis_server.py``).
"""
