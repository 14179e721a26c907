from datetime import datetime, timezone

import pytest

from facegate.workflows.certification.periods import parse_period, period_at, status_in_period


def utc(*a):
    return datetime(*a, tzinfo=timezone.utc)


@pytest.mark.parametrize("t,kind,name,start,end", [
    (utc(2026, 11, 26), "year", "2026", utc(2026, 1, 1), utc(2027, 1, 1)),
    (utc(2026, 11, 26), "half", "2026-H2", utc(2026, 7, 1), utc(2027, 1, 1)),
    (utc(2026, 2, 3), "quarter", "2026-Q1", utc(2026, 1, 1), utc(2026, 4, 1)),
    (utc(2026, 12, 31, 23, 59), "month", "2026-12", utc(2026, 12, 1), utc(2027, 1, 1)),
])
def test_period_at_and_parse_round_trip(t, kind, name, start, end):
    p = period_at(t, kind)
    assert (p.name, p.start, p.end) == (name, start, end)
    assert parse_period(name) == p and p.contains(t) and not p.contains(end)


@pytest.mark.parametrize("bad", ["26", "2026-H3", "2026-13", "2026-Q0", "last year"])
def test_bad_period_names(bad):
    with pytest.raises(ValueError):
        parse_period(bad)


def test_status_across_the_period_boundary():
    p = parse_period("2026")
    during, after = utc(2026, 6, 1), utc(2027, 1, 2)
    assert status_in_period([], p, during) == "due"
    assert status_in_period([], p, after) == "overdue"
    assert status_in_period([], p, after, grace_days=30) == "due"
    assert status_in_period(["failed"], p, during) == "failed"
    assert status_in_period(["failed"], p, after) == "overdue"
    assert status_in_period(["failed", "certified"], p, after) == "certified"
    assert status_in_period(["failed", "manual_review"], p, after) == "manual_review"
    assert status_in_period(["manual_review", "certified"], p, during) == "certified"
