"""The kiosk waits for the person who decides its search (issue 38), at the review desk: only the
key that opened the case hears its answer; a decision says the subject named (or none), by which
role and when; a case nobody holds by its time ends ``expired`` and can no longer be decided;
waiting kiosk cases lead the queue. (Over HTTP across two replicas: tests/replicas.)"""
from __future__ import annotations

from datetime import timedelta

import pytest

from gallery_support import BACKENDS, Clock, fresh_database, make_settings

KEY, OTHER_KEY = "k_opener", "k_other"


@pytest.fixture(params=BACKENDS)
def desk(request, tmp_path, monkeypatch):
    from facegate.storage.store import Store
    from facegate.workflows.certification.ledger import CertificationLedger
    from facegate.workflows.review import desk as module
    clock = Clock()
    monkeypatch.setattr(module, "utcnow", clock)
    data = tmp_path / "data"
    with fresh_database(request.param, data) as url:
        settings = make_settings(data, url, kiosk_review_wait_s=120)
        store = Store.open(settings)
        d = module.ReviewDesk(settings, store, CertificationLedger(settings, store))
        d.clock = clock
        for sid in ("S-1", "S-2"):
            store.add_subject(sid, name=sid)
        from facegate.workflows.review.operators import Operators
        Operators(settings, store).add("rita", "reviewer", "a long enough password")
        yield d
        store.close()


def _kiosk_case(desk, key: str | None = KEY) -> int:
    from facegate.storage.db import write_transaction
    with write_transaction(desk.db) as conn:
        return desk.open_case(conn, workflow="kiosk", kiosk_id="k-1", outcome="manual_review",
                              reasons=["no_liveness"], scores={"candidates": [{"subject_id": "S-1", "score": 0.5},
                                                                              {"subject_id": "S-2", "score": 0.4}]},
                              opened_by_key=key,
                              wait_until=desk.clock.now + timedelta(seconds=desk.settings.kiosk_review_wait_s))


def _who():
    from facegate.storage.audit import Actor
    return Actor("operator:rita", None, "console", None)


def test_only_the_opening_key_hears_the_decision_with_the_role_and_time(desk):
    from facegate.errors import FacegateError
    case_id = _kiosk_case(desk)
    first = desk.kiosk_review(case_id, KEY)
    assert (first["status"], first["action"], first["decision"]) == ("pending", "wait", None)
    for key in (OTHER_KEY, ""):
        with pytest.raises(FacegateError) as e:
            desk.kiosk_review(case_id, key)
        assert e.value.code == "unknown_case" and e.value.status == 404
    desk.clock.now += timedelta(seconds=40)
    desk.identify(case_id, "S-2", "the person matches the second candidate", operator="rita", who=_who())
    done = desk.kiosk_review(case_id, KEY)
    assert (done["status"], done["action"], done["decision"], done["subject_id"]) == (
        "decided", "proceed", "identified", "S-2")
    assert done["decided_by_role"] == "reviewer" and "rita" not in str(done)
    assert done["waited_s"] == pytest.approx(40, abs=1) and done["decided_at"]


def test_a_case_nobody_took_in_time_expires_and_cannot_be_decided(desk):
    from facegate.errors import FacegateError
    from facegate.storage import audit
    waited = _kiosk_case(desk)
    held = _kiosk_case(desk)
    desk.clock.now += timedelta(seconds=100)
    desk.claim(held, "rita", _who())                      # a reviewer holds this one: its person keeps waiting
    assert desk.kiosk_review(waited, KEY)["status"] == "pending"
    desk.clock.now += timedelta(seconds=21)
    gone = desk.kiosk_review(waited, KEY)
    assert (gone["status"], gone["action"], gone["decision"]) == ("expired", "go_to_counter", None)
    assert desk.kiosk_review(held, KEY)["status"] == "pending"
    for attempt in (lambda: desk.claim(waited, "rita", _who()),
                    lambda: desk.identify(waited, "S-1", "too late", operator="rita", who=_who())):
        with pytest.raises(FacegateError) as e:
            attempt()
        assert e.value.code == "case_expired" and e.value.status == 409
    desk.identify(held, None, "none of the candidates", operator="rita", who=_who())
    assert desk.kiosk_review(held, KEY)["decision"] == "none"
    with desk.db.connect() as conn:
        expired = audit.rows(conn, operation="review.expired")
    assert [r["detail"]["case_id"] for r in expired] == [waited]
    assert desk.expire_waiting() == {}                    # nothing left to expire; each expires once


def test_waiting_kiosk_cases_lead_the_queue(desk):
    from facegate.storage.db import write_transaction
    with write_transaction(desk.db) as conn:
        older = desk.open_case(conn, workflow="certification", outcome="manual_review", reasons=["low_quality"],
                               scores={})
    desk.clock.now += timedelta(seconds=5)
    waiting = _kiosk_case(desk)
    desk.clock.now += timedelta(seconds=30)
    page = desk.queue(limit=1)
    assert [c["case_id"] for c in page["cases"]] == [waiting, older]
    assert page["cases"][0]["waiting_s"] == pytest.approx(30, abs=1) and page["cases"][1]["waiting_s"] is None
    assert page["next_after"] == older and desk.queue(after=older)["cases"] == []
    assert desk.kiosk_waiting()["waiting"] == 1
    desk.clock.now += timedelta(seconds=200)
    assert [c["case_id"] for c in desk.queue()["cases"]] == [older]          # expired: out of the pending queue
    assert [c["case_id"] for c in desk.queue(status="expired")["cases"]] == [waiting]
    assert desk.kiosk_waiting()["waiting"] == 0
