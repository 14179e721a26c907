"""Challenge sessions: deterministic challenges under a seed, expiry, nonce, single use; the
order rule of challenge matching on observation sequences."""
from __future__ import annotations

import numpy as np
import pytest

from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.liveness.actions import ACTIONS, match_challenge
from facegate.liveness.challenge import draw_challenge
from facegate.liveness.sessions import FAILED, PASSED, LivenessSessions
from facegate.liveness.tracker import FrameObservation
from gallery_support import BACKENDS


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


class RecordedTracker:
    """Stands in for the face tracker in store tests: one empty observation per frame, counted."""

    def __init__(self):
        self.seen = []

    def observe_chunk(self, frames, start=None, first_index=0):
        from facegate.liveness.tracker import Continuation, FrameObservation
        out = [FrameObservation(i, t) for i, (t, _) in enumerate(frames, start=first_index)]
        self.seen += [o.index for o in out]
        return out, Continuation(out[-1] if out else (start.last if start else None))


class RecordedJudge:
    """Stands in for the model judge in store tests: returns a fixed verdict."""

    def __init__(self, live: bool):
        self.live = live
        self.tracker = RecordedTracker()
        self.observations = None

    def judge(self, challenge, capture, observations=None):
        self.observations = observations
        return {"live": self.live, "score": 0.9 if self.live else 0.0, "reasons": [] if self.live else ["x"],
                "embedding": np.ones(4, dtype=np.float32)}


@pytest.fixture(params=["sqlite"])
def sessions(request, tmp_path):
    """A session store on its own database: ``sessions(clock=None, **settings)``."""
    from contextlib import ExitStack

    from facegate.storage.store import Store
    from gallery_support import fresh_database
    opened = []
    with ExitStack() as stack:
        def make(clock=None, **settings):
            folder = tmp_path / f"db{len(opened)}"
            url = stack.enter_context(fresh_database(request.param, folder))
            s = Settings.load(data_dir=str(folder), database_url=url, data_key="", data_key_file="", **settings)
            store = Store.open(s)
            opened.append(store)
            return LivenessSessions(store.db, store.keys, s, **({"clock": clock} if clock else {}))
        yield make
        for store in opened:
            store.close()


def test_seeded_challenges_are_deterministic_and_valid(sessions):
    a = sessions(liveness_seed=11)
    b = sessions(liveness_seed=11)
    ca = [a.create().challenge for _ in range(20)]
    assert ca == [b.create().challenge for _ in range(20)]
    for ch in ca:
        assert 2 <= len(ch) <= 3 and len(set(ch)) == len(ch) and set(ch) <= set(ACTIONS)
    assert len({tuple(c) for c in ca}) > 5


def test_unseeded_challenges_vary():
    import random
    seen = {tuple(draw_challenge(random.Random(i))) for i in range(30)}
    assert len(seen) > 10


def test_session_expiry_nonce_and_single_use(sessions):
    clock = Clock()
    store = sessions(clock, liveness_seed=1, liveness_session_ttl_s=30, liveness_result_ttl_s=60)
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


def tiny_jpeg(seed: int = 0) -> bytes:
    import cv2
    img = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def shared_stores(sessions, **settings):
    """Two session stores on one database: what two replicas see."""
    a = sessions(**settings)
    from facegate.liveness.sessions import LivenessSessions as Store
    return a, Store(a.db, a.keys, a.settings)


BOTH = pytest.mark.parametrize("sessions", BACKENDS, indirect=True)


@BOTH
def test_any_replica_continues_a_session_another_opened(sessions):
    a, b = shared_stores(sessions)
    s = a.create(owner="key-a")
    assert b.add_frames(s.id, [(0.0, tiny_jpeg(0)), (0.1, tiny_jpeg(1))], s.nonce, "key-a") == 2
    assert a.add_frames(s.id, [(0.2, tiny_jpeg(2))], s.nonce, "key-a") == 3
    seen = {}

    class Judge:
        tracker = RecordedTracker()

        def judge(self, challenge, capture, observations=None):
            seen["frames"] = [(f.t, f.bgr.shape) for f in capture.frames]
            return {"live": True, "score": 0.9, "reasons": [], "embedding": np.arange(4, dtype=np.float32)}
    assert a.complete(s.id, Judge(), s.nonce, "key-a")["live"]
    assert seen["frames"] == [(0.0, (48, 64, 3)), (0.1, (48, 64, 3)), (0.2, (48, 64, 3))]
    used = b.consume(s.id, owner="key-a")
    np.testing.assert_array_equal(used.embedding, np.arange(4, dtype=np.float32))
    with a.db.connect() as conn:               # the judged capture's frames are gone
        assert conn.exec_driver_sql("SELECT count(*) FROM liveness_frames").scalar() == 0


@BOTH
def test_a_passed_session_is_consumed_once_when_two_replicas_race(sessions):
    from concurrent.futures import ThreadPoolExecutor
    a, b = shared_stores(sessions)
    for _ in range(20):
        s = a.create()
        a.complete(s.id, RecordedJudge(True))

        def use(store):
            try:
                return store.consume(s.id).id
            except FacegateError as exc:
                return exc.code
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(use, (a, b)))
        assert outcomes == sorted([s.id, "liveness_session_closed"]), outcomes


def test_capture_budgets_per_session_and_per_key(sessions):
    frame = tiny_jpeg()
    store = sessions(liveness_session_bytes=3 * len(frame), liveness_key_bytes=4 * len(frame),
                     liveness_open_sessions=2)
    first = store.create(owner="k")
    store.add_frames(first.id, [(0.0, frame), (0.1, frame), (0.2, frame)], owner="k")
    with pytest.raises(FacegateError) as e:
        store.add_frames(first.id, [(0.3, frame)], owner="k")
    assert e.value.code == "capture_too_large" and e.value.status == 413
    second = store.create(owner="k")
    store.add_frames(second.id, [(0.0, frame)], owner="k")
    with pytest.raises(FacegateError) as e:          # the key's captures hold 4 frames' bytes
        store.add_frames(second.id, [(0.1, frame)], owner="k")
    assert e.value.code == "liveness_session_limit" and e.value.status == 429
    with pytest.raises(FacegateError) as e:          # two captures in progress already
        store.create(owner="k")
    assert e.value.code == "liveness_session_limit"
    store.create(owner="another key")


def test_stored_frames_are_reduced_and_bounded():
    import cv2
    from facegate.liveness.capture import FRAME_SIDE, stored_jpeg
    big = cv2.imencode(".jpg", np.full((1080, 1920, 3), 90, np.uint8))[1].tobytes()
    kept = cv2.imdecode(np.frombuffer(stored_jpeg(big, 10_000_000, 4_000_000), np.uint8), cv2.IMREAD_COLOR)
    assert max(kept.shape[:2]) == FRAME_SIDE
    small = tiny_jpeg()
    assert stored_jpeg(small, 10_000_000, 4_000_000) == small          # already within bounds: as sent
    with pytest.raises(FacegateError) as e:
        stored_jpeg(big, 10_000_000, 1_000_000)
    assert e.value.code == "image_too_large"


@BOTH
def test_frames_are_tracked_as_they_arrive_on_any_replica(sessions):
    """Chunks alternate between two replicas; each one tracks what arrived, continuing the
    other's track, and completing only judges: every frame is observed once, in order, and the
    judge gets the kept observations."""
    a, b = shared_stores(sessions)
    s = a.create(owner="key-a")
    tracker = RecordedTracker()
    for i, store in enumerate([a, b, a, b]):
        store.add_frames(s.id, [(0.1 * (2 * i + k), tiny_jpeg(2 * i + k)) for k in range(2)], s.nonce, "key-a")
        assert store.observe(s.id, tracker, "key-a") == 2 * (i + 1)
    assert tracker.seen == list(range(8))
    assert a.observe(s.id, tracker, "key-a") == 8 and tracker.seen == list(range(8))    # nothing left to do
    judge = RecordedJudge(True)
    assert b.complete(s.id, judge, s.nonce, "key-a")["live"]
    assert judge.tracker.seen == []                     # completing tracked nothing again
    assert [o.index for o in judge.observations] == list(range(8))
    assert [o.t for o in judge.observations] == pytest.approx([0.1 * k for k in range(8)])


@BOTH
def test_a_capture_not_tracked_on_arrival_is_tracked_when_completed(sessions):
    a, b = shared_stores(sessions)
    s = a.create(owner="key-a")
    a.add_frames(s.id, [(0.0, tiny_jpeg(0)), (0.1, tiny_jpeg(1))], s.nonce, "key-a")
    a.observe(s.id, RecordedTracker(), "key-a")
    b.add_frames(s.id, [(0.2, tiny_jpeg(2))], s.nonce, "key-a")          # this replica died before tracking it
    judge = RecordedJudge(True)
    assert a.complete(s.id, judge, s.nonce, "key-a")["live"]
    assert judge.tracker.seen == [2] and [o.index for o in judge.observations] == [0, 1, 2]


@BOTH
def test_chunks_out_of_order_are_refused_and_a_retried_chunk_stores_nothing(sessions):
    a, b = shared_stores(sessions)
    s = a.create(owner="key-a")
    first = [(0.0, tiny_jpeg(0)), (0.1, tiny_jpeg(1))]
    second = [(0.2, tiny_jpeg(2)), (0.3, tiny_jpeg(3))]
    assert a.add_frames(s.id, first, s.nonce, "key-a") == 2
    assert b.add_frames(s.id, second, s.nonce, "key-a") == 4
    assert a.add_frames(s.id, second, s.nonce, "key-a") == 4          # the same chunk again: a retry
    for late in ([(0.1, tiny_jpeg(5))], [(0.25, tiny_jpeg(6)), (0.4, tiny_jpeg(7))], first):
        with pytest.raises(FacegateError) as e:
            b.add_frames(s.id, late, s.nonce, "key-a")
        assert e.value.code == "frames_out_of_order" and e.value.detail["last_t"] == pytest.approx(0.3)
    assert a.get(s.id).frames == 4 and not a.get(s.id).non_monotonic
    a.complete(s.id, RecordedJudge(True), s.nonce, "key-a")
    with pytest.raises(FacegateError) as e:                            # after /complete
        b.add_frames(s.id, [(0.5, tiny_jpeg(8))], s.nonce, "key-a")
    assert e.value.code == "liveness_session_closed"
