"""Observability: Prometheus metrics and OpenTelemetry traces.

Each part needs an extra, and nothing here is imported by the core:

- :mod:`prismq.queue.observability.metrics` (``pip install "prismq-queue[metrics]"``):
  queue-wide gauges read from the database at scrape time, and per-process worker
  counters and histograms; served by ``prismq-queue worker --metrics-port``.
- :mod:`prismq.queue.observability.tracing` (``pip install "prismq-queue[otel]"``):
  a span for each enqueue and each execution, the trace context carried in the task.

The Grafana dashboard and the Prometheus alert rules are shipped in the ``deploy``
folder beside this module (:data:`DEPLOY_DIR`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEPLOY_DIR"]

DEPLOY_DIR = Path(__file__).resolve().parent / "deploy"
"""The folder holding ``grafana-dashboard.json`` and ``prometheus-alerts.yml``."""
