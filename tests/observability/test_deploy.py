"""The shipped Grafana dashboard and Prometheus alert rules: valid, and about metrics that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from prismq.queue import QueueClient, QueueDatabase, QueueWorker
from prismq.queue.observability import DEPLOY_DIR
from prismq.queue.observability.metrics import metrics_exposition, worker_metrics

DASHBOARD = DEPLOY_DIR / "grafana-dashboard.json"
ALERTS = DEPLOY_DIR / "prometheus-alerts.yml"
ALERT_TESTS = Path(__file__).with_name("prometheus-alerts.test.yml")
METRIC = re.compile(r"\bprismq_queue_[a-z_]+\b")


@pytest.fixture(scope="module")
def exposed_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name a real exposition can carry (SQLite, with worker metrics)."""
    with QueueDatabase(tmp_path_factory.mktemp("deploy") / "queue.db") as db:
        db.initialize_schema()
        QueueClient(db).enqueue("email", None)
        QueueWorker(db, worker_id="w1")
        worker_metrics()
        body = metrics_exposition(db)[0].decode()
    names = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else {name}
    return names


def _promtool() -> str | None:
    found = os.environ.get("PRISMQ_PROMTOOL") or shutil.which("promtool")
    if found is None and os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail("promtool is missing (CI=true): .ci/run installs it from Debian's prometheus package")
    return found


def test_dashboard_is_valid_grafana_json_using_existing_metrics(exposed_names: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "prismq-queue"
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "task_type"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']}"
            used |= names
    assert sorted(used - exposed_names) == []
    # Every metric the queue exposes is on the dashboard (the heartbeat age by worker too).
    wanted = {n for n in exposed_names if not n.endswith(("_created", "_count", "_sum"))}
    assert sorted(wanted - used) == []


def test_alert_rules_cover_the_runbook_with_existing_metrics(exposed_names: set[str]) -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"][0]["rules"]
    alerts = {rule["alert"]: rule for rule in rules}
    # The runbook's conditions: backlog age, dead tasks, stale workers, WAL size (and more).
    assert {
        "PrismQQueueBacklogAge",
        "PrismQQueueDeadTasks",
        "PrismQQueueStaleWorker",
        "PrismQQueueWalSize",
        "PrismQQueueExpiredLeases",
        "PrismQQueueDatabaseUnreadable",
    } == set(alerts)
    for rule in rules:
        names = set(METRIC.findall(rule["expr"]))
        assert names
        assert sorted(names - exposed_names) == []
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not installed (Debian: the prometheus package); CI installs it")
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
