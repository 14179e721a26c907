"""Liveness sessions in the database: any replica may open, fill, judge or consume one.

A session is a row of ``liveness_sessions`` (challenge, nonce, owner, deadlines, counters, the
verdict, the live face's encrypted embedding) and, while it waits for its capture, rows of
``liveness_frames`` (each frame reduced on arrival to what the judge uses, JPEG, AES-GCM
encrypted; deleted once judged). Every state change is one short transaction on the row:

- appending frames locks the row (so two uploads of one session keep their order) and checks
  the nonce, the deadline and the budgets (frames, seconds, bytes per session and per key); a
  chunk that starts before the last stored frame is refused (``frames_out_of_order``), one that
  repeats the last stored frames exactly (a retried upload) stores nothing;
- tracking runs as the frames arrive (:meth:`LivenessSessions.observe`): each frame's observation is
  kept, encrypted, beside it, and ``observed`` moves forward in one conditional UPDATE, so any
  replica continues where another stopped, and a replica that dies mid-capture loses nothing;
- judging moves ``pending -> judging`` in one conditional UPDATE, so a capture is judged once;
- consuming moves ``passed -> consumed`` in one conditional UPDATE, so a passed session can
  never be used twice, even when two replicas race.

Challenges are drawn from ``secrets`` unless ``Settings.liveness_seed`` is set (tests only).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from facegate.errors import FacegateError
from facegate.liveness.actions import ACTIONS
from facegate.liveness.capture import Capture, CaptureFrame, encode_frame
from facegate.liveness.judge import Observations
from facegate.liveness.tracker import Continuation, FrameObservation
from facegate.liveness.challenge import draw_challenge
from facegate.liveness.tokens import capture_token, token_matches
from facegate.storage import consents
from facegate.storage.aad import frame_aad, held_frame_aad, live_embedding_aad, observation_aad
from facegate.storage.datakeys import DataKeys
from facegate.storage.db import write_transaction
from facegate.storage.schema import liveness_evidence, liveness_frames, liveness_sessions

log = logging.getLogger(__name__)


class _Superseded(Exception):
    """A write found its rows changed by another writer; it is rolled back and done again later."""

PENDING, JUDGING, PASSED, FAILED, CONSUMED = "pending", "judging", "passed", "failed", "consumed"
FRAME_READ_BATCH = 64
EVIDENCE_FRAMES = 3       # frames of a judged capture held for a decision that may go to a person


@dataclass(frozen=True)
class HeldFrame:
    """One of a judged capture's best frames (JPEG as stored, ~640 px) with its scores, held,
    encrypted, until the session is consumed: a decision that goes to a person keeps it as
    evidence (workflows.review), every other decision lets it go."""
    seq: int
    t: float
    jpeg: bytes
    scores: dict


def evidence_picks(result: dict, capture: Capture, observations) -> list[HeldFrame]:
    """The capture's best frames: those passive PAD scored, best fused score first; without
    PAD, the most frontal tracked frames; without observations, evenly spaced frames."""
    per_frame = (result.get("passive") or {}).get("per_frame") or []
    picks: list[tuple[int, dict]] = []
    if per_frame:
        ranked = sorted(per_frame, key=lambda p: (-float(np.mean(list(p["pad"].values()) or [0.0])), abs(p["yaw"])))
        picks = [(p["index"], {"pad": p["pad"], "yaw": p["yaw"]}) for p in ranked[:EVIDENCE_FRAMES]]
    elif observations:
        faced = sorted((o for o in observations if o is not None and o.has_face), key=lambda o: abs(o.yaw))
        picks = [(o.index, {"yaw": round(float(o.yaw), 1)}) for o in faced[:EVIDENCE_FRAMES]]
    if not picks and capture.frames:
        n = min(EVIDENCE_FRAMES, len(capture.frames))
        picks = [(int(i), {}) for i in np.linspace(0, len(capture.frames) - 1, n).round()]
    out = []
    for index, scores in sorted({i: sc for i, sc in picks}.items()):
        if 0 <= index < len(capture.frames):
            frame = capture.frames[index]
            jpeg = frame.data if frame.data is not None else encode_frame(frame.bgr)
            out.append(HeldFrame(index, float(frame.t), jpeg, scores))
    return out


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


@dataclass(frozen=True)
class LivenessSession:
    """A session as read from its row (``embedding`` only when consumed; ``capture_token`` only
    right after it was opened: the token itself is never stored)."""
    id: str
    challenge: list[str]
    nonce: str
    created_at: float
    expires_at: float
    subject_id: str | None
    purpose: str | None
    owner: str | None
    status: str
    frames: int
    frame_bytes: int
    last_t: float | None
    non_monotonic: bool
    result: dict | None
    valid_until: float | None
    embedding: np.ndarray | None = None
    capture_token: str | None = None
    evidence: tuple[HeldFrame, ...] = ()

    def public(self) -> dict:
        out = {"session_id": self.id, "challenge": list(self.challenge), "nonce": self.nonce,
               "expires_at": _iso(self.expires_at), "status": self.status, "subject_id": self.subject_id,
               "purpose": self.purpose, "frames_received": self.frames}
        if self.valid_until is not None:
            out["valid_until"] = _iso(self.valid_until)
        return out


class LivenessSessions:
    """The session store (see the module docstring)."""

    def __init__(self, db: sa.Engine, keys: DataKeys, settings, clock=time.time):
        self.db = db
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self._rng = random.Random(settings.liveness_seed) if settings.liveness_seed is not None else secrets.SystemRandom()
        self._fixed = [a.strip() for a in settings.liveness_challenge.split(",") if a.strip()] or None
        if self._fixed:
            log.warning("FACEGATE_LIVENESS_CHALLENGE=%s: every session gets this challenge (tests only)",
                        settings.liveness_challenge)

    @property
    def _keep_s(self) -> float:
        """How long a session is remembered after it was opened (then it is unknown and purged)."""
        return 2 * max(self.settings.liveness_session_ttl_s, self.settings.liveness_result_ttl_s)

    # ------------------------------------------------------------ reading
    def _session(self, row, embedding: np.ndarray | None = None, token: str | None = None) -> LivenessSession:
        m = row._mapping
        return LivenessSession(
            id=m["id"], challenge=json.loads(m["challenge"]), nonce=m["nonce"], created_at=m["created_at"],
            expires_at=m["expires_at"], subject_id=m["subject_id"], purpose=m["purpose"], owner=m["owner"],
            status=m["status"], frames=m["frames"], frame_bytes=m["frame_bytes"], last_t=m["last_t"],
            non_monotonic=bool(m["non_monotonic"]), result=json.loads(m["result"]) if m["result"] else None,
            valid_until=m["valid_until"], embedding=embedding, capture_token=token)

    def _row(self, conn, session_id: str, owner: str | None, lock: bool = False):
        q = sa.select(liveness_sessions).where(liveness_sessions.c.id == session_id)
        if lock and conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).one_or_none()
        if (row is None or (owner is not None and row.owner is not None and row.owner != owner)
                or self.clock() - row.created_at > self._keep_s):
            raise FacegateError("liveness_session_unknown", f"no liveness session {session_id!r} (or it expired)")
        return row

    def get(self, session_id: str, owner: str | None = None) -> LivenessSession:
        """The session; another owner's session is reported as unknown."""
        with self.db.connect() as conn:
            return self._session(self._row(conn, session_id, owner))

    def by_token(self, session_id: str, token: str) -> LivenessSession:
        """The session a capture token opens; ``unauthorized`` for a wrong, foreign or expired token."""
        with self.db.connect() as conn:
            row = conn.execute(sa.select(liveness_sessions).where(liveness_sessions.c.id == session_id)).one_or_none()
        if row is None or not token_matches(token, row.token_hash):
            raise FacegateError("unauthorized", "the capture token is not valid for this liveness session")
        if self.clock() > row.expires_at:
            raise FacegateError("unauthorized", "the capture token expired with its liveness session")
        return self._session(row)

    def _check_pending(self, row, nonce: str | None) -> None:
        if row.status != PENDING:
            raise FacegateError("liveness_session_closed", f"the session is already {row.status}", status=row.status)
        if self.clock() > row.expires_at:
            raise FacegateError("liveness_session_expired", "the challenge expired; start a new session")
        if nonce is not None and not secrets.compare_digest(str(nonce), row.nonce):
            raise FacegateError("invalid_request", "the nonce does not match the session's")

    def pending(self, session_id: str, nonce: str | None = None, owner: str | None = None) -> LivenessSession:
        """The session, if it is still waiting for its capture (and the nonce matches, when given)."""
        with self.db.connect() as conn:
            row = self._row(conn, session_id, owner)
        self._check_pending(row, nonce)
        return self._session(row)

    # ------------------------------------------------------------ lifecycle
    def create(self, subject_id: str | None = None, purpose: str | None = None,
               challenge: list[str] | None = None, owner: str | None = None) -> LivenessSession:
        """A new session with its challenge; the returned view carries the capture token (once)."""
        s = self.settings
        now = self.clock()
        challenge = challenge or self._fixed
        if challenge is not None:
            unknown = [a for a in challenge if a not in ACTIONS]
            if unknown or not challenge:
                raise FacegateError("invalid_request", f"unknown actions {unknown}; use {list(ACTIONS)}")
        session_id = secrets.token_urlsafe(18)
        token, token_hash = capture_token(session_id)
        with write_transaction(self.db) as conn:
            if owner is not None:
                open_now = conn.execute(sa.select(sa.func.count()).select_from(liveness_sessions).where(
                    liveness_sessions.c.owner == owner, liveness_sessions.c.status == PENDING,
                    liveness_sessions.c.expires_at >= now)).scalar_one()
                if open_now >= s.liveness_open_sessions:
                    raise FacegateError("liveness_session_limit", f"this key has {open_now} liveness sessions "
                                        f"waiting for their capture; at most {s.liveness_open_sessions}",
                                        open_sessions=int(open_now))
            conn.execute(liveness_sessions.insert().values(
                id=session_id, owner=owner, subject_id=subject_id, purpose=purpose,
                challenge=json.dumps(list(challenge or draw_challenge(self._rng))), nonce=secrets.token_urlsafe(16),
                token_hash=token_hash, status=PENDING, created_at=now, expires_at=now + s.liveness_session_ttl_s))
            return self._session(self._row(conn, session_id, None), token=token)

    def add_frames(self, session_id: str, frames: list[tuple[float, bytes]], nonce: str | None = None,
                   owner: str | None = None) -> int:
        """Append stored frames (``(t, jpeg)``, see :func:`facegate.liveness.capture.stored_jpeg`) to a
        pending session's capture; returns how many frames the capture now holds."""
        s = self.settings
        new_bytes = sum(len(data) for _, data in frames)
        with write_transaction(self.db) as conn:
            row = self._row(conn, session_id, owner, lock=True)
            self._check_pending(row, nonce)
            consents.require_capture(conn, row, s)     # no frame stored without consent to the current notice
            if frames and row.last_t is not None and float(frames[0][0]) <= row.last_t:
                if self._repeats_last(conn, row, [float(t) for t, _ in frames]):
                    return row.frames
                raise FacegateError("frames_out_of_order", "these frames start before the last frame already "
                                    "received; send the chunks in capture order", last_t=row.last_t)
            if row.frames + len(frames) > s.liveness_max_frames:
                raise FacegateError("invalid_request", f"a capture holds at most {s.liveness_max_frames} frames",
                                    max_frames=s.liveness_max_frames)
            if row.frame_bytes + new_bytes > s.liveness_session_bytes:
                raise FacegateError("capture_too_large", f"a capture holds at most {s.liveness_session_bytes} bytes "
                                    "of frames", limit_bytes=s.liveness_session_bytes)
            held = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(liveness_sessions.c.frame_bytes), 0)).where(
                liveness_sessions.c.owner == row.owner, liveness_sessions.c.status == PENDING)).scalar_one()
            if row.owner is not None and held + new_bytes > s.liveness_key_bytes:
                raise FacegateError("liveness_session_limit", f"this key's open captures hold {held} bytes; at most "
                                    f"{s.liveness_key_bytes}", limit_bytes=s.liveness_key_bytes)
            times = [float(t) for t, _ in frames]
            if not all(np.isfinite(times)):
                raise FacegateError("invalid_request", "frame timestamps must be finite numbers (seconds)")
            first = row.first_t if row.first_t is not None else (times[0] if times else None)
            if times and max(times) - first > s.liveness_max_seconds:
                raise FacegateError("invalid_request", f"a capture lasts at most {s.liveness_max_seconds:g} s",
                                    max_seconds=s.liveness_max_seconds)
            sequence = ([row.last_t] if row.last_t is not None else []) + times
            non_monotonic = bool(row.non_monotonic) or any(b <= a for a, b in zip(sequence, sequence[1:]))
            if frames:
                conn.execute(liveness_frames.insert(), [
                    {"session_id": session_id, "seq": row.frames + i, "t": t,
                     **dict(zip(("data_enc", "key_id"), self.keys.encrypt(data, frame_aad(session_id, row.frames + i))))}
                    for i, (t, data) in enumerate(frames)])
            conn.execute(liveness_sessions.update().where(liveness_sessions.c.id == session_id).values(
                frames=row.frames + len(frames), frame_bytes=row.frame_bytes + new_bytes, first_t=first,
                last_t=times[-1] if times else row.last_t, non_monotonic=non_monotonic))
            return row.frames + len(frames)

    @staticmethod
    def _repeats_last(conn, row, times: list[float]) -> bool:
        """Whether ``times`` are exactly the timestamps of the last ``len(times)`` stored frames."""
        f = liveness_frames
        stored = conn.execute(sa.select(f.c.t).where(f.c.session_id == row.id, f.c.seq >= row.frames - len(times))
                              .order_by(f.c.seq)).scalars().all()
        return [float(t) for t in stored] == times

    def _frames(self, session_id: str, first: int = 0):
        """(seq, t, jpeg, observation or None) of the stored frames from ``first`` on, in order."""
        f = liveness_frames
        with self.db.connect() as conn:
            last = first - 1
            while True:
                rows = conn.execute(sa.select(f.c.seq, f.c.t, f.c.data_enc, f.c.observation_enc, f.c.key_id)
                                    .where(f.c.session_id == session_id, f.c.seq > last)
                                    .order_by(f.c.seq).limit(FRAME_READ_BATCH)).all()
                for seq, t, data, obs, key_id in rows:
                    jpeg = self.keys.decrypt(data, key_id, frame_aad(session_id, seq))
                    observation = None if obs is None else FrameObservation.from_dict(
                        json.loads(self.keys.decrypt(obs, key_id, observation_aad(session_id, seq))))
                    yield seq, t, jpeg, observation
                if len(rows) < FRAME_READ_BATCH:
                    return
                last = rows[-1][0]

    def capture_of(self, session_id: str) -> tuple[Capture, list[FrameObservation | None]]:
        """The stored capture, decrypted, holding JPEG bytes (decoded by the judge as it reads),
        and each frame's observation where it was tracked already."""
        s = self.settings
        capture = Capture(s.liveness_max_frames, s.liveness_max_seconds)
        observations = []
        for _, t, jpeg, observation in self._frames(session_id):
            capture.add_stored(t, jpeg)
            observations.append(observation)
        return capture, observations

    def observe(self, session_id: str, tracker, owner: str | None = None) -> int:
        """Track the frames received since the last observed one, continuing its track, and keep
        their observations; returns how many frames are observed. Safe to run on any replica at
        any time: a replica that finds the frames observed meanwhile by another keeps nothing."""
        with self.db.connect() as conn:
            row = self._row(conn, session_id, owner)
        start = row.observed
        if row.status not in (PENDING, JUDGING) or start >= row.frames:
            return start
        frames = self._frames(session_id, max(start - 1, 0))
        continuation = Continuation()
        if start > 0:
            _, _, jpeg, previous = next(frames)
            if previous is None:             # the row says observed; its frame disagrees: start again later
                return start
            continuation = Continuation.after(previous, CaptureFrame(0.0, data=jpeg).bgr)
        observed, _ = tracker.observe_chunk(((t, CaptureFrame(t, data=jpeg).bgr) for _, t, jpeg, _ in frames),
                                            continuation, first_index=start)
        return self._keep_observations(session_id, start, observed)

    def _keep_observations(self, session_id: str, start: int, observed: list[FrameObservation]) -> int:
        t, f = liveness_sessions.c, liveness_frames.c
        try:
            with write_transaction(self.db) as conn:
                moved = conn.execute(liveness_sessions.update().where(t.id == session_id, t.observed == start)
                                     .values(observed=start + len(observed))).rowcount
                if moved != 1:
                    return start
                kids = dict(conn.execute(sa.select(f.seq, f.key_id).where(
                    f.session_id == session_id, f.seq >= start, f.seq < start + len(observed))).all())
                for o in observed:
                    plain = json.dumps(o.as_dict()).encode()
                    blob, kid = self.keys.encrypt(plain, observation_aad(session_id, o.index), kid=kids[o.index])
                    if conn.execute(liveness_frames.update().where(
                            f.session_id == session_id, f.seq == o.index, f.key_id == kid)
                            .values(observation_enc=blob)).rowcount != 1:
                        raise _Superseded()
        except _Superseded:        # a key rotation re-encrypted the frame meanwhile: observed again later
            return start
        return start + len(observed)

    def complete(self, session_id: str, judge, nonce: str | None = None, owner: str | None = None) -> dict:
        """Judge the session's capture; the verdict is final (a failed session cannot be retried)."""
        with self.db.connect() as conn:
            row = self._row(conn, session_id, owner)
        self._check_pending(row, nonce)
        t = liveness_sessions.c
        with write_transaction(self.db) as conn:
            claimed = conn.execute(liveness_sessions.update().where(
                t.id == session_id, t.status == PENDING, t.expires_at >= self.clock()).values(status=JUDGING)).rowcount
        if claimed != 1:                     # another request judged it, or the deadline passed meanwhile
            with self.db.connect() as conn:
                self._check_pending(self._row(conn, session_id, owner), None)
        try:
            self.observe(session_id, judge.tracker)
            capture, observations = self.capture_of(session_id)
            capture.non_monotonic = bool(row.non_monotonic)
            if any(o is None for o in observations):           # not all kept (a race lost): the whole capture
                observations = None
            result = judge.judge(json.loads(row.challenge), capture,
                                 observations=None if observations is None else Observations.of(observations))
        except Exception:
            with write_transaction(self.db) as conn:
                conn.execute(liveness_sessions.update().where(t.id == session_id).values(status=FAILED))
                conn.execute(liveness_frames.delete().where(liveness_frames.c.session_id == session_id))
            raise
        now = self.clock()
        embedding = result.pop("embedding", None)
        result = result | {"session_id": session_id}
        values = {"status": PASSED if result["live"] else FAILED, "completed_at": now}
        if result["live"]:
            values["valid_until"] = now + self.settings.liveness_result_ttl_s
            result["valid_until"] = _iso(values["valid_until"])
        if embedding is not None:
            vec = np.asarray(embedding, dtype="<f4").tobytes()
            values["embedding_enc"], values["key_id"] = self.keys.encrypt(vec, live_embedding_aad(session_id))
        values["result"] = json.dumps(result, default=float)
        held = evidence_picks(result, capture, observations)
        with write_transaction(self.db) as conn:
            conn.execute(liveness_sessions.update().where(t.id == session_id).values(**values))
            conn.execute(liveness_frames.delete().where(liveness_frames.c.session_id == session_id))
            for h in held:
                blob, kid = self.keys.encrypt(h.jpeg, held_frame_aad(session_id, h.seq))
                conn.execute(liveness_evidence.insert().values(session_id=session_id, seq=h.seq, t=h.t,
                                                               scores=json.dumps(h.scores), data_enc=blob, key_id=kid))
        return result

    def consume(self, session_id: str, subject_id: str | None = None, owner: str | None = None) -> LivenessSession:
        """Use a passed session once (e.g. by verify): it must be passed, unexpired, unused, and
        for ``subject_id`` when the session named one. Returns it with its face embedding."""
        t = liveness_sessions.c
        with write_transaction(self.db) as conn:
            row = self._row(conn, session_id, owner)
            used = conn.execute(liveness_sessions.update().where(
                t.id == session_id, t.status == PASSED, t.valid_until >= self.clock())
                .values(status=CONSUMED, consumed_at=self.clock())).rowcount
            held = self._take_evidence(conn, session_id) if used == 1 else ()
        if used != 1:
            if row.status == CONSUMED or row.status == PASSED and (row.valid_until or 0) >= self.clock():
                raise FacegateError("liveness_session_closed", "the liveness session was already used",
                                    status=CONSUMED)
            if row.status != PASSED:
                raise FacegateError("liveness_failed", "the liveness session did not pass", status=row.status,
                                    reasons=(json.loads(row.result) if row.result else {}).get("reasons", []))
            raise FacegateError("liveness_session_expired", "the liveness result is too old to use")
        if row.subject_id and subject_id and row.subject_id != subject_id:
            raise FacegateError("liveness_failed", "the liveness session was opened for another subject")
        embedding = None
        if row.embedding_enc is not None:
            raw = self.keys.decrypt(row.embedding_enc, row.key_id, live_embedding_aad(session_id))
            embedding = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        return dataclasses.replace(self._session(row, embedding=embedding), evidence=held)

    def _take_evidence(self, conn, session_id: str) -> tuple[HeldFrame, ...]:
        """The held frames of the session, decrypted and deleted (in the caller's transaction)."""
        e = liveness_evidence
        rows = conn.execute(sa.select(e).where(e.c.session_id == session_id).order_by(e.c.seq)).all()
        if rows:
            conn.execute(e.delete().where(e.c.session_id == session_id))
        return tuple(HeldFrame(m["seq"], float(m["t"]),
                               self.keys.decrypt(m["data_enc"], m["key_id"], held_frame_aad(session_id, m["seq"])),
                               json.loads(m["scores"] or "{}")) for m in (r._mapping for r in rows))

    def take_evidence(self, session_id: str, owner: str | None = None) -> tuple[HeldFrame, ...]:
        """A judged session's held frames, once (a failed session's, for the decision that records it)."""
        with write_transaction(self.db) as conn:
            row = self._row(conn, session_id, owner)
            if row.status not in (FAILED, PASSED, CONSUMED):
                return ()
            return self._take_evidence(conn, session_id)

    def purge(self) -> int:
        """Delete sessions no longer remembered (their frames go with them); returns how many."""
        with write_transaction(self.db) as conn:
            return conn.execute(liveness_sessions.delete().where(
                liveness_sessions.c.created_at < self.clock() - self._keep_s)).rowcount
