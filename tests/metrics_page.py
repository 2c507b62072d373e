"""Reading a service's /metrics page in tests."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Series = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Series:
    """Each sample name of the page at 127.0.0.1:`port`, with its samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, []).append((sample.labels, sample.value))
    return series


def total(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    """The sum of the samples carrying all of `labels`."""
    return sum(v for got, v in samples if all(got.get(k) == want for k, want in labels.items()))
