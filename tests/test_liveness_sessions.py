"""Challenge sessions: deterministic challenges under a seed, expiry, nonce, single use; the
order rule of challenge matching on observation sequences."""
from __future__ import annotations

import numpy as np
import pytest

from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.liveness.actions import ACTIONS, match_challenge
from facegate.liveness.challenge import FAILED, PASSED, LivenessSessions, draw_challenge
from facegate.liveness.tracker import FrameObservation


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


class RecordedJudge:
    """Stands in for the model judge in store tests: returns a fixed verdict."""

    def __init__(self, live: bool):
        self.live = live

    def judge(self, challenge, capture):
        return {"live": self.live, "score": 0.9 if self.live else 0.0, "reasons": [] if self.live else ["x"],
                "embedding": np.ones(4, dtype=np.float32)}


def test_seeded_challenges_are_deterministic_and_valid():
    a = LivenessSessions(Settings.load(liveness_seed=11))
    b = LivenessSessions(Settings.load(liveness_seed=11))
    ca = [a.create().challenge for _ in range(20)]
    assert ca == [b.create().challenge for _ in range(20)]
    for ch in ca:
        assert 2 <= len(ch) <= 3 and len(set(ch)) == len(ch) and set(ch) <= set(ACTIONS)
    assert len({tuple(c) for c in ca}) > 5


def test_unseeded_challenges_vary():
    import random
    seen = {tuple(draw_challenge(random.Random(i))) for i in range(30)}
    assert len(seen) > 10


def test_session_expiry_nonce_and_single_use():
    clock = Clock()
    store = LivenessSessions(Settings.load(liveness_seed=1, liveness_session_ttl_s=30, liveness_result_ttl_s=60), clock)
    s = store.create(subject_id="p-1", purpose="pension", owner="key-a")
    assert s.public()["challenge"] == s.challenge and s.public()["expires_at"].endswith("Z")
    with pytest.raises(FacegateError) as e:
        store.pending(s.id, nonce="wrong", owner="key-a")
    assert e.value.code == "invalid_request"
    result = store.complete(s.id, RecordedJudge(True), nonce=s.nonce)
    assert result["live"] and "embedding" not in result and store.get(s.id).status == PASSED
    with pytest.raises(FacegateError) as e:
        store.complete(s.id, RecordedJudge(True))
    assert e.value.code == "liveness_session_closed"
    with pytest.raises(FacegateError) as e:
        store.consume(s.id, subject_id="p-1", owner="another key")
    assert e.value.code == "liveness_session_unknown"
    used = store.consume(s.id, subject_id="p-1")
    assert used.embedding is not None
    with pytest.raises(FacegateError) as e:
        store.consume(s.id, subject_id="p-1")
    assert e.value.code == "liveness_session_closed"

    late = store.create()
    clock.now += 31
    with pytest.raises(FacegateError) as e:
        store.pending(late.id)
    assert e.value.code == "liveness_session_expired"

    other = store.create(subject_id="p-1")
    store.complete(other.id, RecordedJudge(True))
    with pytest.raises(FacegateError) as e:
        store.consume(other.id, subject_id="p-2")
    assert e.value.code == "liveness_failed"
    with pytest.raises(FacegateError) as e:
        store.consume(other.id, subject_id="p-1")
    assert e.value.code == "liveness_session_closed"

    failed = store.create()
    store.complete(failed.id, RecordedJudge(False))
    assert store.get(failed.id).status == FAILED
    with pytest.raises(FacegateError) as e:
        store.consume(failed.id)
    assert e.value.code == "liveness_failed"

    passed = store.create()
    store.complete(passed.id, RecordedJudge(True))
    clock.now += 61
    with pytest.raises(FacegateError) as e:
        store.consume(passed.id)
    assert e.value.code == "liveness_session_expired"
    with pytest.raises(FacegateError) as e:
        store.get("nope")
    assert e.value.code == "liveness_session_unknown"


def _obs(t, yaw=0.0, mar=0.05, closed=False, ear=0.3):
    o = FrameObservation(int(t * 10), t, detected=True, faces=1, box=np.array([0, 0, 100, 100.0]),
                         landmarks68=np.zeros((68, 2)))
    o.eyes_open = (0.05, 0.05) if closed else (0.99, 0.99)
    o.ear, o.mar, o.yaw, o.pitch = (0.15 if closed else ear), mar, yaw, 0.0
    return o


def test_actions_must_come_in_the_asked_order():
    # 0-1 s neutral, blink at 1.2 s, head turned to the subject's left 2.0-2.6 s
    seq = [_obs(i / 10) for i in range(12)] + [_obs(1.2, closed=True), _obs(1.3, closed=True)]
    seq += [_obs(i / 10) for i in range(14, 20)] + [_obs(i / 10, yaw=-25) for i in range(20, 27)]
    seq += [_obs(i / 10) for i in range(27, 32)]
    ok = match_challenge(["blink", "turn_left"], seq)
    assert all(a["detected"] for a in ok) and ok[0]["start"] == 1.2 and ok[1]["start"] == 2.0
    wrong = match_challenge(["turn_left", "blink"], seq)
    assert wrong[0]["detected"] and not wrong[1]["detected"]
    assert not match_challenge(["turn_right"], seq)[0]["detected"]
    assert not match_challenge(["open_mouth"], seq)[0]["detected"]
