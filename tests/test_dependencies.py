"""Dependencies are honest: pyproject.toml declares what the code imports, environment.yml says the same.

Runtime dependencies are exactly what product code (data/, components/, dashboard_app/)
imports; what only the tests, bench/ or the notebook import lives in their extra.
"""
from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("data", "components", "dashboard_app")
#: Runtime dependencies no code imports, and why they are there.
NOT_IMPORTED = {"tzdata": "zoneinfo's time zone database where the system has none"}
#: conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"redis-py": "redis", "brotli-python": "brotli"}


def normalised(requirement: str) -> str:
    """``psycopg[binary]>=3.1`` -> ``psycopg``; ``Argon2_CFFI`` -> ``argon2-cffi`` (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_groups() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"runtime": {normalised(r) for r in project["dependencies"]}}
    groups.update({extra: {normalised(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()})
    return groups


def environment_groups() -> dict[str, set[str]]:
    """environment.yml's packages under each ``# [group]`` comment (python and pip left out)."""
    groups: dict[str, set[str]] = {}
    current = None
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    for line in text[text.index("\ndependencies:\n"):].splitlines():
        if marker := re.match(r"\s*# \[(\w+)\]", line):
            current = groups.setdefault(marker.group(1), set())
        elif item := re.match(r"\s*- ([A-Za-z0-9._-]+)", line):
            name = normalised(item.group(1))
            if name not in ("python", "pip"):
                assert current is not None, f"environment.yml lists {name} before any # [group] comment"
                current.add(CONDA_TO_PYPI.get(name, name))
    return groups


def imported_names(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports(*folders: str) -> set[str]:
    """Names imported by the .py files under ``folders`` that are neither stdlib nor this repository's."""
    local = {"data", "components", "dashboard_app", "tests", "bench"}
    names: set[str] = set()
    for folder in folders:
        files = list((ROOT / folder).rglob("*.py"))
        local.update(path.stem for path in files)  # bench/ scripts import each other by file name
        for path in files:
            names |= imported_names(path.read_text(encoding="utf-8"))
    return {name for name in names - local if name not in sys.stdlib_module_names}


def notebook_imports() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "examples").glob("*.ipynb"):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                code = "".join(line for line in cell["source"] if not line.lstrip().startswith(("%", "!")))
                names |= imported_names(code)
    return {name for name in names - set(PRODUCT) if name not in sys.stdlib_module_names}


def distributions_of(names: set[str]) -> dict[str, set[str]]:
    """Import name -> the installed distributions that provide it (normalised).

    An import nothing installed provides (an extra ``make test`` does not install, such as
    ``bench``'s xlsxwriter on a fresh clone) is taken to be its own distribution's name.
    """
    provided = packages_distributions()
    return {name: {normalised(d) for d in provided.get(name, [name])} for name in names}


def uncovered(names: set[str], allowed: set[str]) -> dict[str, set[str]]:
    """The imports no distribution in ``allowed`` provides (with what does provide them, if anything)."""
    return {name: dists for name, dists in distributions_of(names).items() if not dists & allowed}


def test_every_import_of_product_code_is_a_runtime_dependency():
    assert uncovered(third_party_imports(*PRODUCT), pyproject_groups()["runtime"]) == {}


def test_every_runtime_dependency_is_imported_by_product_code():
    imported = set().union(*distributions_of(third_party_imports(*PRODUCT)).values())
    assert pyproject_groups()["runtime"] - imported == set(NOT_IMPORTED)


def test_tests_bench_and_notebook_imports_are_in_their_extras():
    groups = pyproject_groups()
    runtime = groups["runtime"]
    assert uncovered(third_party_imports("tests"), runtime | groups["test"]) == {}
    assert uncovered(third_party_imports("bench"), runtime | groups["bench"]) == {}
    assert uncovered(notebook_imports(), runtime | groups["notebook"]) == {}
    assert uncovered(notebook_imports(), runtime | groups["test"]) == {}  # tests/test_notebook.py executes it


def test_no_extra_repeats_a_runtime_dependency():
    groups = pyproject_groups()
    for extra, names in groups.items():
        if extra != "runtime":
            assert not names & groups["runtime"], extra


def test_environment_yml_lists_the_same_packages_in_the_same_groups():
    """Each group of environment.yml holds its pyproject group's packages not listed in a group above it."""
    ours, theirs = pyproject_groups(), environment_groups()
    assert list(theirs) == list(ours)
    listed: set[str] = set()
    for group, names in ours.items():
        assert theirs[group] == names - listed, group
        listed |= names
