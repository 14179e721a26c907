"""Gallery benchmark on LFW (dev half): bulk import throughput and 1:N identification accuracy.

    .venv/bin/python -m benchmarks.gallery_import                 # full run, writes benchmarks/results/gallery.md
    .venv/bin/python -m benchmarks.gallery_import --skip-import   # reuse the import, redo the 1:N part
    .venv/bin/python -m benchmarks.gallery_import --limit 500     # a quick smoke run on the first 500 photos

Part 1, throughput: ``facegate import ../shared/data/lfw-dev/images --workers 2`` (the real CLI,
timed end to end: worker start-up, detection, alignment, embedding, duplicate search, encrypted
insert, index snapshot) into a fresh data dir. Every one of the 6,922 photos goes in: each
person is a subject, each photo a template. ``--policy central`` because LFW photos are crops
centred on the named person with bystanders at the edges (``single`` would reject those photos
as ``multiple_faces``); ``--allow-duplicate`` so that every photo gets a template, with the
number of photos the duplicate check flagged reported instead of blocked.

Part 2, 1:N: a second gallery built the way an operator would (Gallery.enrol_embedding, duplicate
check on) from the embeddings the import made. Identities are sorted by name; those with index
% 5 == 0 are HELD OUT (never enrolled): all their photos are non-mated probes (FPIR). Each other
identity enrols its FIRST photo (sorted by file name; the first that yielded a face); its other
photos are mated probes (rank-1 accuracy, FNIR). Each probe runs ``Gallery.identify`` at the
1:N default operating point (``FACEGATE_IDENTIFY_FMR``) with the margin rule, with its SFace
embedding: every template has its SFace template (the import makes both), so the search is
decided by the fused rule (the shortlist rescored with the mean of the two cosines, at the fused
table's point); the single-model rule (fr_feature alone, the 1:1 table) is replayed from the same
search beside it.

Part 3, memory: the resident size of an engine with and without the second opinion, and the
database bytes per enrolled photo.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, pct, shared_dir, uptime


def run_import(images: Path, data_dir: Path, workers: int, limit: int | None) -> dict:
    env = dict(os.environ, FACEGATE_DATA_DIR=str(data_dir))
    cmd = [sys.executable, "-m", "facegate", "import", str(images), "--workers", str(workers), "--policy", "central",
           "--allow-duplicate", "--json", "--errors", str(data_dir / "import-errors.csv")]
    if limit:
        cmd += ["--limit", str(limit)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}): {proc.stdout}")
    summary = json.loads(proc.stdout)
    summary["command_wall_s"] = round(wall, 2)
    summary["command"] = " ".join(["FACEGATE_DATA_DIR=" + str(data_dir), "facegate"] + cmd[3:])
    return summary


def photo_embeddings(data_dir: Path, engine) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """path -> (embedding, SFace embedding), read back (decrypted) from the import's store."""
    import sqlalchemy as sa

    from facegate.config import Settings
    from facegate.storage.schema import import_items
    from facegate.storage.store import Store
    store = Store.open(Settings.load(data_dir=str(data_dir)))
    with store.db.connect() as conn:
        rows = conn.execute(sa.select(import_items.c.path, import_items.c.template_id)
                            .where(import_items.c.status == "done")).all()
    ids, vecs = store.embeddings_by_id([r.template_id for r in rows], engine.pack_id)
    by_id = dict(zip(ids.tolist(), vecs))
    second = store.family_embeddings(ids.tolist(), engine.pack_id, engine.second_model) if engine.second_model else {}
    store.close()
    return {r.path: (by_id[r.template_id], second.get(r.template_id)) for r in rows if r.template_id in by_id}


def identification(images: Path, data_dir: Path, engine, limit: int | None) -> dict:
    import dataclasses

    from facegate.config import Settings
    from facegate.gallery.gallery import Gallery
    from facegate.matching.decisions import threshold

    emb = photo_embeddings(data_dir, engine)
    people = sorted(p.name for p in images.iterdir() if p.is_dir())
    photos = {n: [str(p) for p in sorted((images / n).glob("*.jpg")) if str(p) in emb] for n in people}
    if limit:
        people = [n for n in people if photos[n]]
    held_out = {n for i, n in enumerate(people) if i % 5 == 0}
    enrolled = [n for n in people if n not in held_out and photos[n]]

    gdir = data_dir.parent / (data_dir.name + "-1n")
    if gdir.exists():
        import shutil
        shutil.rmtree(gdir)
    settings = dataclasses.replace(Settings.load(data_dir=str(gdir)), index_sync_s=3600.0)
    g = Gallery(settings, engine)
    g.store.ensure_subjects({n: n.replace("_", " ") for n in enrolled})
    t0 = time.perf_counter()
    flagged = 0
    for n in enrolled:
        fr, sf = emb[photos[n][0]]
        rec = g.enrol_embedding(n, fr, source="benchmark", allow_duplicate=True, second=sf)
        flagged += bool(rec["duplicate_of"])
    enrol_s = time.perf_counter() - t0

    mated = [(n, p) for n in enrolled for p in photos[n][1:]]
    nonmated = [(n, p) for n in sorted(held_out) for p in photos[n]]
    # Identify every probe once through the product path (timed) at the 1:N default operating
    # point (FACEGATE_IDENTIFY_FMR, Gallery.identify's own default), keeping the exact ranked
    # subject lists of both rules so the decisions can be replayed at other operating points.
    default_fmr = threshold(engine.operating_points, engine.settings.identify_fmr).fmr
    lat, ranked, rules = [], {}, {}
    for n, p in mated + nonmated:
        fr, sf = emb[p]
        t = time.perf_counter()
        res = g.identify(fr, top_k=5, second=sf)
        lat.append(time.perf_counter() - t)
        rules[res.rule] = rules.get(res.rule, 0) + 1
        ranked[p] = {"answer": res,
                     "single": [(c.subject_id, c.score) for c in g._rank_subjects(fr, 5).candidates],
                     "fused": [(c.subject_id, c.score) for c in g._rank_subjects(fr, 5, sf).candidates]}
    margin = settings.identify_margin
    points = {rule: _replay(rule, table, ranked, mated, nonmated, margin,
                            table.identify_fmr if rule == "fused" and table.identify_fmr else default_fmr)
              for rule, table in (("single", engine.operating_points), ("fused", engine.fused_points))
              if table is not None}
    g.close()
    dump = {p: {"kind": kind, "who": n, "single": ranked[p]["single"][:2], "fused": ranked[p]["fused"][:2]}
            for kind, probes in (("mated", mated), ("nonmated", nonmated)) for n, p in probes}
    (data_dir.parent / "ranked.json").write_text(json.dumps(dump))
    nmt = max(len(mated), 1)
    closed = {}
    for rule in points:
        closed[rule] = {"rank1": round(sum(bool(ranked[p][rule]) and ranked[p][rule][0][0] == n
                                           for n, p in mated) / nmt, 4),
                        "rank5": round(sum(n in [s for s, _ in ranked[p][rule][:5]] for n, p in mated) / nmt, 4)}
    best_nonmated = [ranked[p]["single"][0][1] for _, p in nonmated if ranked[p]["single"]]
    lat_ms = np.asarray(lat) * 1000
    return {
        "identities": len(people), "enrolled_identities": len(enrolled), "held_out_identities": len(held_out),
        "gallery_templates": len(enrolled), "enrol_duplicate_flagged": flagged,
        "enrol_per_s": round(len(enrolled) / enrol_s, 1), "identify_margin": margin,
        "mated_probes": len(mated), "nonmated_probes": len(nonmated), "rules_used": rules,
        "rank1_closed_set": closed["single"]["rank1"], "rank5_closed_set": closed["single"]["rank5"],
        "closed_set": closed,
        "operating_points": points["single"], "fused_operating_points": points.get("fused", []),
        "nonmated_best_score_p99": round(pct(best_nonmated, 99), 4) if best_nonmated else None,
        "identify_ms_p50": round(pct(lat_ms, 50), 2) if len(lat_ms) else None,
        "identify_ms_p99": round(pct(lat_ms, 99), 2) if len(lat_ms) else None,
    }


# Non-mated probes that are in fact an enrolled person (looked at side by side, 2026-12-04): one
# person under two names in LFW (Noer Muis / Noer Moeis, Hassan Wirajuda / Hasan Wirayuda x2,
# Chyung Dai-chul / Dai Chul Chyung, William Pryor Jr / Bill Pryor), an identical photo under
# another name (Eva Amurri / Emmy Rossum), a mislabelled photo (the "Anja Paerson" photo shows
# Janica Kostelic's HT headband) and one person in one session under two names (Takahiro Mori /
# Shinya Taniguchi). Every model "identifies" them; the FPIR column "without these" leaves them out.
SAME_PERSON_NONMATED = {"Noer_Muis_0001.jpg", "Hassan_Wirajuda_0001.jpg", "Hassan_Wirajuda_0002.jpg",
                        "Chyung_Dai-chul_0001.jpg", "William_Pryor_Jr_0001.jpg", "Eva_Amurri_0001.jpg",
                        "Janica_Kostelic_0002.jpg", "Takahiro_Mori_0001.jpg"}


def _replay(rule: str, table, ranked: dict, mated: list, nonmated: list, margin: float, default_fmr: float) -> list:
    """The margin rule replayed on ``rule``'s ranked lists at the table's points."""
    from facegate.matching.decisions import threshold
    points = []
    for fmr in sorted({p["fmr"] for p in table.points if p["fmr"] <= 1e-3}, reverse=True):
        thr = round(threshold(table, fmr).threshold, 6)

        def decide(rk):
            if not rk or rk[0][1] < thr:
                return "no_match", None
            if len(rk) > 1 and rk[0][1] - rk[1][1] < margin:
                return "ambiguous", None
            return "match", rk[0][0]

        m = {"tpir": 0, "wrong": 0, "ambiguous": 0, "no_match": 0}
        for n, p in mated:
            d, who = decide(ranked[p][rule])
            if d == "match":
                m["tpir" if who == n else "wrong"] += 1
            else:
                m[d] += 1
        nm = {"match": 0, "ambiguous": 0, "no_match": 0}
        clean_matches = clean = 0
        for n, p in nonmated:
            d = decide(ranked[p][rule])[0]
            nm[d] += 1
            if Path(p).name not in SAME_PERSON_NONMATED:
                clean += 1
                clean_matches += d == "match"
        if fmr == default_fmr:   # the replay must agree with Gallery.identify itself where it used this rule
            used = [p for _, p in mated + nonmated if ranked[p]["answer"].rule == rule]
            agree = sum(decide(ranked[p][rule])[0] == ranked[p]["answer"].decision for p in used)
            assert agree == len(used), "replayed decisions differ from Gallery.identify"
        nmt, nnm = max(len(mated), 1), max(len(nonmated), 1)
        points.append({"fmr": fmr, "threshold": thr, "default": fmr == default_fmr,
                       "tpir": round(m["tpir"] / nmt, 4), "fnir": round(1 - m["tpir"] / nmt, 4),
                       "mated_wrong": m["wrong"], "mated_ambiguous": m["ambiguous"], "mated_no_match": m["no_match"],
                       "fpir": round(nm["match"] / nnm, 4), "nonmated_ambiguous": nm["ambiguous"],
                       "fpir_any_candidate": round((nm["match"] + nm["ambiguous"]) / nnm, 4),
                       "nonmated_matches": nm["match"], "fpir_without_same_person": round(clean_matches / max(clean, 1), 4),
                       "nonmated_matches_without_same_person": clean_matches})
    return points


MEMORY_PROBE = """
import glob, json, sys
from facegate.config import Settings
from facegate.engine import FaceEngine
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024
e = FaceEngine.load(Settings.load(second_opinion=sys.argv[1] == 'on', intra_op_threads=1))
loaded = rss()
for p in sorted(glob.glob(sys.argv[2] + '/*/*.jpg'))[:30]:
    f = e.face(open(p, 'rb').read(), policy='central')
    e.second_embedding(f)
print(json.dumps({'loaded_mb': round(loaded, 1), 'after_30_faces_mb': round(rss(), 1)}))
"""


def engine_memory(images: Path) -> dict:
    """Resident size of one engine process with and without the second opinion."""
    out = {}
    for mode in ("off", "on"):
        proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, mode, str(images)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True, check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def store_bytes(data_dir: Path) -> dict:
    """Bytes of the import's database per enrolled photo, and of the second-opinion rows."""
    import sqlalchemy as sa

    from facegate.config import Settings
    from facegate.storage.store import Store
    store = Store.open(Settings.load(data_dir=str(data_dir)))
    with store.db.connect() as conn:
        n = conn.execute(sa.text("SELECT COUNT(*) FROM templates")).scalar()
        fam = conn.execute(sa.text("SELECT COUNT(*), COALESCE(SUM(LENGTH(embedding_enc)), 0) FROM template_family")).one()
        tmpl = conn.execute(sa.text("SELECT COALESCE(SUM(LENGTH(embedding_enc)), 0) FROM templates")).scalar()
    store.checkpoint()
    store.close()
    size = (data_dir / "facegate.db").stat().st_size
    return {"templates": int(n), "family_rows": int(fam[0]), "template_ciphertext_bytes": int(tmpl),
            "family_ciphertext_bytes": int(fam[1]), "db_file_bytes": size,
            "db_bytes_per_template": round(size / max(int(n), 1))}


def write_markdown(path: Path, imp: dict, ident: dict, load_before: str, load_after: str, argv: list[str],
                   memory: dict | None = None, storage: dict | None = None) -> None:
    st = imp["ms_per_photo_by_stage"]
    total_stage = sum(v for k, v in st.items() if k != "db")
    rows = "\n".join(f"| {k} | {v} | {100 * v / max(total_stage, 1e-9):.0f}% of worker time |" for k, v in st.items()
                     if k != "db")
    point_rows = _point_rows(ident["operating_points"])
    fused_rows = _point_rows(ident.get("fused_operating_points") or [])
    closed = ident.get("closed_set", {})
    mem = memory or {}
    sto = storage or {}
    text = f"""## Gallery: bulk import and 1:N identification on LFW (dev half)

Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with
`.venv/bin/python -m benchmarks.gallery_import {' '.join(argv)}`. The machine is shared with other
jobs: `uptime` before: `{load_before}`; after: `{load_after}`. Throughput figures are therefore
pessimistic; rerun the one command above on a quiet machine.

### Bulk import throughput (`facegate import DIR --workers {imp['workers']}`)

Command: `{imp['command']}`

| | |
|---|---|
| photos / subjects | {imp['photos']} / {imp['subjects_created']} |
| enrolled | {imp['enrolled']} |
| errors | {imp['errors']} ({', '.join(f'{k}: {v}' for k, v in sorted(imp['errors_by_code'].items())) or 'none'}) |
| photos flagged by the duplicate check (another subject above threshold; allowed) | {imp['duplicates_allowed']} |
| wall time of the command | {imp['command_wall_s']} s (import loop {imp['elapsed_s']} s) |
| **throughput** | **{imp['photos_per_s']} photos/s** on {imp['workers']} worker processes |

Where the time goes, per photo (worker stages are CPU time inside one worker; with
{imp['workers']} workers in parallel the wall time per photo is about their sum / {imp['workers']}):

| stage | ms / photo | share |
|---|---|---|
{rows}
| db (parent: duplicate 1:N search, AES-GCM encrypt, insert + change log + audit row, index update) | {st['db']} | serial in the parent |

### 1:N identification (default operating point, margin rule)

Design: identities sorted by name; every fifth (index % 5 == 0) is held out and never enrolled,
so its photos are non-mated probes. Each other identity enrols its first photo; its remaining
photos are mated probes. Scores are exact cosine on the decrypted templates (the index only
proposes candidates), i.e. the same calibrated scale as 1:1 verify.

| | |
|---|---|
| identities / enrolled / held out | {ident['identities']} / {ident['enrolled_identities']} / {ident['held_out_identities']} |
| gallery templates | {ident['gallery_templates']} (enrolment duplicate flags at the default point: {ident['enrol_duplicate_flagged']}) |
| mated / non-mated probes | {ident['mated_probes']} / {ident['nonmated_probes']} |
| **rank-1 accuracy (closed set: best subject, regardless of threshold)** | **{ident['rank1_closed_set']}** (rank-5 {ident['rank5_closed_set']}) |
| 99th percentile of the best non-mated score | {ident['nonmated_best_score_p99']} |
| identify latency p50 / p99 (`Gallery.identify`, exact re-rank, {ident['gallery_templates']} templates) | {ident['identify_ms_p50']} / {ident['identify_ms_p99']} ms |

Open-set decisions (margin rule {ident['identify_margin']}) at the calibrated operating points;
**FPIR** = share of non-mated probes answered `match` (a wrong identity), TPIR = mated probes
answered `match` with the right subject:

| FMR point | threshold | TPIR | FNIR | mated: wrong / ambiguous / below | **FPIR** (probes) | FPIR without the 8 same-person probes | non-mated ambiguous | FPIR incl. ambiguous |
|---|---|---|---|---|---|---|---|---|
{point_rows}

### The second opinion: the same searches decided by the fused rule

Every enrolled template has its SFace template (made by the import); each probe brings its SFace
embedding. `Gallery.identify` used the rules {ident.get('rules_used')}. The fused rule ranks the
same index shortlist by the mean of the two cosines and decides at the fused table's point
(`facegate/calibration/default-fused-sface.json`), margin rule {ident['identify_margin']} kept.
Closed-set rank-1 / rank-5: fused {closed.get('fused', {}).get('rank1')} / {closed.get('fused', {}).get('rank5')},
single {closed.get('single', {}).get('rank1')} / {closed.get('single', {}).get('rank5')}.

| FMR point (fused table) | threshold | TPIR | FNIR | mated: wrong / ambiguous / below | **FPIR** (probes) | FPIR without the 8 same-person probes | non-mated ambiguous | FPIR incl. ambiguous |
|---|---|---|---|---|---|---|---|---|
{fused_rows}

### Memory with two templates

| | without SFace | with SFace |
|---|---|---|
| engine process, loaded (MB resident) | {mem.get('off', {}).get('loaded_mb')} | {mem.get('on', {}).get('loaded_mb')} |
| engine process after 30 faces (MB resident) | {mem.get('off', {}).get('after_30_faces_mb')} | {mem.get('on', {}).get('after_30_faces_mb')} |

The vector index is unchanged (fr_feature templates only: SFace templates are read from the
database for the shortlist, never held in memory). Database: {sto.get('templates')} templates and
{sto.get('family_rows')} SFace rows; ciphertext {sto.get('template_ciphertext_bytes')} B of templates and
{sto.get('family_ciphertext_bytes')} B of SFace templates; the file is {sto.get('db_file_bytes')} B,
{sto.get('db_bytes_per_template')} B per enrolled photo (the import journal and audit rows included).

Notes: LFW's dev half has 3,554 people but most have one photo, so only people with 2+
photos give mated probes; low-quality photos are not filtered (the import's quality gate only
rejects the worst), which is why FNIR is higher than a controlled enrolment would see.
FPIR grows with gallery size at a fixed threshold: a non-mated probe meets N subjects, so with
independent comparisons at false-match rate f, P(some subject above threshold) = 1-(1-f)^N =
{expected(1e-4, ident['gallery_templates'])} for N = {ident['gallery_templates']} at f = 1e-4 and
{expected(1e-5, ident['gallery_templates'])} at f = 1e-5, which is what the measured "FPIR incl.
ambiguous" column shows. The 1:1 operating point is therefore too lax for 1:N (and for the
enrolment duplicate check: during the full import {imp['duplicates_allowed']} of {imp['enrolled']}
photos matched some OTHER subject above the default threshold). For 1:N on a gallery of N
subjects, choose the operating point by FPIR ~ N x FMR (pass `fmr` per request, or calibrate a
stricter point); at city scale (N = 18M) this needs FMR ~1e-9, beyond what this model and this
calibration set (LFW impostor pairs) can support: plan on 1:1 verification against a claimed
identity, with 1:N as an investigative lead list for a human.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def expected(fmr: float, n: int) -> str:
    return f"{1 - (1 - fmr) ** n:.3f}"


def _point_rows(points: list[dict]) -> str:
    return "\n".join(
        f"| {p['fmr']:g}{' (default)' if p['default'] else ''} | {p['threshold']} | {p['tpir']} | {p['fnir']} | "
        f"{p['mated_wrong']} / {p['mated_ambiguous']} / {p['mated_no_match']} | **{p['fpir']}** ({p['nonmated_matches']}) | "
        f"{p['fpir_without_same_person']} ({p['nonmated_matches_without_same_person']}) | "
        f"{p['nonmated_ambiguous']} | {p['fpir_any_candidate']} |" for p in points)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=shared_dir() / "data" / "lfw-dev" / "images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=REPO / "benchmarks" / "out" / "gallery")
    ap.add_argument("--skip-import", action="store_true", help="reuse the import already in --work-dir")
    ap.add_argument("--limit", type=int, help="only the first N photos (smoke run)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gallery.md")
    args = ap.parse_args()
    if not args.lfw.is_dir():
        raise SystemExit(f"LFW images not found at {args.lfw}")
    data_dir = args.work_dir / "import"
    summary_file = args.work_dir / "import-summary.json"
    load_before = uptime()
    if not args.skip_import:
        if data_dir.exists():
            import shutil
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        imp = run_import(args.lfw, data_dir, args.workers, args.limit)
        summary_file.write_text(json.dumps(imp, indent=2))
    else:
        imp = json.loads(summary_file.read_text())
    print(json.dumps(imp, indent=2))

    from facegate.config import Settings
    from facegate.engine import FaceEngine
    engine = FaceEngine.load(Settings.load())
    ident = identification(args.lfw, data_dir, engine, args.limit)
    print(json.dumps(ident, indent=2))
    memory = engine_memory(args.lfw)
    storage = store_bytes(data_dir)
    print(json.dumps({"memory": memory, "storage": storage}, indent=2))
    load_after = uptime()
    (args.work_dir / "identification.json").write_text(json.dumps(ident | {"memory": memory, "storage": storage},
                                                                  indent=2))
    write_markdown(args.out, imp, ident, load_before, load_after, sys.argv[1:], memory, storage)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
