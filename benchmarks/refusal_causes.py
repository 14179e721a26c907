"""Where the refusals come from: failures to acquire by cause, with the quality behind each.

    .venv/bin/python -m benchmarks.refusal_causes            # NUAA dev (live frames) and lfw-dev
    .venv/bin/python -m benchmarks.refusal_causes --json

Every photo goes through the service's gate in each role the pair files use it in
(``facegate.evaluation.operational.acquire``: enrolment = ``Gallery.enrol``'s gate, probe =
``/v1/verify``'s), and each refusal is put under the cause the service answers with
(``cause`` of the refusal: ``too_bright``, ``too_dark``, ``blurred``, ``turned``, ``too_far``,
``second_face``; ``no_face`` has none). A pair fails to acquire under its enrolment photo's cause,
else its probe's. For refused faces the quality measurements (brightness, clipped fraction,
sharpness, pose, inter-eye distance) are summarised per cause.

NUAA dev pairs: ``benchmarks.nuaa_verification.nuaa_pairs`` (every cross-person pair, every
same-person pair across sessions); lfw-dev: ``pairs.txt``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from benchmarks._common import add_shared_option
from facegate.engine import MIN_QUALITY, load_engine
from facegate.errors import FacegateError
from facegate.evaluation.pairs import read_pairs

MEASURES = ("brightness", "clipped", "sharpness", "yaw", "pitch", "inter_eye", "face_size", "score")


def refusal(engine, data: bytes, role: str) -> tuple[str | None, str | None, dict | None]:
    """(error code, cause, quality measurements) of the photo in ``role``; (None, None, None) if acquired."""
    s = engine.settings
    need = s.min_enrol_face_px if role == "enrol" else None
    try:
        engine.face(data, policy="single", min_face_px=need, min_quality=MIN_QUALITY)
        return None, None, None
    except FacegateError as exc:
        quality = exc.detail.get("quality")
        if exc.code == "face_too_small":
            faces = engine.faces(data, policy="largest", embed=False)
            quality = faces[0].quality.as_dict() if faces else None
        return exc.code, exc.detail.get("cause"), quality


def summarise(photos: dict, pairs: list[tuple[str, str]]) -> dict:
    """photos: (name, role) -> (code, cause, quality); pairs: (enrolment, probe) names."""
    by_cause = Counter()
    for a, b in pairs:
        ea, eb = photos[(a, "enrol")], photos[(b, "probe")]
        if ea[0] is None and eb[0] is None:
            continue
        code, cause, _ = ea if ea[0] is not None else eb
        by_cause[cause or code] += 1
    photo_causes = {}
    for role in ("enrol", "probe"):
        refused = [(code, cause, q) for (n, r), (code, cause, q) in photos.items() if r == role and code]
        groups = defaultdict(list)
        for code, cause, q in refused:
            groups[(code, cause or code)].append(q)
        photo_causes[role] = {
            f"{code}:{cause}": {"photos": len(qs), **({"quality_median": {m: round(float(np.median([q[m] for q in qs])), 3)
                                                                          for m in MEASURES}} if all(qs) and qs else {})}
            for (code, cause), qs in sorted(groups.items())}
        photo_causes[role]["photos"] = sum(1 for (n, r) in photos if r == role)
    n = len(pairs)
    return {"pairs": n, "not_acquired": sum(by_cause.values()),
            "fta_rate": round(sum(by_cause.values()) / n, 4) if n else None,
            "fta_by_cause": {k: {"pairs": v, "rate": round(v / n, 4)} for k, v in by_cause.most_common()},
            "photos_refused": photo_causes}


def run_set(engine, images: Path, pairs: list[tuple[str, str]]) -> dict:
    wanted = sorted({(a, "enrol") for a, _ in pairs} | {(b, "probe") for _, b in pairs})
    photos = {(n, r): refusal(engine, (images / n).read_bytes(), r) for n, r in wanted}
    return summarise(photos, pairs)


def main(argv=None) -> int:
    from benchmarks.nuaa_verification import nuaa_frames, nuaa_pairs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shared_option(ap)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    shared = Path(args.shared) / "data"
    nuaa, lfw = shared / "nuaa" / "live", shared / "lfw-dev"
    if not nuaa.is_dir() or not lfw.is_dir():
        print(f"evaluation data not found under {shared}; nothing to measure", file=sys.stderr)
        return 2
    engine = load_engine()
    report = {"command": "python -m benchmarks.refusal_causes " + " ".join(argv or sys.argv[1:]),
              "pack_id": engine.pack_id, "gate": {"min_quality": MIN_QUALITY,
                                                  "min_enrol_face_px": engine.settings.min_enrol_face_px,
                                                  "min_verify_face_px": engine.settings.min_verify_face_px}}
    report["nuaa_dev"] = run_set(engine, nuaa, [(str(a.path.relative_to(nuaa)), str(b.path.relative_to(nuaa)))
                                                for a, b in nuaa_pairs(nuaa_frames(nuaa))])
    report["lfw_dev"] = run_set(engine, lfw / "images", [(p.a, p.b) for p in read_pairs(lfw / "pairs.txt").pairs])
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for name in ("nuaa_dev", "lfw_dev"):
        r = report[name]
        print(f"{name}: {r['pairs']} pairs, FTA {r['fta_rate']:.2%}: "
              + ", ".join(f"{k} {v['rate']:.2%}" for k, v in r["fta_by_cause"].items()))
        for role in ("enrol", "probe"):
            for key, v in r["photos_refused"][role].items():
                if key != "photos":
                    print(f"  {role} {key}: {v['photos']} photos  {v.get('quality_median', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
