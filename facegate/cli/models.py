"""``facegate models build|list``."""
from __future__ import annotations

import json
from pathlib import Path

from facegate.config import Settings
from facegate.matching.operating_points import populations
from facegate.models.pack import MANIFEST, ModelPack, build_default_pack, installed_ok, pack_dir


def register(sub) -> None:
    p = sub.add_parser("models", help="build and list model packs")
    msub = p.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="fetch, check and cache the default model pack")
    b.add_argument("--force", action="store_true", help="rebuild even when the pack is current")
    b.set_defaults(func=cmd_build)
    ls = msub.add_parser("list", help="list installed packs and their models")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    add = msub.add_parser("add", help="register a folder of insightface-style ONNX models as a pack")
    add.add_argument("folder")
    add.add_argument("--name", help="pack name (default: the folder's name)")
    add.add_argument("--licence", help="the licence you hold for these weights")
    add.set_defaults(func=cmd_add)


def cmd_build(args) -> int:
    from facegate.models.gate_faces import build_gate_faces
    settings = Settings.load()
    path, built = build_default_pack(settings.model_dir, force=args.force)
    gate = build_gate_faces(path, Path(settings.model_dir).expanduser() / "downloads", settings)
    manifest = json.loads((path / MANIFEST).read_text())
    verb = "built" if built else "up to date:"
    print(f"{verb} {path} ({manifest['pack_id']}, {len(manifest['models'])} models"
          + (f", {gate['count']} gate faces" if gate else ", no gate faces: bf16 will not be chosen") + ")")
    return 0


def cmd_list(args) -> int:
    from facegate.models.runtime import remembered    # onnxruntime is imported only by the commands that run models
    settings = Settings.load()
    root = pack_dir(settings.model_dir, "x").parent
    packs = []
    for mf in sorted(root.glob(f"*/{MANIFEST}")):
        manifest = json.loads(mf.read_text())
        ok = installed_ok(mf.parent) if manifest.get("kind") == "facegate" else None
        packs.append({"pack": mf.parent.name, "path": str(mf.parent), "pack_id": manifest.get("pack_id"),
                      "kind": manifest.get("kind"), "checksums_ok": ok,
                      "populations": populations(ModelPack(mf.parent, manifest)),
                      "models": [{k: m.get(k) for k in ("name", "task", "sha256", "colour_order")}
                                 | {"source": "@".join(str(v) for v in (m["source"].get("package"),
                                                                        m["source"].get("version")) if v),
                                    "licence": m["source"].get("licence"),
                                    "model_licence": m["source"].get("model_licence")}
                                 for m in manifest["models"]],
                      "placements": {k: v.as_dict() for k, v in remembered(mf.parent, settings).items()}})
    if args.json:
        print(json.dumps(packs, indent=2))
        return 0
    if not packs:
        print(f"no model packs under {root}; run `facegate models build`")
        return 1
    for p in packs:
        status = {True: "ok", False: "CHECKSUM MISMATCH", None: "not checked"}[p["checksums_ok"]]
        print(f"{p['pack']}  {p['pack_id']}  [{status}]  {p['path']}"
              + (f"  populations: {', '.join(p['populations'])} (FACEGATE_POPULATION)" if p["populations"] else ""))
        for m in p["models"]:
            licence = m["licence"] + (f"; model: {m['model_licence']}" if m.get("model_licence") else "")
            print(f"  {m['name']:<12} {m['task']:<24} {m['source']:<42} {licence}  sha256 {m['sha256'][:16]}")
        placed = p["placements"]
        if placed:
            print(f"  runtime on this machine (FACEGATE_RUNTIME={settings.runtime}, "
                  f"FACEGATE_PRECISION={settings.precision}):")
            for name, pl in placed.items():
                print(f"    {name:<12} {pl['runtime']:<12} {pl['precision']:<5} {pl['why']}")
        elif p["kind"] == "facegate":
            print("  runtime: not measured on this machine yet (the first load measures and remembers it)")
    return 0


def cmd_add(args) -> int:
    from facegate.models.insightface import INSIGHTFACE_LICENCE_WARNING, register_folder

    folder = register_folder(Path(args.folder), name=args.name, licence=args.licence)
    manifest = json.loads((folder / MANIFEST).read_text())
    for m in manifest["models"]:
        print(f"  {m['name']:<20} {m['task']:<12} {m['class']:<14} sha256 {m['sha256'][:16]}")
    print(f"registered {folder} as {manifest['pack_id']}; use it with FACEGATE_PACK={folder}")
    print(f"note: {INSIGHTFACE_LICENCE_WARNING}")
    print("note: calibrate it on your own population before use: facegate calibrate --pairs ... --images ...")
    return 0
