"""Verification accuracy on labelled pairs, the way LFW reports it.

``accuracy`` is k-fold cross-validated: for each fold the threshold that is best on the other
folds is applied to it. A pair file with fewer than two folds (an LFW header ``1<TAB>300``)
leaves nothing to choose a threshold on, so its listed pairs are cross-validated over
``CV_FOLDS`` folds instead (consecutive blocks, as for a deepface CSV), and the report says so. Photos where no usable face is found count against every pair they are
in (never dropped). TAR at FAR is measured against every cross-identity pair of the photos when
the pair file tells identities (LFW), otherwise against the listed impostor pairs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from facegate.matching.decisions import threshold
from facegate.matching.operating_points import TARGET_FMRS, combine_tables, compute_table, threshold_at_fmr
from facegate.errors import FacegateError
from facegate.evaluation.pairs import PairSet

# Folds for pair files that have fewer than two of their own.
CV_FOLDS = 10


def embed_images(engine, images_dir: Path, names: list[str], progress: bool = False,
                 quality: dict | None = None) -> dict[str, np.ndarray | str]:
    """name -> embedding, or the error code when no usable face was found (``quality``, when
    given, is filled with name -> the face's quality score)."""
    out: dict[str, np.ndarray | str] = {}
    for i, name in enumerate(names):
        try:
            data = (Path(images_dir) / name).read_bytes()
            faces = engine.faces(data, policy="central", min_face=20)
            out[name] = faces[0].embedding if faces else "no_face"
            if faces and quality is not None:
                quality[name] = float(faces[0].quality.score)
        except FileNotFoundError:
            out[name] = "missing_file"
        except FacegateError as exc:
            out[name] = exc.code
        if progress and (i + 1) % 500 == 0:
            print(f"  embedded {i + 1}/{len(names)}", file=sys.stderr, flush=True)
    return out


def pair_scores(pairset: PairSet, emb: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scores, same, fold, ok) arrays over the listed pairs; failed pairs have ok=False."""
    n = len(pairset.pairs)
    scores = np.full(n, np.nan)
    same = np.array([p.same for p in pairset.pairs])
    fold = np.array([p.fold for p in pairset.pairs])
    ok = np.zeros(n, dtype=bool)
    for i, p in enumerate(pairset.pairs):
        ea, eb = emb.get(p.a), emb.get(p.b)
        if isinstance(ea, np.ndarray) and isinstance(eb, np.ndarray):
            scores[i] = float(np.dot(ea, eb))
            ok[i] = True
    return scores, same, fold, ok


def _correct(scores, same, ok, t) -> np.ndarray:
    # a failed pair is an error whatever its label
    return ok & ((scores >= t) == same)


def best_threshold(scores, same, ok) -> float:
    cand = np.unique(scores[ok])
    if cand.size == 0:
        return 0.0
    mids = np.concatenate([[cand[0] - 1e-6], (cand[:-1] + cand[1:]) / 2, [cand[-1] + 1e-6]])
    # accuracy for every candidate at once: sort the scores, count with searchsorted
    s, y = scores[ok], same[ok]
    gen = np.sort(s[y]); imp = np.sort(s[~y])
    correct = (gen.size - np.searchsorted(gen, mids, side="left")) + np.searchsorted(imp, mids, side="left")
    return float(mids[int(np.argmax(correct))])


def kfold_accuracy(scores, same, fold, ok) -> tuple[float, float, list[float]]:
    accs = []
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        t = best_threshold(scores[train], same[train], ok[train])
        accs.append(float(_correct(scores[test], same[test], ok[test], t).mean()))
    return float(np.mean(accs)), float(np.std(accs)), accs


def auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    if genuine.size == 0 or impostor.size == 0:
        return float("nan")
    imp = np.sort(impostor)
    lo = np.searchsorted(imp, genuine, side="left")
    hi = np.searchsorted(imp, genuine, side="right")
    return float((lo + 0.5 * (hi - lo)).sum() / (genuine.size * impostor.size))


def _pair_blocks(emb: dict, identities: dict[str, str], same: bool, quality: dict | None = None):
    """(scores, quality of the first photo, of the second) of every pair of photos of different
    (``same`` False) or of the same identity, each unordered pair once (upper triangle)."""
    names = [n for n in sorted(identities) if isinstance(emb.get(n), np.ndarray)]
    if not names:
        return np.empty(0), np.empty(0), np.empty(0)
    mat = np.stack([emb[n] for n in names]).astype(np.float32)
    ids = np.array([identities[n] for n in names])
    q = np.array([(quality or {}).get(n, np.nan) for n in names], dtype=np.float32)
    out, qa, qb = [], [], []
    for i in range(0, len(names), 1024):
        block = mat[i:i + 1024] @ mat.T
        rows = np.arange(i, min(i + 1024, len(names)))
        upper = np.arange(len(names))[None, :] > rows[:, None]
        cross = ids[None, :] == ids[rows][:, None] if same else ids[None, :] != ids[rows][:, None]
        mask = upper & cross
        out.append(block[mask])
        if quality is not None:
            r, c = np.nonzero(mask)
            qa.append(q[rows][r])
            qb.append(q[c])
    scores = np.concatenate(out).astype(np.float64)
    if quality is None:
        return scores, np.empty(0), np.empty(0)
    return scores, np.concatenate(qa), np.concatenate(qb)


def all_impostor_scores(emb: dict, identities: dict[str, str]) -> np.ndarray:
    """Scores of every pair of photos of different identities (upper triangle only)."""
    return _pair_blocks(emb, identities, same=False)[0]


def all_genuine_scores(emb: dict, identities: dict[str, str]) -> np.ndarray:
    return _pair_blocks(emb, identities, same=True)[0]


def cv_folds(pairset: PairSet, fold: np.ndarray) -> tuple[np.ndarray, str | None]:
    """The folds to cross-validate over, and a note when they are not the file's own."""
    if pairset.folds >= 2 and len(np.unique(fold)) >= 2:
        return fold, None
    n = len(fold)
    k = min(CV_FOLDS, max(n, 1))
    return (np.arange(n) * k // max(n, 1)), (
        f"the pair file has {pairset.folds} fold(s): accuracy is cross-validated over {k} folds of "
        f"the listed pairs (consecutive blocks) instead")


def score_sets(pairset: PairSet, emb: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """(genuine scores of the listed pairs, impostor scores, where the impostors come from):
    every cross-identity pair of the photos when the file names identities, else the listed ones."""
    scores, same, _, ok = pair_scores(pairset, emb)
    if pairset.identities:
        return scores[same & ok], all_impostor_scores(emb, pairset.identities), "all cross-identity pairs"
    return scores[same & ok], scores[~same & ok], "listed impostor pairs"


def evaluate(engine, pairset: PairSet, emb: dict) -> dict:
    scores, same, fold, ok = pair_scores(pairset, emb)
    fold, cv_note = cv_folds(pairset, fold)
    acc, acc_std, per_fold = kfold_accuracy(scores, same, fold, ok)
    genuine, impostor, impostor_source = score_sets(pairset, emb)
    # a genuine pair with a failed photo is a rejected genuine attempt
    n_genuine = int(same.sum())
    tar = {}
    for far in ("0.001", "0.0001"):
        if impostor.size == 0 or n_genuine == 0:
            tar[far] = None
            continue
        t = threshold_at_fmr(impostor, float(far))
        tar[far] = round(float((genuine >= t).sum() / n_genuine), 5)
    default = threshold(engine.operating_points, engine.settings.target_fmr)
    t_default = round(default.threshold, 6)
    correct = _correct(scores, same, ok, t_default)
    fm = int((ok & ~same & (scores >= t_default)).sum())
    fnm = int((ok & same & (scores < t_default)).sum())
    failures = sorted(n for n, e in emb.items() if not isinstance(e, np.ndarray))
    return {
        "pairs": len(pairset.pairs),
        "folds": pairset.folds,
        "cv_folds": int(len(np.unique(fold))),
        **({"cv_note": cv_note} if cv_note else {}),
        "accuracy": round(acc, 5),
        "accuracy_std": round(acc_std, 5),
        "accuracy_per_fold": [round(a, 5) for a in per_fold],
        "auc": round(auc(genuine, scores[~same & ok]), 6),
        "tar_at_far": tar,
        "impostor_pairs_for_far": int(impostor.size),
        "impostor_source": impostor_source,
        "default_threshold": t_default,
        "default_fmr": default.fmr,
        "accuracy_at_default_threshold": round(float(correct.mean()), 5),
        "errors_at_default_threshold": int((~correct).sum()),
        "false_matches_at_default_threshold": fm,
        "false_non_matches_at_default_threshold": fnm,
        "failures": len(failures),
        "failed_images": failures[:50],
        "failed_pairs": int((~ok).sum()),
    }


def calibration_scores(pairset: PairSet, emb: dict, quality: dict | None = None) -> dict:
    """The scores a table is calibrated on: every cross-identity (impostor) and same-identity
    (genuine) pair of the photos when the file names identities, else the listed pairs. With
    ``quality`` (name -> score), also the quality of each pair's two photos (``*_qa``, ``*_qb``)."""
    if pairset.identities:
        imp, iqa, iqb = _pair_blocks(emb, pairset.identities, False, quality)
        gen, gqa, gqb = _pair_blocks(emb, pairset.identities, True, quality)
        source = "every cross-identity pair of the photos"
    else:
        scores, same, _, ok = pair_scores(pairset, emb)
        sel_i, sel_g = ~same & ok, same & ok
        imp, gen = scores[sel_i], scores[sel_g]
        q = quality or {}
        qa = np.array([q.get(p.a, np.nan) for p in pairset.pairs])
        qb = np.array([q.get(p.b, np.nan) for p in pairset.pairs])
        iqa, iqb, gqa, gqb = qa[sel_i], qb[sel_i], qa[sel_g], qb[sel_g]
        source = "listed pairs only (the pair file does not name identities)"
    return {"impostor": imp, "genuine": gen, "impostor_qa": iqa, "impostor_qb": iqb,
            "genuine_qa": gqa, "genuine_qb": gqb, "source": source}


def _probe_band(sc: dict, kind: str, lo: float, hi: float | None) -> np.ndarray:
    """The ``kind`` scores of the ordered (enrolment, probe) pairs whose probe quality is in
    [lo, hi): each unordered pair counts once per direction its probe qualifies in."""
    s, qa, qb = sc[kind], sc[f"{kind}_qa"], sc[f"{kind}_qb"]
    def inside(q):
        return (q >= lo) & (q < hi) if hi is not None else (q >= lo)
    return np.concatenate([s[inside(qb)], s[inside(qa)]])


def calibrate(pairset: PairSet, emb: dict) -> dict:
    sc = calibration_scores(pairset, emb)
    return {"impostor_pairs": int(sc["impostor"].size), "genuine_pairs": int(sc["genuine"].size),
            "impostor_source": sc["source"], "points": compute_table(sc["genuine"], sc["impostor"])}


def calibrate_sets(sets: list[tuple[str, PairSet, dict, dict | None]], quality_split: float | None = None,
                   fmrs=TARGET_FMRS) -> dict:
    """A table from one or more labelled sets (``name, pairset, embeddings, qualities``): per
    target FMR the strictest of the sets' thresholds (``combine_tables``); with
    ``quality_split`` Q, also a table per probe-quality band (under Q, and Q or more)."""
    scored = [(name, calibration_scores(ps, emb, q if quality_split is not None else None))
              for name, ps, emb, q in sets]
    out = {"sets": [{"name": name, "impostor_pairs": int(sc["impostor"].size), "genuine_pairs": int(sc["genuine"].size),
                     "impostor_source": sc["source"]} for name, sc in scored],
           "impostor_pairs": int(sum(sc["impostor"].size for _, sc in scored)),
           "genuine_pairs": int(sum(sc["genuine"].size for _, sc in scored)),
           "impostor_source": "; ".join(f"{name}: {sc['source']}" for name, sc in scored)}
    if len(scored) == 1:
        out["points"] = compute_table(scored[0][1]["genuine"], scored[0][1]["impostor"], fmrs)
    else:
        out["rule"] = "per target FMR, the strictest of the sets' thresholds"
        out["points"] = combine_tables([(n, sc["genuine"], sc["impostor"]) for n, sc in scored], fmrs)
    if quality_split is not None:
        bands = []
        for lo, hi in ((0.0, float(quality_split)), (float(quality_split), None)):
            per_set = [(n, _probe_band(sc, "genuine", lo, hi), _probe_band(sc, "impostor", lo, hi))
                       for n, sc in scored]
            per_set = [x for x in per_set if x[2].size]
            if not per_set:     # nothing to calibrate the band on: its probes get the all-probes points
                bands.append({"min_quality": lo, "max_quality": hi, "ordered_impostor_pairs": 0,
                              "points": out["points"], "note": "no impostor pair has its probe in this band"})
                continue
            bands.append({"min_quality": lo, "max_quality": hi,
                          "ordered_impostor_pairs": int(sum(x[2].size for x in per_set)),
                          "points": combine_tables(per_set, fmrs)})
        out["quality_split"] = float(quality_split)
        out["quality_bands"] = bands
    return out
