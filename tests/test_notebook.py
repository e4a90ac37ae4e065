"""examples/opsdash_dashboard.ipynb runs top to bottom in a real kernel, for a manager and a councillor."""
from __future__ import annotations

import json
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from data.db import get_engine
from data.seed import seed
from data.tickets import scoped_tickets

from .helpers.databases import scope_of, user_of
from .helpers.servers import ROOT

NOTEBOOK = ROOT / "examples" / "opsdash_dashboard.ipynb"
pytestmark = pytest.mark.slow


def run_notebook(database_url: str, username: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(ROOT)}})
    client.km = client.kernel_manager_class(kernel_name="python3")
    # The spec says "python" (found on PATH); run this interpreter, the venv the package is installed in.
    client.km.kernel_spec.argv[0] = sys.executable
    client.execute(env={**os.environ, "OPSDASH_DATABASE_URL": database_url, "OPSDASH_NOTEBOOK_USER": username})
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in nb.cells])


@pytest.mark.parametrize("role", ["manager", "ward_councillor"])
def test_notebook_builds_the_dashboard_and_scoped_frames_for_a_demo_user(sqlite_url, role, random_seed):
    engine = get_engine(sqlite_url)
    result = seed(engine, tickets=300, wards=3, municipalities=2, random_seed=random_seed)
    user = user_of(result, role)
    nb = run_notebook(sqlite_url, user["username"])
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    dashboard_cell = nb.cells[3]
    assert any("application/vnd.holoviews_exec.v0+json" in o.get("data", {}) or "text/html" in o.get("data", {})
               for o in dashboard_cell.outputs)
    text = outputs_text(nb)
    visible = scoped_tickets(engine, scope_of(engine, result, role))
    assert f"{len(visible):,} tickets visible to {user['username']}" in text
    other = scoped_tickets(engine, scope_of(engine, result, "manager", municipality=1))
    assert not any(t in text for t in other.tracking_number)  # the other municipality never shows
