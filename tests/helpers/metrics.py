"""Reading a server's ``/metrics`` as Prometheus does (prometheus_client's own parser)."""
from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from .servers import TEST_METRICS_TOKEN

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_response(base_url: str, token: str | None = TEST_METRICS_TOKEN, scheme: str = "Bearer") -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return requests.get(f"{base_url}/metrics", headers=headers, timeout=30)


def parse(text: str) -> tuple[Figures, set[str]]:
    """(sample (name, labels without ``process``) -> value, the ``process`` labels seen)."""
    figures: Figures = {}
    processes: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            processes.add(labels.pop("process", ""))
            figures[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return figures, processes


def scrape(base_url: str) -> Figures:
    response = metrics_response(base_url)
    assert response.status_code == 200, response.status_code
    assert response.headers["Content-Type"].startswith("text/plain; version="), response.headers
    figures, processes = parse(response.text)
    assert len(processes) == 1 and "" not in processes, f"every series names its one process: {processes}"
    return figures


def value(figures: Figures, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def total(figures: Figures, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in figures.items() if n == name and wanted <= set(ls))
