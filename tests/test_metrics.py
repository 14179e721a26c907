"""Prometheus counters fed from running totals: the index's early-stop counts."""
from __future__ import annotations

from prometheus_client import REGISTRY

from facegate.service import metrics


def staged_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("facegate_index_staged_searches_total", {"outcome": outcome}) or 0.0


def test_early_stop_totals_become_counter_increments_and_survive_an_index_rebuild():
    seen: dict = {}
    before = {o: staged_total(o) for o in ("stopped_early", "full_depth")}

    def gained():
        return {o: staged_total(o) - before[o] for o in before}

    metrics.count_staged_searches({"searches": 10, "stopped_early": 7}, seen)
    assert gained() == {"stopped_early": 7, "full_depth": 3}
    metrics.count_staged_searches({"searches": 10, "stopped_early": 7}, seen)   # nothing new
    assert gained() == {"stopped_early": 7, "full_depth": 3}
    metrics.count_staged_searches({"searches": 12, "stopped_early": 8}, seen)
    assert gained() == {"stopped_early": 8, "full_depth": 4}
    # a rebuilt index counts from zero again: its totals are all new
    metrics.count_staged_searches({"searches": 3, "stopped_early": 1}, seen)
    assert gained() == {"stopped_early": 9, "full_depth": 6}
