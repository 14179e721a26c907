"""Verification accuracy on labelled pairs, the way LFW reports it.

``accuracy`` is k-fold cross-validated: for each fold the threshold that is best on the other
folds is applied to it. Photos where no usable face is found count against every pair they are
in (never dropped). TAR at FAR is measured against every cross-identity pair of the photos when
the pair file tells identities (LFW), otherwise against the listed impostor pairs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from facegate.matching.decisions import threshold
from facegate.matching.operating_points import compute_table, threshold_at_fmr
from facegate.errors import FacegateError
from facegate.evaluation.pairs import PairSet


def embed_images(engine, images_dir: Path, names: list[str], progress: bool = False) -> dict[str, np.ndarray | str]:
    """name -> embedding, or the error code when no usable face was found."""
    out: dict[str, np.ndarray | str] = {}
    for i, name in enumerate(names):
        try:
            data = (Path(images_dir) / name).read_bytes()
            faces = engine.faces(data, policy="central", min_face=20)
            out[name] = faces[0].embedding if faces else "no_face"
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


def all_impostor_scores(emb: dict, identities: dict[str, str]) -> np.ndarray:
    """Scores of every pair of photos of different identities (upper triangle only)."""
    names = [n for n in sorted(identities) if isinstance(emb.get(n), np.ndarray)]
    mat = np.stack([emb[n] for n in names]).astype(np.float32)
    ids = np.array([identities[n] for n in names])
    out = []
    for i in range(0, len(names), 1024):
        block = mat[i:i + 1024] @ mat.T
        rows = np.arange(i, min(i + 1024, len(names)))
        mask = (np.arange(len(names))[None, :] > rows[:, None]) & (ids[None, :] != ids[rows][:, None])
        out.append(block[mask])
    return np.concatenate(out).astype(np.float64) if out else np.empty(0)


def all_genuine_scores(emb: dict, identities: dict[str, str]) -> np.ndarray:
    by_id: dict[str, list[np.ndarray]] = {}
    for n, ident in identities.items():
        if isinstance(emb.get(n), np.ndarray):
            by_id.setdefault(ident, []).append(emb[n])
    out = []
    for vecs in by_id.values():
        if len(vecs) > 1:
            m = np.stack(vecs)
            s = m @ m.T
            out.append(s[np.triu_indices(len(vecs), 1)])
    return np.concatenate(out).astype(np.float64) if out else np.empty(0)


def evaluate(engine, pairset: PairSet, emb: dict) -> dict:
    scores, same, fold, ok = pair_scores(pairset, emb)
    acc, acc_std, per_fold = kfold_accuracy(scores, same, fold, ok)
    genuine = scores[same & ok]
    if pairset.identities:
        impostor = all_impostor_scores(emb, pairset.identities)
        impostor_source = "all cross-identity pairs"
    else:
        impostor = scores[~same & ok]
        impostor_source = "listed impostor pairs"
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


def calibrate(pairset: PairSet, emb: dict) -> dict:
    scores, same, fold, ok = pair_scores(pairset, emb)
    if pairset.identities:
        impostor = all_impostor_scores(emb, pairset.identities)
        genuine = all_genuine_scores(emb, pairset.identities)
        source = "every cross-identity pair of the photos"
    else:
        impostor, genuine = scores[~same & ok], scores[same & ok]
        source = "listed pairs only (the pair file does not name identities)"
    return {"impostor_pairs": int(impostor.size), "genuine_pairs": int(genuine.size),
            "impostor_source": source, "points": compute_table(genuine, impostor)}
