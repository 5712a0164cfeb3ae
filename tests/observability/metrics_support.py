"""Helpers for the metrics tests: read the Prometheus text format back into values."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Sample values keyed by metric name and sorted labels."""


def parse(body: bytes | str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    text = body.decode() if isinstance(body, bytes) else body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; KeyError names what is missing."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        raise KeyError(f"no sample {name}{labels}; have {sorted(k for k in samples if k[0] == name)}")
    return samples[key]


def scrape(url: str) -> Samples:
    """GET a /metrics URL and parse it."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read())
