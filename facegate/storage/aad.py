"""Every encrypted column, and the associated data (AAD) that binds each ciphertext to its row.

AES-GCM authenticates the AAD with the ciphertext, so a template copied to another subject, or
a capture moved to another pack, fails to decrypt instead of matching the wrong person.

``ENCRYPTED`` lists every table holding ciphertexts. Key rotation and key-usage counts iterate
it, so a workflow that adds an encrypted table adds one entry here and cannot be forgotten by
rotation (``tests/test_store.py`` checks that every ``*_enc`` column of the schema is listed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import sqlalchemy as sa

from facegate.storage.schema import (certification_captures, liveness_evidence, liveness_frames, liveness_sessions,
                                     operator_sessions, operator_totp, reference_photos, review_evidence, subjects,
                                     template_family, templates)


def embedding_aad(subject_id: str, pack_id: str) -> bytes:
    return f"facegate:template:v1:{subject_id}:{pack_id}".encode()


def family_aad(subject_id: str, pack_id: str, model: str, template_id: int) -> bytes:
    """A second opinion is bound to its subject, pack and model and to the template it sits beside."""
    return f"facegate:template-family:v1:{subject_id}:{pack_id}:{model}:{int(template_id)}".encode()


def image_aad(subject_id: str, pack_id: str) -> bytes:
    return f"facegate:image:v1:{subject_id}:{pack_id}".encode()


def capture_aad(subject_id: str, pack_id: str) -> bytes:
    return f"facegate:capture:v1:{subject_id}:{pack_id}".encode()


def live_embedding_aad(session_id: str) -> bytes:
    return f"facegate:liveness:v1:{session_id}".encode()


def frame_aad(session_id: str, seq: int) -> bytes:
    return f"facegate:frame:v1:{session_id}:{seq}".encode()


def observation_aad(session_id: str, seq: int) -> bytes:
    return f"facegate:observation:v1:{session_id}:{seq}".encode()


def reference_aad(subject_id: str, template_id: int) -> bytes:
    """An enrolment photo's face crop is bound to its subject and to the template made from it."""
    return f"facegate:reference:v1:{subject_id}:{int(template_id)}".encode()


def held_frame_aad(session_id: str, seq: int) -> bytes:
    """A judged session's evidence frame, waiting for the decision that consumes the session."""
    return f"facegate:held-frame:v1:{session_id}:{int(seq)}".encode()


def evidence_aad(case_id: int, kind: str, seq: int) -> bytes:
    """A review case's evidence frame, bound to the case, its kind (frame | still) and position."""
    return f"facegate:evidence:v1:{int(case_id)}:{kind}:{int(seq)}".encode()


def totp_aad(operator: str) -> bytes:
    return f"facegate:totp:v1:{operator}".encode()


def pending_totp_aad(operator: str, session_hash: str) -> bytes:
    """The TOTP secret an enrolling session was shown, bound to that session."""
    return totp_aad(operator) + b":pending:" + session_hash.encode()


@dataclass(frozen=True)
class EncryptedTable:
    """A table with ciphertext columns. Each row names its data key in ``key_id``; ``aad`` maps
    a ciphertext column to the AAD of a row (read by :func:`rows_to_reencrypt`, which adds the
    owning subject's ``subject_id`` for tables with a ``subject_pk``)."""
    table: sa.Table
    key: str
    aad: Mapping[str, Callable[[Mapping], bytes]]


ENCRYPTED: tuple[EncryptedTable, ...] = (
    EncryptedTable(templates, "id", {
        "embedding_enc": lambda r: embedding_aad(r["subject_id"], r["pack_id"]),
        "image_enc": lambda r: image_aad(r["subject_id"], r["pack_id"]),
    }),
    EncryptedTable(template_family, "id", {
        "embedding_enc": lambda r: family_aad(r["subject_id"], r["pack_id"], r["model"], r["template_id"]),
    }),
    EncryptedTable(certification_captures, "certification_id", {
        "embedding_enc": lambda r: capture_aad(r["subject_id"], r["pack_id"]),
    }),
    EncryptedTable(liveness_sessions, "id", {"embedding_enc": lambda r: live_embedding_aad(r["id"])}),
    EncryptedTable(liveness_frames, "id", {"data_enc": lambda r: frame_aad(r["session_id"], r["seq"]),
                                           "observation_enc": lambda r: observation_aad(r["session_id"], r["seq"])}),
    EncryptedTable(reference_photos, "template_id", {
        "photo_enc": lambda r: reference_aad(r["subject_id"], r["template_id"]),
    }),
    EncryptedTable(liveness_evidence, "id", {"data_enc": lambda r: held_frame_aad(r["session_id"], r["seq"])}),
    EncryptedTable(review_evidence, "id", {"data_enc": lambda r: evidence_aad(r["case_id"], r["kind"], r["seq"])}),
    EncryptedTable(operator_totp, "operator", {"secret_enc": lambda r: totp_aad(r["operator"])}),
    EncryptedTable(operator_sessions, "id_hash", {
        "totp_pending_enc": lambda r: pending_totp_aad(r["operator"], r["id_hash"]),
    }),
)


def rows_to_reencrypt(entry: EncryptedTable, not_key: str, limit: int) -> sa.Select:
    """Up to ``limit`` rows of ``entry`` encrypted under another key than ``not_key``, with
    what their AAD needs."""
    t = entry.table
    cols = [t.c[entry.key], t.c.key_id, *(t.c[name] for name in entry.aad)]
    cols += [t.c[name] for name in ("pack_id", "model", "template_id", "session_id", "seq", "case_id", "kind",
                                    "operator")
             if name in t.c and name != entry.key]
    q = sa.select(*cols)
    if "subject_pk" in t.c:
        q = sa.select(*cols, subjects.c.subject_id).join(subjects, subjects.c.pk == t.c.subject_pk)
    return q.where(t.c.key_id != not_key).limit(limit)
