"""Bulk enrolment: ``facegate import DIR|MANIFEST.csv``.

Photos are embedded in parallel worker processes (each with its own engine, one onnxruntime
thread), by the pack's embedder and its second opinion (SFace: both templates are stored); the parent does the duplicate search and the database writes, one photo at a time, so
the gallery stays consistent. Each photo has a key, sha256(subject id + photo bytes), recorded in
``import_items`` in the same transaction as its template: a re-run (after a crash or kill -9)
skips photos already done and retries the ones that failed. Failures never stop the batch; each
gets a row in the error report (CSV: subject_id, path, code, message).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.gallery.vectors import set_threads
from facegate.images import face_crop_jpeg
from facegate.storage.private import open_private, private_dir

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
STAGES = ("read", "decode", "detect", "align", "embed", "second")


@dataclass
class ImportItem:
    subject_id: str
    name: str | None
    path: Path
    item_key: str = ""


def scan_dir(root: Path) -> list[ImportItem]:
    """``root/<subject_id>/<photo>``, sorted by subject then file name."""
    items = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for photo in sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            items.append(ImportItem(sub.name, None, photo))
    return items


def read_manifest(path: Path) -> list[ImportItem]:
    """CSV rows ``subject_id,name,path`` (a header row is optional; relative paths are from the CSV's folder)."""
    items = []
    with open(path, newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh)):
            if not row or row[0].startswith("#"):
                continue
            if n == 0 and [c.strip().lower() for c in row[:3]] == ["subject_id", "name", "path"]:
                continue
            if len(row) < 3:
                raise FacegateError("invalid_request", f"{path}:{n + 1}: expected subject_id,name,path")
            sid, name, photo = (c.strip() for c in row[:3])
            p = Path(photo)
            items.append(ImportItem(sid, name or None, p if p.is_absolute() else path.parent / p))
    return items


def load_items(source: Path) -> list[ImportItem]:
    if source.is_dir():
        return scan_dir(source)
    if source.is_file():
        return read_manifest(source)
    raise FacegateError("invalid_request", f"{source}: no such folder or manifest")


def item_key(subject_id: str, data: bytes) -> str:
    return hashlib.sha256(subject_id.encode() + b"\0" + hashlib.sha256(data).digest()).hexdigest()


# ---------------------------------------------------------------------- worker processes
_engine = None
_policy = "single"


def _init_worker(settings: Settings, policy: str) -> None:
    global _engine, _policy
    from facegate.engine import FaceEngine
    _engine = FaceEngine.load(settings)
    _policy = policy


def embed_photo(engine, path: Path, policy: str, min_face_px: int) -> dict:
    """Read, detect, align and embed one photo: a result dict, never an exception."""
    t0 = time.perf_counter()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"ok": False, "code": "unreadable", "message": str(exc), "times": {}}
    t_read = time.perf_counter() - t0
    try:
        face = engine.face(data, policy=policy, min_face_px=min_face_px)
    except FacegateError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message, "times": {"read": t_read}}
    except Exception as exc:                # a corrupt file must not stop the batch
        return {"ok": False, "code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "times": {}}
    second = engine.second_embedding(face)       # the second opinion (SFace), stored beside the template
    reference = None
    if engine.settings.keep_reference:           # the face crop reviewers see and `templates reembed` reads
        bgr, scale = engine.decode(data)
        reference = face_crop_jpeg(bgr, np.asarray(face.box[:4], dtype=np.float64) * scale)
    lt = face.times
    return {"ok": True, "embedding": face.embedding, "second": second, "quality": face.quality.as_dict(),
            "reference": reference,
            "times": {"read": t_read, "decode": lt.decode, "detect": lt.detect, "align": lt.align, "embed": lt.embed,
                      "second": lt.second}}


def _work(task: tuple[int, str, int]) -> tuple[int, dict]:
    idx, path, min_face = task
    return idx, embed_photo(_engine, Path(path), _policy, min_face)


# ---------------------------------------------------------------------- the import
def default_report_path(settings: Settings) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(settings.data_dir) / "import-reports" / f"import-{stamp}-errors.csv"


def run_import(gallery, items: list[ImportItem], *, workers: int | None = None, allow_duplicate: bool = False,
               policy: str = "single", report_path: Path | None = None, progress: bool = True,
               actor: str = "cli", duplicate_fmr: float | None = None) -> dict:
    """Enrol ``items`` into ``gallery``; returns a summary (counts, rate, time per stage)."""
    settings = gallery.settings
    store = gallery.store
    # The parent's searches are single queries on a small index while the workers use every
    # core: FAISS's OpenMP threads would only wait for each other.
    set_threads(1)
    t_start = time.perf_counter()
    workers = max(1, int(workers or os.cpu_count() or 1))

    seen: set[str] = set()
    unique: list[ImportItem] = []
    unreadable: list[tuple[ImportItem, str]] = []
    for it in items:
        try:
            it.item_key = item_key(it.subject_id, it.path.read_bytes())
        except OSError as exc:
            unreadable.append((it, str(exc)))
            continue
        if it.item_key not in seen:
            seen.add(it.item_key)
            unique.append(it)
    done = store.import_done([it.item_key for it in unique])
    pending = [it for it in unique if it.item_key not in done]
    names: dict[str, str | None] = {}
    for it in items:
        names.setdefault(it.subject_id, it.name)
    created = store.ensure_subjects(names, actor=actor)

    if report_path:
        report_path = Path(report_path)
        report_path.parent.mkdir(parents=True, exist_ok=True)
    else:
        report_path = default_report_path(settings)
        private_dir(report_path.parent)
    counts = {"enrolled": 0, "errors": 0, "duplicates_allowed": 0}
    by_code: dict[str, int] = {}
    stage = {s: 0.0 for s in STAGES} | {"db": 0.0}

    with open_private(report_path, "w", newline="", encoding="utf-8") as rfh:
        report = csv.writer(rfh)
        report.writerow(["subject_id", "path", "code", "message"])

        def fail(it: ImportItem, code: str, message: str) -> None:
            counts["errors"] += 1
            by_code[code] = by_code.get(code, 0) + 1
            report.writerow([it.subject_id, str(it.path), code, message])
            rfh.flush()
            if it.item_key:
                store.record_import_error(it.item_key, it.subject_id, str(it.path), code)

        for it, msg in unreadable:
            fail(it, "unreadable", msg)

        bar = tqdm(total=len(pending), unit="photo", disable=not progress, file=sys.stderr, dynamic_ncols=True,
                   desc="import", smoothing=0.05)

        def handle(it: ImportItem, res: dict) -> None:
            for k, v in res["times"].items():
                stage[k] += v
            if not res["ok"]:
                fail(it, res["code"], res["message"])
            else:
                t0 = time.perf_counter()
                try:
                    image = it.path.read_bytes() if settings.store_images else None
                    rec = gallery.enrol_embedding(it.subject_id, res["embedding"], res["quality"],
                                            source=f"import:{it.path.name}", allow_duplicate=allow_duplicate,
                                            image=image, actor=actor, duplicate_fmr=duplicate_fmr,
                                            import_item={"item_key": it.item_key, "path": str(it.path)},
                                            second=res.get("second"), reference=res.get("reference"))
                    counts["enrolled"] += 1
                    counts["duplicates_allowed"] += bool(rec["duplicate_of"])
                except FacegateError as exc:
                    fail(it, exc.code, exc.message)
                stage["db"] += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(enrolled=counts["enrolled"], errors=counts["errors"], refresh=False)

        min_face = settings.min_enrol_face_px
        try:
            if workers == 1 or len(pending) < 2:
                for it in pending:
                    handle(it, embed_photo(gallery.engine, it.path, policy, min_face))
            else:
                worker_settings = dataclasses.replace(settings, intra_op_threads=1)
                ctx = mp.get_context("spawn")   # never fork a process that holds onnxruntime sessions
                with ctx.Pool(workers, initializer=_init_worker, initargs=(worker_settings, policy)) as pool:
                    tasks = [(i, str(it.path), min_face) for i, it in enumerate(pending)]
                    for idx, res in pool.imap_unordered(_work, tasks, chunksize=2):
                        handle(pending[idx], res)
        finally:
            bar.close()
            gallery.save()

    elapsed = time.perf_counter() - t_start
    processed = counts["enrolled"] + counts["errors"] - len(unreadable)
    per_photo = {k: round(1000 * v / max(processed, 1), 2) for k, v in stage.items()}
    return {
        "photos": len(items), "unique_photos": len(unique), "already_done": len(done), "processed": processed,
        "enrolled": counts["enrolled"], "errors": counts["errors"], "errors_by_code": by_code,
        "duplicates_allowed": counts["duplicates_allowed"],
        "subjects_created": created, "workers": workers, "elapsed_s": round(elapsed, 2),
        "photos_per_s": round(processed / elapsed, 2) if elapsed > 0 else None,
        "ms_per_photo_by_stage": per_photo,
        "note": "stage times: read..embed are summed over worker processes (CPU time across workers), db is the "
                "parent's duplicate search + encrypted insert + index update",
        "error_report": str(report_path),
    }
