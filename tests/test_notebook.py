"""examples/opsdash_dashboard.ipynb runs top to bottom in a real kernel, as a new user runs it.

From the repository root and from ``examples/`` (where ``jupyter execute`` runs it) the notebook
reads the demo database under the checkout's ``var/``; without one it says, in one sentence,
which command makes it. Checkouts here are temporary copies: the developer's ./var is never touched.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from dashboard_app.dashboard import Dashboard
from data import connect
from data.db import get_engine, migrate
from data.errors import ConfigError
from data.scope import scope_for_user
from data.seed import SeedResult, seed
from data.tickets import scoped_tickets

from .helpers.databases import scope_of, user_of
from .helpers.servers import ROOT

NOTEBOOK = ROOT / "examples" / "opsdash_dashboard.ipynb"
NOTEBOOK_USER = "manager.ethekwini"  # the notebook's default user: every demo seed has it
pytestmark = pytest.mark.slow


def kernel_environment(**values: str) -> dict[str, str]:
    """This environment without any OPSDASH_ setting (but the test-speed password hash), plus ``values``.

    The venv's bin/ goes first on PATH: the installed kernel spec starts ``python`` from PATH.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDASH_") or k == "OPSDASH_FAST_PASSWORD_HASH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **values}


def run_notebook(path: Path, cwd: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` with nbclient, its kernel working in ``cwd``."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(cwd)}})
    client.km = client.kernel_manager_class(kernel_name="python3")
    client.km.kernel_spec.argv[0] = sys.executable  # this interpreter: the venv the package is installed in
    client.execute(env=env)
    return nb


def jupyter_execute(checkout: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command a new user types, in ``examples/``: Jupyter runs the kernel in the notebook's folder."""
    command = [str(Path(sys.executable).parent / "jupyter"), "execute", "opsdash_dashboard.ipynb",
               "--output=executed", "--timeout=300"]
    return subprocess.run(command, cwd=checkout / "examples", env=env, capture_output=True, text=True, timeout=600)


def make_checkout(parent: Path) -> Path:
    """A folder laid out like a clone of the repository (pyproject.toml, examples/), with no database yet."""
    checkout = parent / "clone"
    (checkout / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    shutil.copy(NOTEBOOK, checkout / "examples" / NOTEBOOK.name)
    return checkout


def seed_demo_database(checkout: Path, random_seed: int) -> SeedResult:
    """What ``make serve`` leaves in a clone: ``var/opsdash.sqlite3``, migrated and seeded (smaller)."""
    engine = get_engine(f"sqlite:///{checkout / 'var' / 'opsdash.sqlite3'}")
    migrate(engine)
    return seed(engine, tickets=300, wards=3, municipalities=2, random_seed=random_seed)


def outputs_text(nb: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in nb.cells])


def error_outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


def assert_shows_the_dashboard(nb: nbformat.NotebookNode) -> None:
    dashboard_cell = next(c for c in nb.cells if c.cell_type == "code" and "Dashboard.for_user" in c.source)
    assert any("application/vnd.holoviews_exec.v0+json" in o.get("data", {}) or "text/html" in o.get("data", {})
               for o in dashboard_cell.outputs)


def assert_no_data_sentence(message: str, database: Path) -> None:
    """The one sentence for a missing or empty database: where it looked and the command to run."""
    assert message.startswith(f"No OpsDash data in {database}: run `make serve`"), message
    assert "opsdash init-db && opsdash seed" in message and "\n" not in message


@pytest.mark.parametrize("role", ["manager", "ward_councillor"])
def test_notebook_builds_the_dashboard_and_scoped_frames_for_a_demo_user(sqlite_url, role, random_seed):
    engine = get_engine(sqlite_url)
    result = seed(engine, tickets=300, wards=3, municipalities=2, random_seed=random_seed)
    user = user_of(result, role)
    nb = run_notebook(NOTEBOOK, ROOT, kernel_environment(OPSDASH_DATABASE_URL=sqlite_url,
                                                          OPSDASH_NOTEBOOK_USER=user["username"]))
    assert error_outputs(nb) == []
    assert_shows_the_dashboard(nb)
    text = outputs_text(nb)
    visible = scoped_tickets(engine, scope_of(engine, result, role))
    assert f"{len(visible):,} tickets visible to {user['username']}" in text
    other = scoped_tickets(engine, scope_of(engine, result, "manager", municipality=1))
    assert not any(t in text for t in other.tracking_number)  # the other municipality never shows


@pytest.mark.parametrize("where", ["repository root (nbclient)", "examples/ (jupyter execute)"])
def test_notebook_reads_the_demo_database_of_its_checkout_from_root_and_from_examples(tmp_path, where, random_seed):
    checkout = make_checkout(tmp_path)
    seed_demo_database(checkout, random_seed)
    visible = scoped_tickets(get_engine(f"sqlite:///{checkout / 'var' / 'opsdash.sqlite3'}"),
                             scope_for_user(get_engine(f"sqlite:///{checkout / 'var' / 'opsdash.sqlite3'}"), NOTEBOOK_USER))
    env = kernel_environment()
    if where.startswith("repository root"):
        nb = run_notebook(checkout / "examples" / NOTEBOOK.name, checkout, env)
    else:
        finished = jupyter_execute(checkout, env)
        assert finished.returncode == 0, finished.stderr[-3000:]
        nb = nbformat.read(checkout / "examples" / "executed.ipynb", as_version=4)
    assert error_outputs(nb) == []
    assert_shows_the_dashboard(nb)
    assert f"{len(visible):,} tickets visible to {NOTEBOOK_USER}" in outputs_text(nb)
    assert not (checkout / "examples" / "var").exists()  # no second, empty database beside the notebook


def test_jupyter_execute_without_a_database_says_which_command_to_run(tmp_path):
    checkout = make_checkout(tmp_path)
    finished = jupyter_execute(checkout, kernel_environment())
    assert finished.returncode != 0
    assert "OperationalError" not in finished.stderr and "no such table" not in finished.stderr
    assert f"No OpsDash data in {checkout / 'var' / 'opsdash.sqlite3'}: run `make serve`" in finished.stderr
    assert not (checkout / "var").exists() and not (checkout / "examples" / "var").exists()  # nothing made


def test_missing_or_empty_database_gives_one_sentence_from_connect_scope_and_dashboard(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path)
    database = checkout / "var" / "opsdash.sqlite3"
    monkeypatch.chdir(checkout / "examples")
    monkeypatch.delenv("OPSDASH_DATABASE_URL", raising=False)

    with pytest.raises(ConfigError) as missing:
        connect()
    assert_no_data_sentence(str(missing.value), database)
    assert not database.exists() and not (checkout / "examples" / "var").exists()

    engine = get_engine(f"sqlite:///{database}")  # an engine made by hand: SQLite creates an empty file
    for state in ("empty file", "schema without data"):
        if state == "schema without data":
            migrate(engine)
        for attempt in (lambda: connect(), lambda: scope_for_user(engine, NOTEBOOK_USER),
                        lambda: Dashboard.for_user(engine, NOTEBOOK_USER)):
            with pytest.raises(ConfigError) as empty:
                attempt()
            assert_no_data_sentence(str(empty.value), database)
