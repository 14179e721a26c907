"""``facegate liveness build-pad|check|judge``: passive PAD models and offline judging."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from facegate.config import Settings


def register(sub) -> None:
    p = sub.add_parser("liveness", help="liveness models and offline checks")
    lsub = p.add_subparsers(dest="liveness_command", required=True)
    b = lsub.add_parser("build-pad", help="build the MiniFASNet PAD pack from weight archives (.npz)")
    b.add_argument("--weights", required=True, help="folder holding the MiniFASNet *.weights.npz files")
    b.add_argument("--reference", help="folder with *.reference.npz to check the built graphs against "
                                       "(default: the weights folder, when it has them)")
    b.add_argument("--allow-unpinned", action="store_true",
                   help="accept weight archives whose sha256 differs from the pinned ones")
    b.set_defaults(func=cmd_build_pad)
    j = lsub.add_parser("judge", help="judge a video file against a challenge (offline)")
    j.add_argument("video")
    j.add_argument("--challenge", required=True, help="comma list, e.g. blink,turn_left")
    j.add_argument("--json", action="store_true")
    j.set_defaults(func=cmd_judge)


def cmd_build_pad(args) -> int:
    from facegate.liveness.minifasnet import build_minifasnet_pack

    settings = Settings.load()
    ref = args.reference or (args.weights if any(Path(args.weights).glob("*.reference.npz")) else None)
    try:
        dest = build_minifasnet_pack(args.weights, settings.model_dir, args.allow_unpinned, ref)
    except (FileNotFoundError, ValueError) as exc:
        print(f"facegate: error: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((dest / "manifest.json").read_text())
    for m in manifest["models"]:
        check = (f"reference max |diff| {m['reference_max_abs_error']:.1e}" if "reference_max_abs_error" in m
                 else "no reference checked")
        print(f"{m['name']:<16} sha256 {m['sha256'][:16]}  {check}")
    print(f"built {dest}")
    return 0


def cmd_judge(args) -> int:
    from facegate.engine import FaceEngine
    from facegate.liveness.capture import Capture
    from facegate.liveness.judge import LivenessJudge

    settings = Settings.load()
    engine = FaceEngine.load(settings)
    judge = LivenessJudge.load(engine, settings)
    capture = Capture(settings.liveness_max_frames, settings.liveness_max_seconds)
    capture.add_video(Path(args.video).read_bytes(), settings.max_image_pixels)
    result = judge.judge([a.strip() for a in args.challenge.split(",") if a.strip()], capture)
    result.pop("embedding", None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"live={result['live']} score={result['score']} reasons={result['reasons']}")
        for a in result["actions"]:
            print(f"  {a}")
        print(f"  passive: {result['passive']}")
    return 0 if result["live"] else 1
