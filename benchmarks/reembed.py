"""``facegate templates reembed`` measured: templates of the engine's pack made from kept reference photos.

``python -m benchmarks.reembed [--subjects 500]``

Takes ``--subjects`` LFW dev people (first photo each), keeps each one's reference crop (as
enrolment does: 2x the face box, <= 400 px, JPEG, encrypted) under a template of an "old" pack,
then runs :func:`facegate.gallery.backfill.reembed` with the default pack and reports the time
per template, its stages, and the agreement with embedding the original photo directly
(cosine of the re-embedded template and the direct one). Appends to
``benchmarks/results/console.md``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import shared_dir, uptime

RESULTS = Path(__file__).resolve().parent / "results" / "console.md"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=500)
    args = ap.parse_args(argv)
    from facegate.config import Settings
    from facegate.engine import FaceEngine
    from facegate.errors import FacegateError
    from facegate.gallery.backfill import reembed
    from facegate.gallery.gallery import Gallery

    images = shared_dir() / "data" / "lfw-dev" / "images"
    people = sorted(p for p in images.iterdir() if p.is_dir())[: args.subjects * 2]
    settings = Settings.load(data_dir=tempfile.mkdtemp(prefix="fg-reembed-"), database_url="")
    engine = FaceEngine.load(settings)
    gallery = Gallery(settings, engine)
    store = gallery.store
    direct, t0 = {}, time.perf_counter()
    for person in people:
        if len(direct) >= args.subjects:
            break
        photo = sorted(person.glob("*.jpg"))[0].read_bytes()
        try:
            face = engine.face(photo, policy="single", min_face_px=settings.min_enrol_face_px)
        except FacegateError:
            continue
        store.add_subject(person.name)
        store.add_template(person.name, np.ones(8, np.float32), "old-pack", reference=gallery.reference_of(photo, face))
        direct[person.name] = face.embedding
    prepare_s = time.perf_counter() - t0
    res = reembed(store, engine, actor="benchmark")
    failed = {f["subject_id"] for f in res["failed"]}
    cos = [float(store.subject_templates(n, engine.pack_id)[0][1] @ e) for n, e in direct.items() if n not in failed]
    causes: dict[str, int] = {}
    for f in res["failed"]:
        causes[f["code"]] = causes.get(f["code"], 0) + 1
    gallery.close()
    out = {"subjects": len(direct), "reembedded": res["reembedded"], "failed": len(res["failed"]), "failed_by_code": causes,
           "elapsed_s": res["elapsed_s"], "per_template_ms": res["per_template_ms"], "stage_s": res["stage_s"],
           "extrapolated_10k_min": round(res["per_template_ms"] * 10_000 / 60_000, 1),
           "cosine_vs_direct_median": round(float(np.median(cos)), 4), "cosine_min": round(min(cos), 4),
           "prepare_s": round(prepare_s, 1), "load": uptime()}
    print(json.dumps(out))
    with RESULTS.open("a") as fh:
        fh.write(f"\n`python -m benchmarks.reembed --subjects {args.subjects}`: {out['reembedded']} of {out['subjects']} "
                 f"LFW dev reference photos re-embedded ({out['failed']} failed: {out['failed_by_code']}) in {out['elapsed_s']} s, "
                 f"**{out['per_template_ms']} ms per template** (detect+embed+SFace {out['stage_s']['embed']} s, "
                 f"store {out['stage_s']['store']} s); 10,000 subjects at that rate: ~{out['extrapolated_10k_min']} min "
                 f"(extrapolated, not run); cosine to embedding the original photo: median {out['cosine_vs_direct_median']}, "
                 f"min {out['cosine_min']}. {out['load']}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
