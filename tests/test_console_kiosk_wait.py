"""A person waiting at a kiosk for a reviewer, as the console page, the alert rules and the
dashboard show it (no browser: tests/browser/test_console.py shows the page itself; the alert's
promtool unit test is in deploy/prometheus/alerts.test.yml, run by tests/test_alerts.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONSOLE = REPO / "facegate" / "service" / "console"


def _texts() -> dict[str, dict[str, str]]:
    text = (CONSOLE / "i18n.js").read_text()
    parts = {"en": text[text.index("const en = {"):text.index("const zh = {")],
             "zh-CN": text[text.index("const zh = {"):text.index("export const TEXTS")]}
    pair = re.compile(r'^\s+([A-Za-z_]+): "((?:[^"\\]|\\.)*)",$', re.M)
    return {lang: dict(pair.findall(body)) for lang, body in parts.items()}


def test_the_waiting_time_the_expired_status_and_its_refusal_have_words_in_both_languages():
    texts = _texts()
    en, zh = texts["en"], texts["zh-CN"]
    for key in ("waitingFor", "durMinSec", "durSec", "kioskWaitsUntil", "caseExpired", "expiredTitle",
                "st_expired", "err_case_expired"):
        assert en.get(key) and zh.get(key), key
    # "waiting 1 min 20 s" / "已等待 1 分 20 秒"
    def fill(text: str, **values) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(values[m[1]]), text)
    for texts_, want in ((en, "waiting 1 min 20 s"), (zh, "已等待 1 分 20 秒")):
        assert fill(texts_["waitingFor"], time=fill(texts_["durMinSec"], m=1, s=20)) == want
    assert "{until}" in en["kioskWaitsUntil"] and "{until}" in zh["kioskWaitsUntil"]
    assert "counter" in en["err_case_expired"] and "柜台" in zh["err_case_expired"]
    # every refusal a reviewer can meet on a case has its sentence (problemText: err_<code>)
    from facegate.errors import ERROR_CODES
    for code in ("case_claimed", "case_decided", "case_expired", "unknown_case"):
        assert code in ERROR_CODES and f"err_{code}" in en and f"err_{code}" in zh, code


def test_the_queue_keeps_the_servers_order_marks_waiting_cases_and_offers_expired():
    js = (CONSOLE / "console.js").read_text()
    queue = js[js.index("async function renderQueue"):js.index("function scoreTable")]
    assert ".sort(" not in queue, "the server puts waiting kiosk cases first: the page keeps its order"
    assert "waiting_s" in js and '"row waiting"' in queue
    assert '["expired", t("st_expired")]' in queue
    case = js[js.index("async function renderCase"):js.index("other screens\n")]
    assert 'id: "waiting"' in case and "c.wait_until" in case and 'c.status === "expired"' in case
    css = (CONSOLE / "console.css").read_text()
    assert "tr.row.waiting" in css


def test_an_alert_and_a_panel_watch_people_waiting_at_kiosks():
    groups = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    rule = rules["FacegateKioskPersonWaiting"]
    assert re.fullmatch(r"max by \(job\) \(facegate_kiosk_review_oldest_wait_seconds\) > 120", rule["expr"].strip())
    assert rule["for"] == "1m" and rule["labels"] == {"severity": "page"}
    assert "review queue" in rule["annotations"]["description"]
    tests = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.test.yml").read_text())["tests"]
    assert any(t["alertname"] == "FacegateKioskPersonWaiting" for case in tests for t in case["alert_rule_test"])
    dash = json.loads((REPO / "deploy" / "grafana" / "facegate.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert any("facegate_kiosk_reviews_waiting" in e for e in exprs)
    assert any("facegate_kiosk_review_oldest_wait_seconds" in e for e in exprs)
    from facegate.service import metrics
    assert metrics.KIOSK_REVIEWS_WAITING._name == "facegate_kiosk_reviews_waiting"
    assert metrics.KIOSK_REVIEW_OLDEST_WAIT._name == "facegate_kiosk_review_oldest_wait_seconds"
