"""The alert rules and the Grafana dashboard: promtool checks and unit-tests the rules, and every
metric they name is exported by a running ``facegate serve``, whose health gauges follow the
database going away and coming back.

promtool is Debian's ``prometheus`` package (scripts/test.sh installs it as root); without it
the promtool tests skip, or fail with FACEGATE_REQUIRE_IMAGE=1 (.ci/run).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import need_shared
from image.support import need
from service_support import REPO, Server, create_key

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "facegate.json"
PROMETHEUS_OWN = {"up"}          # made by Prometheus for every scrape target, not by the service
ALERTS = {"FacegateDown", "FacegateHigh5xxRate", "FacegateDecisionLatencyHigh", "FacegateReviewRateJump",
          "FacegateLivenessFailureJump", "FacegateIndexLagging", "FacegateChangeFeedDisconnected",
          "FacegateDatabaseUnreachable", "FacegateDataKeyOld", "FacegateGalleryLarge",
          "FacegateKioskPersonWaiting"}
_NAME = re.compile(r"\b(facegate_[a-z0-9_]+|up)\b(?=\s*[{\[)\s=<>*/+-]|\s*$)")


def _promtool() -> str:
    path = shutil.which("promtool")
    need(path is not None, "promtool is not installed (Debian's prometheus package; scripts/test.sh installs it)")
    return path


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    def walk(panels):
        for p in panels:
            yield from (t["expr"] for t in p.get("targets", []))
            yield from walk(p.get("panels", []))
    dash = json.loads(DASHBOARD.read_text())
    return list(walk(dash["panels"])) + [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]


def metric_names(exprs: list[str]) -> set[str]:
    """Metric names in PromQL expressions (label names and values are not matched: a name is
    followed by a selector, a range, an operator, a parenthesis or the end)."""
    names = set()
    for e in exprs:
        e = re.sub(r'"[^"]*"', '""', e)          # label values may look like names
        names |= set(_NAME.findall(e))
    return names


def exported_names(text: str) -> tuple[set[str], dict]:
    """Every sample name /metrics declares (a labelled family with no sample yet declares its
    names by its type), and the samples by (name, labels)."""
    names, samples = set(), {}
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("_count", "_sum", "_created")}
    for fam in text_string_to_metric_families(text):
        names |= {fam.name + s for s in suffixes.get(fam.type, ("",))}
        for s in fam.samples:
            names.add(s.name)
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return names, samples


def test_promtool_checks_the_rules_and_their_unit_tests_pass():
    promtool = _promtool()
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout, check.stdout
    tested = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True, timeout=600)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    named = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert named == ALERTS
    unit = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case["alert_rule_test"]}
    assert unit == ALERTS, f"alerts without a unit test: {ALERTS - unit}"


def _scrape(url: str) -> tuple[set[str], dict]:
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    return exported_names(r.text)


def _gauge(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on PostgreSQL (its change feed then exports a sample) where PostgreSQL is
    installed, else on SQLite."""
    from benchmarks.replicas import PostgresCluster, Replica, write_data_key
    photos = need_shared("data", "lfw-dev", "images")
    work = tmp_path_factory.mktemp("alerts")
    pg = PostgresCluster().start() if PostgresCluster.available() else None
    if pg is not None:
        srv = Replica(work / "server", pg.url, write_data_key(work / "data.key"), intra_op_threads=1, index_sync_s=0.5)
    else:
        (work / "server").mkdir()
        srv = Server(work / "server", intra_op_threads=1, index_sync_s=0.5)
    key = create_key(srv.env, "admin")["key"]
    try:
        srv.start(timeout=180)
        yield {"srv": srv, "pg": pg, "key": key, "photos": photos}
    finally:
        srv.stop()
        if pg is not None:
            pg.destroy()


def test_every_metric_in_the_rules_and_the_dashboard_is_exported_by_a_running_server(server):
    url, key, photos = server["srv"].url, server["key"], server["photos"]
    h = {"X-API-Key": key}
    with httpx.Client(timeout=60) as client:      # traffic, so the labelled series the rules select exist
        assert client.post(url + "/v1/subjects", json={"subject_id": "AL-1"}, headers=h).status_code == 201
        face = (photos / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg").read_bytes()
        probe = (photos / "Aaron_Sorkin" / "Aaron_Sorkin_0002.jpg").read_bytes()
        assert client.post(url + "/v1/subjects/AL-1/faces", files={"image": ("e.jpg", face, "image/jpeg")},
                           headers=h).status_code == 201
        r = client.post(url + "/v1/verify", data={"subject_id": "AL-1"}, files={"image": ("p.jpg", probe, "image/jpeg")},
                        headers=h)
        assert r.status_code == 200, r.text
    exported, samples = _scrape(url)
    wanted_rules, wanted_dashboard = metric_names(rule_exprs()), metric_names(dashboard_exprs())
    assert len(wanted_rules) >= 8 and len(wanted_dashboard) >= 15, (wanted_rules, wanted_dashboard)
    missing = {"alerts.yml": sorted(wanted_rules - exported - PROMETHEUS_OWN),
               "facegate.json": sorted(wanted_dashboard - exported - PROMETHEUS_OWN)}
    assert missing == {"alerts.yml": [], "facegate.json": []}, missing
    # the series the rules select by label exist with those labels
    assert any(n == "facegate_request_seconds_bucket" and ("route", "/v1/verify") in labels for n, labels in samples)
    assert any(n == "facegate_decisions_total" and ("operation", "verify") in labels for n, labels in samples)
    assert _gauge(samples, "facegate_gallery_subjects") is not None


def _wait_health(url: str, want: dict, timeout: float) -> dict:
    deadline = time.time() + timeout
    while True:
        _, samples = _scrape(url)
        got = {k: _gauge(samples, k) if isinstance(k, str) else _gauge(samples, k[0], **dict(k[1:])) for k in want}
        if got == want or time.time() > deadline:
            return got
        time.sleep(0.5)


def test_the_health_gauges_follow_the_database(server):
    srv, pg = server["srv"], server["pg"]
    key_file = Path(srv.env.get("FACEGATE_DATA_KEY_FILE") or Path(srv.env["FACEGATE_DATA_DIR"]) / "data.key")
    _, samples = _scrape(srv.url)
    stamps = [v for (n, _), v in samples.items() if n == "facegate_data_key_file_changed_timestamp_seconds"]
    assert stamps == [pytest.approx(key_file.stat().st_mtime, abs=1)], stamps
    healthy = {"facegate_database_up": 1.0, "facegate_index_lag_changes": 0.0}
    if pg is None:
        assert _wait_health(srv.url, healthy, 10) == healthy
        pytest.skip("PostgreSQL is not installed: the database outage part runs on PostgreSQL only")
    feed = ("facegate_change_feed_connected", ("database", "postgresql"))
    assert _wait_health(srv.url, {**healthy, feed: 1.0}, 10) == {**healthy, feed: 1.0}
    pg.stop()
    try:
        down = {"facegate_database_up": 0.0, feed: 0.0}
        assert _wait_health(srv.url, down, 30) == down
        assert _scrape(srv.url)[1][("facegate_index_sync_age_seconds", ())] > 0
    finally:
        pg.start()
    assert _wait_health(srv.url, {**healthy, feed: 1.0}, 60) == {**healthy, feed: 1.0}
