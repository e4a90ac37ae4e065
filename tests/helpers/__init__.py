"""Importable test helpers (never fixtures; those are in tests/conftest.py, which imports from here).

- ``services``: where PostgreSQL, Redis and Chromium are; skip locally, fail under CI when absent.
- ``databases``: empty PostgreSQL databases, tickets inserted around the gate, a seeded role's user and Scope.
- ``seeds``: the random seed of a test, shown on failure and replayed with ``OPSDASH_TEST_SEED``.
- ``servers``: the ``opsdash`` command line and served ``opsdash serve`` processes.
- ``browser``: signing in and reading dashboard pages through Playwright.
- ``web``: the web layer without a browser (the real form, Bokeh tokens, the websocket).
- ``dashboard``: hostile tickets and reading rendered Panel views.
- ``live``: buses, hubs and a Panel server with live sessions in this process.
- ``export``: reading exported files back, and the export oracle.
- ``db_roles``: a database owned by an app role, and the database-role (row-level security) helpers.
- ``sensitivity``: the sensitivity rule restated independently of data.sensitivity.
- ``pg_cluster``: a private PostgreSQL cluster (initdb, loopback port) to stop, restart or copy (``replica_of``).
- ``redis_server``: a private redis-server on a loopback port, started when the test says.
- ``faults``: the fault suite's tools: table locks, streamed exports in flight, a page's banner and notices.
"""
