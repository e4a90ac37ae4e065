"""The seeds of random tests: picked per test (or per module), shown when the test fails, replayable.

``OPSDASH_TEST_SEED=N`` makes every seed N, so a failed test's data can be made again:
``OPSDASH_TEST_SEED=N pytest 'tests/test_x.py::test_y'``. Hypothesis tests need none of this:
Hypothesis prints the falsifying example itself (and, under CI=true, its "ci" profile is
derandomized and prints an ``@reproduce_failure`` blob).
"""
from __future__ import annotations

import os
import random

import pytest

SEED_VARIABLE = "OPSDASH_TEST_SEED"
_SEEDS = pytest.StashKey[dict[str, int]]()


def pick_seed(node: pytest.Item | pytest.Collector, name: str) -> int:
    """A seed for ``node`` (a test, or the module a module-scoped fixture belongs to), remembered on it."""
    given = os.environ.get(SEED_VARIABLE, "").strip()
    value = int(given) if given else random.randrange(10**6)
    node.stash.setdefault(_SEEDS, {})[name] = value
    return value


def seeds_of(item: pytest.Item) -> dict[str, int]:
    """Every seed the test used: its own and those of the module-scoped fixtures it depends on."""
    used = set(getattr(item, "fixturenames", ()))
    found: dict[str, int] = {}
    for node in item.listchain():
        found.update((name, value) for name, value in node.stash.get(_SEEDS, {}).items()
                     if node is item or name in used)
    return found


def replay_hint(item: pytest.Item, seeds: dict[str, int]) -> str:
    lines = [f"{name} = {value}" for name, value in seeds.items()]
    for value in sorted(set(seeds.values())):
        lines.append(f"replay: {SEED_VARIABLE}={value} pytest '{item.nodeid}'")
    return "\n".join(lines)
