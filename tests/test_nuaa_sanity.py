"""East-Asian sanity check on NUAA live webcam frames (Chinese volunteers, 640x480).

A few frames, taken deterministically (the first frame of the first and of the last session of
each chosen person), verified at the LFW-calibrated default threshold: the same person across
sessions must match, different people must not. The full check, with the known hard pair of
people (0002/0003, who do false-match at this threshold), is benchmarks/nuaa_verification.py.
"""
from __future__ import annotations

import itertools

import pytest

from conftest import need_shared
from facegate.matching.decisions import threshold
from facegate.matching.scores import similarity

# people with two or more sessions, plus one with a single session as an extra impostor
SUBJECTS = ("0001", "0005", "0007", "0008")


def session_frames(root, subject):
    """First frame (by frame number) of the first and last session of a subject."""
    by_session: dict[str, list] = {}
    for p in (root / subject).glob("*.jpg"):
        _, _, _, session, frame = p.stem.split("_")
        by_session.setdefault(session, []).append((int(frame), p))
    sessions = sorted(by_session)
    chosen = {sessions[0], sessions[-1]}
    return [min(by_session[s])[1] for s in sorted(chosen)]


@pytest.fixture(scope="module")
def nuaa_embeddings(engine):
    root = need_shared("data", "nuaa", "live")
    out = []
    for subject in SUBJECTS:
        for path in session_frames(root, subject):
            out.append((subject, path.name, engine.face(path.read_bytes(), policy="largest").embedding))
    return out


def test_same_person_across_sessions_matches_and_different_people_do_not(engine, nuaa_embeddings):
    point = threshold(engine.operating_points, engine.settings.target_fmr)
    genuine, impostor = [], []
    for (sa, na, ea), (sb, nb, eb) in itertools.combinations(nuaa_embeddings, 2):
        score = similarity(ea, eb)
        decision = {"score": score, "match": point.matches(score)}
        (genuine if sa == sb else impostor).append((na, nb, decision))
    assert len(genuine) == 3 and len(impostor) == 18
    assert point.fmr == engine.settings.target_fmr
    missed = [(a, b, d["score"]) for a, b, d in genuine if not d["match"]]
    false_matches = [(a, b, d["score"]) for a, b, d in impostor if d["match"]]
    assert not missed, f"same person across sessions rejected: {missed}"
    assert not false_matches, f"different people matched: {false_matches}"
    assert min(d["score"] for *_, d in genuine) > max(d["score"] for *_, d in impostor)
