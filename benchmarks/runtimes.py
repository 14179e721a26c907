"""Every model of the default pack on every runtime and precision this machine has, side by side
in one run; then ``/v1/verify`` on a server placed on onnxruntime only and on one placed by
``FACEGATE_RUNTIME=auto``, requests alternating between the two (same machine, same load).

Part 1, per model: median latency of 60 runs at batch 1 on one thread (after 5 warm-ups) for
onnxruntime fp32, OpenVINO fp32 and, where the CPU computes bf16 (OpenVINO reports ``BF16``),
OpenVINO bf16; and the agreement with onnxruntime fp32: for the embedders the cosine of their
embeddings of ``--faces`` lfw-dev faces aligned by the engine (min and median), for the other
models the cosine of their raw outputs on random inputs of their shape.

Part 2: the server time of ``/v1/verify`` (640x480 frames: the LFW probe padded, as a kiosk
sends them) measured inside each server from its request histogram, per request, p50 and p90.

    python -m benchmarks.runtimes --faces 300 --requests 60
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import pct, shared_dir, uptime
from benchmarks.load_verify import BenchServer, scrape

LFW = shared_dir() / "data" / "lfw-dev" / "images"
EMBEDDERS = {"fr_feature": {"mean": 127.0, "std": 128.0, "swap_rb": False},
             "sface": {"mean": 0.0, "std": 1.0, "swap_rb": True}}


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    else:
        model = platform.processor()
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    features = [f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx2")
                if f" {f}" in flags]
    return f"{model} ({', '.join(features)})"


def _aligned_faces(n: int) -> np.ndarray:
    from facegate.config import Settings
    from facegate.engine import FaceEngine
    from facegate.models.alignment import align_face
    engine = FaceEngine.load(dataclasses.replace(Settings.load(), runtime="onnxruntime"))
    crops = []
    for person in sorted(p for p in LFW.iterdir() if p.is_dir()):
        photo = sorted(person.glob("*.jpg"))[0]
        bgr = cv2.imread(str(photo))
        dets = engine.detect(bgr)
        if dets:
            crops.append(align_face(bgr, dets[0].landmarks))
        if len(crops) >= n:
            break
    return np.stack(crops)


def models_part(faces: int) -> list[dict]:
    from facegate.config import Settings
    from facegate.models import runtime
    from facegate.models.arcface import pixels
    from facegate.models.onnx import create_session
    from facegate.models.pack import load_pack
    settings = Settings.load()
    pack = load_pack(settings.model_dir, settings.pack)
    core = runtime.openvino_core()
    precisions = ["fp32"] + (["bf16"] if core is not None and runtime.cpu_has_bf16(core) else [])
    crops = _aligned_faces(faces).astype(np.float32).transpose(0, 3, 1, 2)
    rows = []
    for entry in pack.manifest["models"]:
        path = pack.verified_path(entry["name"])
        reference = create_session(path, "CPUExecutionProvider", 1)
        inp = reference.get_inputs()[0]
        shape = [1] + [d if isinstance(d, int) else {"yunet": 320}.get(entry["name"], 48) for d in inp.shape[1:]]
        if entry["name"] == "mtcnn_pnet":
            shape = [1, 240, 320, 3]
        x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
        row = {"model": entry["name"], "input": shape,
               "onnxruntime fp32 ms": round(runtime.median_ms(reference, inp.name, x, 60, 5), 2)}
        for precision in (precisions if core is not None else []):
            try:
                session = runtime.OpenVinoSession(path, precision, 1, core)
                row[f"openvino {precision} ms"] = round(runtime.median_ms(session, inp.name, x, 60, 5), 2)
            except Exception as exc:          # noqa: BLE001 - a model OpenVINO cannot compile is reported
                row[f"openvino {precision} ms"] = f"failed: {type(exc).__name__}"
                continue
            if entry["name"] in EMBEDDERS:
                how = EMBEDDERS[entry["name"]]
                cos = [runtime.min_cosine(reference, session, inp.name, crops[i:i + 1],
                                          lambda v: pixels(v, **how)) for i in range(len(crops))]
                row[f"openvino {precision} cosine"] = {"min": round(min(cos), 6), "median": round(statistics.median(cos), 6),
                                                       "faces": len(cos)}
            else:
                a = np.concatenate([np.ravel(o) for o in reference.run(None, {inp.name: x})]).astype(np.float64)
                b = np.concatenate([np.ravel(o) for o in session.run(None, {inp.name: x})]).astype(np.float64)
                row[f"openvino {precision} cosine"] = round(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), 6)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _probe_640x480() -> bytes:
    bgr = cv2.imread(str(sorted((LFW / "Colin_Powell").glob("*.jpg"))[1]))
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[115:365, 195:445] = bgr
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def service_part(requests: int) -> dict:
    import httpx
    enrol = sorted((LFW / "Colin_Powell").glob("*.jpg"))[0].read_bytes()
    probe = _probe_640x480()
    servers = {}
    for name in ("onnxruntime", "auto"):
        srv = BenchServer(1, 1, 8, runtime=name)
        srv.enrol("CP", enrol)
        placed = [line for line in httpx.get(srv.url + "/metrics").text.splitlines()
                  if line.startswith("facegate_model_placement{")]
        servers[name] = (srv, placed)
    times: dict[str, list[float]] = {n: [] for n in servers}
    stages: dict[str, dict[str, list[float]]] = {n: {} for n in servers}
    try:
        for i in range(requests + 3):
            for name, (srv, _) in servers.items():
                before = scrape(srv.url)
                r = httpx.post(srv.url + "/v1/verify", data={"subject_id": "CP"},
                               files={"image": ("p.jpg", probe, "image/jpeg")}, headers={"X-API-Key": srv.kiosk},
                               timeout=60)
                r.raise_for_status()
                after = scrape(srv.url)
                if i >= 3:
                    times[name].append(after[("request", "sum")] - before[("request", "sum")])
                    for (k, kind), v in after.items():
                        if kind == "sum" and k != "request":
                            stages[name].setdefault(k, []).append(v - before.get((k, "sum"), 0.0))
    finally:
        for srv, _ in servers.values():
            srv.stop()
    return {name: {"server_p50_ms": round(1000 * statistics.median(t), 2), "server_p90_ms": round(1000 * pct(t, 90), 2),
                   "stages_p50_ms": {k: round(1000 * statistics.median(v), 2) for k, v in sorted(stages[name].items())},
                   "placements": servers[name][1], "requests": len(t)}
            for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=300)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/runtimes.json"))
    args = ap.parse_args()
    out = {"cpu": _cpu(), "uptime": uptime(), "models": models_part(args.faces)}
    if not args.skip_service:
        out["verify"] = service_part(args.requests)
        print(json.dumps(out["verify"], indent=1))
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
