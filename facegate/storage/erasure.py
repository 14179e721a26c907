"""Where a person's face information rests, and the one function that erases it.

``FACE_DATA`` lists every table holding face information of an identified person (templates,
their second opinions, reference photos, certification captures, the live face of a liveness
session and its frames, decision evidence). Withdrawal of consent, the retention purge of deceased subjects and the compliance
report's storage count all read this registry, so a workflow that stores a new kind of face
information adds **one entry** here and is then erased on withdrawal, purged, and counted.

:func:`erase_face_data` runs in the caller's write transaction (with the change-log removes of
the templates, so index replicas drop them) and returns the counts per entry for the audit row.
On SQLite the database runs with ``secure_delete``, and the caller checkpoints the WAL after
commit (:meth:`facegate.storage.store.Store.checkpoint`): no byte of an erased row stays in the
data folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import sqlalchemy as sa

from facegate.clock import utcnow
from facegate.storage import changefeed
from facegate.storage.db import write_transaction
from facegate.storage.schema import (certification_captures, liveness_evidence, liveness_frames,
                                     liveness_sessions, reference_photos, review_cases, review_evidence, store_info,
                                     subjects, template_family, templates)


@dataclass(frozen=True)
class FaceData:
    """One kind of stored face information. ``subjects`` is a SELECT of the ``subject_pk`` of
    everyone it holds information of (the storage count); ``held(pk, subject_id)`` is true where
    the subject of an outer query's row holds some (an indexed lookup: the retention rules ask it
    of a few subjects); ``erase(conn, pk, subject_id)`` deletes one person's rows and returns how
    many went."""
    name: str
    what: str
    subjects: Callable[[], sa.Select]
    held: Callable[[sa.ColumnElement, sa.ColumnElement], sa.ColumnElement[bool]]
    erase: Callable[[sa.Connection, int, str], int]


def _by_pk(column: sa.Column) -> dict:
    """``subjects`` and ``held`` of a table with a ``subject_pk`` column."""
    return {"subjects": lambda: sa.select(column),
            "held": lambda pk, subject_id: sa.exists().where(column == pk)}


def _erase_templates(conn: sa.Connection, pk: int, subject_id: str) -> int:
    rows = conn.execute(sa.select(templates.c.id, templates.c.pack_id).where(templates.c.subject_pk == pk)).all()
    changefeed.log_changes(conn, "remove", [(t.id, pk, t.pack_id) for t in rows])
    conn.execute(templates.delete().where(templates.c.subject_pk == pk))
    return len(rows)


def _erase_family(conn: sa.Connection, pk: int, subject_id: str) -> int:
    return conn.execute(template_family.delete().where(template_family.c.subject_pk == pk)).rowcount


def _erase_references(conn: sa.Connection, pk: int, subject_id: str) -> int:
    return conn.execute(reference_photos.delete().where(reference_photos.c.subject_pk == pk)).rowcount


def _kept_evidence(pk):
    return sa.select(review_cases.c.subject_pk).join(
        review_evidence, review_evidence.c.case_id == review_cases.c.id).where(pk)


def _held_evidence(subject_id_cond):
    return sa.select(liveness_sessions.c.subject_id).join(
        liveness_evidence, liveness_evidence.c.session_id == liveness_sessions.c.id).where(subject_id_cond)


def _evidence_holders() -> sa.Select:
    return sa.select(subjects.c.pk.label("subject_pk")).where(sa.or_(
        subjects.c.pk.in_(_kept_evidence(review_cases.c.subject_pk.is_not(None))),
        subjects.c.subject_id.in_(_held_evidence(liveness_sessions.c.subject_id.is_not(None)))))


def _evidence_held(pk, subject_id):
    return sa.or_(_kept_evidence(review_cases.c.subject_pk == pk).exists(),
                  _held_evidence(liveness_sessions.c.subject_id == subject_id).exists())


def _live_faces(subject_id_cond):
    return sa.select(liveness_sessions.c.subject_id).where(subject_id_cond,
                                                           liveness_sessions.c.embedding_enc.is_not(None))


def _erase_evidence(conn: sa.Connection, pk: int, subject_id: str) -> int:
    cases = sa.select(review_cases.c.id).where(review_cases.c.subject_pk == pk)
    kept = conn.execute(review_evidence.delete().where(review_evidence.c.case_id.in_(cases))).rowcount
    sessions = sa.select(liveness_sessions.c.id).where(liveness_sessions.c.subject_id == subject_id)
    held = conn.execute(liveness_evidence.delete().where(liveness_evidence.c.session_id.in_(sessions))).rowcount
    return kept + held


def _erase_captures(conn: sa.Connection, pk: int, subject_id: str) -> int:
    return conn.execute(certification_captures.delete().where(certification_captures.c.subject_pk == pk)).rowcount


def _erase_live(conn: sa.Connection, pk: int, subject_id: str) -> int:
    ids = sa.select(liveness_sessions.c.id).where(liveness_sessions.c.subject_id == subject_id)
    frames = conn.execute(liveness_frames.delete().where(liveness_frames.c.session_id.in_(ids))).rowcount
    faces = conn.execute(liveness_sessions.update().where(liveness_sessions.c.subject_id == subject_id,
                                                          liveness_sessions.c.embedding_enc.is_not(None))
                         .values(embedding_enc=None)).rowcount
    return frames + faces


# Order matters: second opinions and reference photos go with their templates too (ON DELETE
# CASCADE), but they are counted first so the audit row says what went.
FACE_DATA: tuple[FaceData, ...] = (
    FaceData("template_family", "second-opinion templates (SFace) of enrolled photos",
             **_by_pk(template_family.c.subject_pk), erase=_erase_family),
    FaceData("reference_photos", "enrolment photos' face crops kept for reviewers and re-embedding (console)",
             **_by_pk(reference_photos.c.subject_pk), erase=_erase_references),
    FaceData("templates", "face templates (and stored photos with FACEGATE_STORE_IMAGES)",
             **_by_pk(templates.c.subject_pk), erase=_erase_templates),
    FaceData("certification_captures", "embeddings of certification captures",
             **_by_pk(certification_captures.c.subject_pk), erase=_erase_captures),
    FaceData("liveness", "live-face embeddings and frames of liveness sessions opened for the subject",
             subjects=lambda: sa.select(subjects.c.pk.label("subject_pk")).where(
                 subjects.c.subject_id.in_(_live_faces(liveness_sessions.c.subject_id.is_not(None)))),
             held=lambda pk, subject_id: _live_faces(liveness_sessions.c.subject_id == subject_id).exists(),
             erase=_erase_live),
    FaceData("decision_evidence", "frames a decision rested on: a judged capture's best frames, a reviewed case's "
             "evidence (console)", subjects=_evidence_holders, held=_evidence_held, erase=_erase_evidence),
)


def erase_face_data(conn: sa.Connection, subject_pk: int, subject_id: str) -> dict[str, int]:
    """Delete every kind of the person's face information in ``FACE_DATA`` (caller's transaction)."""
    return {entry.name: int(entry.erase(conn, subject_pk, subject_id)) for entry in FACE_DATA}


def holds_face_data(pk: sa.ColumnElement, subject_id: sa.ColumnElement) -> sa.ColumnElement[bool]:
    """True where the subject of an outer query's row (its ``pk`` and ``subject_id`` columns)
    holds face information of any kind: indexed lookups, so a query over a few subjects (the
    deceased, the withdrawn) does not read every holder in the gallery."""
    return sa.or_(*(entry.held(pk, subject_id) for entry in FACE_DATA))


def stored_subjects() -> sa.Select:
    """The distinct ``subject_pk`` of everyone whose face information is stored now."""
    return sa.union(*(entry.subjects() for entry in FACE_DATA))


def count_stored(conn: sa.Connection) -> int:
    """How many individuals have face information stored now (the filing count, 备案)."""
    held = stored_subjects().subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(held)).scalar_one())


STORED_COUNT = "stored_individuals"


def recent_count(db: sa.Engine, max_age_s: float) -> int:
    """The filing count, counted again only when the last count (kept in ``store_info`` with its
    time, so replicas share it) is older than ``max_age_s``: the count reads every face-data
    table's subject index (benchmarks/compliance_scale.py)."""
    now = utcnow()
    with db.connect() as conn:
        raw = conn.execute(sa.select(store_info.c.value).where(store_info.c.name == STORED_COUNT)).scalar()
    if raw:
        last = json.loads(raw)
        if now - timedelta(seconds=max_age_s) < datetime.fromisoformat(last["at"]) <= now:
            return int(last["count"])
    with db.connect() as conn:
        n = count_stored(conn)
    with write_transaction(db) as conn:
        conn.execute(store_info.delete().where(store_info.c.name == STORED_COUNT))
        conn.execute(store_info.insert().values(name=STORED_COUNT,
                                                value=json.dumps({"count": n, "at": now.isoformat()})))
    return n
