"""docs/alerts.yml, the Prometheus rules operators load: valid (promtool check rules), each alert
fires when it should (promtool test rules, tests/data/alerts_test.yml), and every metric a rule
names is one that mailgate's /metrics exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "data" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(RULES.read_text("utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported(text: str) -> set[str]:
    """Every metric name an exposition holds: its samples, and the names its TYPE lines
    declare (a counter or histogram with no sample yet still names its series)."""
    names = {
        line.split("{")[0].split()[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        names.update(name.removesuffix("_total") + s for s in SUFFIXES.get(kind, ()))
    return names


def test_the_alerts_operators_need_are_there() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    needed = {
        "MailgateRedisDown": "mailgate_redis_up",
        "MailgateDeliveryStalled": "mailgate_delivery_stalled",
        "MailgateFailedRateRising": 'mailgate_emails_total{outcome="failed"}',
        "MailgateQueueDeep": "mailgate_queue_depth",
    }
    for alert, metric in needed.items():
        assert metric in by_name[alert]["expr"]
    for rule in by_name.values():
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_metric_a_rule_names_is_exported(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    names = exported(response.get_data(as_text=True))
    assert "mailgate_redis_up" in names  # the scrape reached Redis
    named = {m for rule in rules() for m in re.findall(r"\bmailgate_[a-z_]+", rule["expr"])}
    assert len(named) >= 5
    assert named <= names, f"not in /metrics: {sorted(named - names)}"


def test_the_exposition_names_are_read_whole() -> None:
    text = (
        "# HELP mailgate_emails_total x\n# TYPE mailgate_emails_total counter\n"
        "# TYPE mailgate_delivery_seconds histogram\nmailgate_redis_up 1.0\n"
        'mailgate_delivery_seconds_bucket{le="0.1"} 0.0\n'
    )
    assert exported(text) == {
        "mailgate_emails_total",
        "mailgate_redis_up",
        "mailgate_delivery_seconds",
        "mailgate_delivery_seconds_bucket",
        "mailgate_delivery_seconds_sum",
        "mailgate_delivery_seconds_count",
    }


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_rules_and_their_tests() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout + check.stderr
    run = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULE_TESTS.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr
