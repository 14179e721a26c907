from datetime import datetime, timezone

import pytest

from facegate.workflows.certification.periods import parse_period, period_at


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


STATUS_CASES = [   # attempts' outcomes in time order, judged when, grace days -> status
    ([], "during", 0, "due"),
    ([], "after", 0, "overdue"),
    ([], "after", 30, "due"),
    (["failed"], "during", 0, "failed"),
    (["failed"], "after", 0, "overdue"),
    (["failed", "certified"], "after", 0, "certified"),
    (["failed", "manual_review"], "after", 0, "manual_review"),     # an operator owes a decision
    (["manual_review", "certified"], "during", 0, "certified"),
]


def test_status_across_the_period_boundary(tmp_path):
    """The one status rule (the ledger's SQL), case by case on a real database."""
    from facegate.config import Settings
    from facegate.storage.schema import certifications, subjects
    from facegate.storage.store import Store
    from facegate.workflows.certification.ledger import CertificationLedger

    store = Store.open(Settings.load(data_dir=str(tmp_path), data_key_file=""))
    when = {"during": utc(2026, 6, 1), "after": utc(2027, 1, 2)}
    for i in range(len(STATUS_CASES)):
        store.add_subject(f"S{i}")
    with store.db.begin() as conn:
        for i, (outcomes, *_rest) in enumerate(STATUS_CASES):
            pk = conn.execute(subjects.select().where(subjects.c.subject_id == f"S{i}")).one().pk
            for k, outcome in enumerate(outcomes):
                conn.execute(certifications.insert().values(
                    subject_pk=pk, period="2026", outcome=outcome, method="face",
                    created_at=utc(2026, 3, 1, 0, k), valid_until=utc(2027, 1, 1) if outcome == "certified" else None))
    for i, (outcomes, at, grace, expected) in enumerate(STATUS_CASES):
        ledger = CertificationLedger(Settings.load(data_dir=str(tmp_path), cert_grace_days=grace), store)
        items = {r["subject_id"]: r for r in ledger.statuses("2026", as_of=when[at], limit=100)["items"]}
        assert items[f"S{i}"]["status"] == expected, (outcomes, at, grace)
    store.close()
