"""Where each ONNX model runs: onnxruntime or OpenVINO, and at which precision.

``FACEGATE_RUNTIME=auto|onnxruntime|openvino`` and ``FACEGATE_PRECISION=auto|fp32|bf16``:

- **onnxruntime** is the portable path (CUDA through onnxruntime-gpu, ARM, any x86 CPU) and the
  reference: every other placement is compared with it.
- **OpenVINO** (PyPI ``openvino``) runs the same ONNX files on Intel CPUs, in fp32 or, where the
  CPU computes bf16 natively (AMX, AVX512-BF16: OpenVINO reports ``BF16``), in bf16.
- **auto** decides per model and per process, once: onnxruntime where it runs on a GPU, where
  OpenVINO is not installed, or where the model's input has symbolic spatial sizes (MTCNN's
  P-Net, YuNet: OpenVINO would recompile per image size); otherwise both runtimes are timed on
  the model's own input shape (a short measurement, :data:`TRIALS` runs each) and OpenVINO is
  kept only when it is at least :data:`MIN_GAIN` faster. bf16 is tried only where the CPU has
  it, and kept only when the **accuracy gate** holds: on the pack's gate faces (aligned crops
  made at ``facegate models build`` from photos in a package the pack already fetches) every
  output agrees with onnxruntime's fp32 output to a cosine of at least
  ``runtime_cosine_floor``; without gate faces bf16 is not chosen.

Every choice is a :class:`Placement` kept in :data:`PLACEMENTS` (``facegate models list``,
``/metrics``' ``facegate_model_placement``). A setting that cannot be honoured
(``openvino`` without the package, ``bf16`` on a CPU without it) is ``model_unavailable`` with
one line naming the fix.

The OpenVINO session answers like an onnxruntime ``InferenceSession`` (``get_inputs``,
``get_outputs``, ``run``), so the models' wrappers do not know which runtime they run on. Its
infer requests are per thread (an OpenVINO request is not thread-safe; onnxruntime's ``run`` is).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facegate.errors import FacegateError
from facegate.models.onnx import create_session

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16")
TRIALS = 12             # timed runs per runtime when auto measures (after 3 warm-up runs)
MIN_GAIN = 1.15         # OpenVINO is kept by auto only when this much faster than onnxruntime
GATE_FACES = "gate_faces.npy"
GATE_AT_LOAD = 32       # gate faces compared when a process places a model (the pack holds up to 64)
PLACEMENT_CACHE = "placements.json"


@dataclass(frozen=True)
class Placement:
    model: str
    runtime: str
    precision: str
    why: str
    onnxruntime_ms: float | None = None
    openvino_ms: float | None = None
    min_cosine: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


PLACEMENTS: dict[str, Placement] = {}
_LOCK = threading.Lock()


# ------------------------------------------------------------------ OpenVINO behind onnxruntime's interface
@dataclass(frozen=True)
class _Node:
    name: str
    shape: list
    type: str = "tensor(float)"


def openvino_core():
    """OpenVINO's Core, or None when the package is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.Core()


def cpu_has_bf16(core) -> bool:
    try:
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:   # an OpenVINO without that property, or no CPU plugin
        return False


def _dims(partial_shape) -> list:
    return [d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(partial_shape)]


class OpenVinoSession:
    """A model compiled by OpenVINO for the CPU, used like an onnxruntime session."""

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int = 0, core=None):
        core = core or openvino_core()
        if core is None:
            raise FacegateError("model_unavailable", "FACEGATE_RUNTIME=openvino but the openvino package is not "
                                "installed: pip install openvino, or set FACEGATE_RUNTIME=onnxruntime")
        model = core.read_model(str(path))
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.precision = precision
        self.compiled = core.compile_model(model, "CPU", config)
        self._inputs = [_Node(p.get_any_name(), _dims(p.get_partial_shape())) for p in model.inputs]
        self._outputs = [_Node(p.get_any_name(), _dims(p.get_partial_shape())) for p in model.outputs]
        self._local = threading.local()

    def get_inputs(self) -> list[_Node]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Node]:
        return list(self._outputs)

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({name: np.ascontiguousarray(value) for name, value in feed.items()})
        by_name = {self._outputs[i].name: value for i, value in enumerate(result.values())}
        names = output_names or [o.name for o in self._outputs]
        return [np.array(by_name[n], copy=True) for n in names]


# ------------------------------------------------------------------ choosing
def _fixed_shape(session) -> list[int] | None:
    """The input shape with batch 1, or None when a spatial size is symbolic (or there are several inputs)."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        return None
    shape = list(inputs[0].shape)
    if any(not isinstance(d, int) for d in shape[1:]):
        return None
    return [1] + [int(d) for d in shape[1:]]


def median_ms(session, name: str, x: np.ndarray, runs: int = TRIALS, warmup: int = 3) -> float:
    """The median latency of ``runs`` runs on ``x`` after ``warmup`` (milliseconds)."""
    for _ in range(warmup):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def _gate_inputs(path: Path, shape: list[int]) -> np.ndarray | None:
    """The pack's gate faces (checked against the manifest's sha256) as this model's input, when
    the model takes aligned 112x112 crops."""
    import json
    from facegate.models.pack import MANIFEST, sha256_file
    gate = path.parent / GATE_FACES
    if not gate.exists() or shape[1:] != [3, 112, 112]:
        return None
    try:
        entry = json.loads((path.parent / MANIFEST).read_text()).get("gate_faces") or {}
    except (OSError, ValueError):
        return None
    if entry.get("sha256") != sha256_file(gate):
        log.warning("%s does not match the manifest: bf16 will not be chosen", gate)
        return None
    crops = np.load(gate, allow_pickle=False)[:GATE_AT_LOAD]  # N x 112 x 112 x 3 uint8 (BGR)
    return np.ascontiguousarray(crops.astype(np.float32).transpose(0, 3, 1, 2))


def min_cosine(reference, candidate, name: str, inputs: np.ndarray, scale=None) -> float:
    """The smallest cosine between the two sessions' outputs over ``inputs`` (one at a time)."""
    worst = 1.0
    for x in inputs:
        x = x[None]
        if scale is not None:
            x = scale(x)
        a = np.asarray(reference.run(None, {name: x})[0], np.float64).ravel()
        b = np.asarray(candidate.run(None, {name: x})[0], np.float64).ravel()
        worst = min(worst, float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
    return worst


@lru_cache(maxsize=1)
def _machine() -> str:
    """What a measured choice depends on besides the model: the CPU and the runtimes' versions."""
    import onnxruntime
    try:
        flags = next((line.split(":", 1)[1] for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "")
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    except OSError:
        flags, model = "", platform.processor()
    try:
        import openvino
        ov_version = openvino.__version__
    except ImportError:
        ov_version = "none"
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{model}|{digest}|{os.cpu_count()}|ort {onnxruntime.__version__}|ov {ov_version}"


@lru_cache(maxsize=64)
def _file_sha(path: str, mtime_ns: int, size: int) -> str:
    from facegate.models.pack import sha256_file
    return sha256_file(Path(path))


def _cache_key(path: Path, settings) -> str:
    st = path.stat()
    return "|".join([_file_sha(str(path), st.st_mtime_ns, st.st_size), _machine(), str(settings.intra_op_threads), settings.runtime or "auto",
                     settings.precision or "auto", str(settings.runtime_cosine_floor)])


def _cached(path: Path, key: str) -> Placement | None:
    try:
        value = json.loads((path.parent / PLACEMENT_CACHE).read_text()).get(key)
        return Placement(**value) if value else None
    except (OSError, ValueError, TypeError):
        return None


def _remember(path: Path, key: str, placement: Placement) -> None:
    """Keep a measured choice beside the pack (best effort: a read-only pack measures again)."""
    cache = path.parent / PLACEMENT_CACHE
    try:
        with _LOCK:
            try:
                known = json.loads(cache.read_text())
            except (OSError, ValueError):
                known = {}
            known[key] = placement.as_dict()
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
            tmp.write_text(json.dumps(known, indent=1))
            os.replace(tmp, cache)
    except OSError:
        pass


def place(path: str | Path, settings, pixels=None) -> tuple[object, Placement]:
    """The session for the model at ``path`` where ``settings`` put it (see the module's doc).
    ``pixels(x)``: how the model wants gate crops scaled (uint8 BGR NCHW as float), for the gate.
    A choice auto made by measuring is remembered beside the pack for this machine and settings."""
    path = Path(path)
    name = path.stem
    if (getattr(settings, "runtime", "auto") or "auto") == "auto":
        key = _cache_key(path, settings)
        known = _cached(path, key)
        if known is not None:
            return _open(path, settings, known), _record(known)
        session, placement = _place(path, settings, pixels)
        if placement.onnxruntime_ms is not None or placement.why == "symbolic input size":
            _remember(path, key, placement)
        return session, placement
    return _place(path, settings, pixels)


def _record(placement: Placement) -> Placement:
    with _LOCK:
        PLACEMENTS[placement.model] = placement
    return placement


def _open(path: Path, settings, placement: Placement):
    if placement.runtime == "openvino":
        return OpenVinoSession(path, placement.precision, settings.intra_op_threads)
    return create_session(path, settings.providers, settings.intra_op_threads)


def _place(path: Path, settings, pixels=None) -> tuple[object, Placement]:
    name = path.stem
    runtime = getattr(settings, "runtime", "auto") or "auto"
    precision = getattr(settings, "precision", "auto") or "auto"
    providers, threads = settings.providers, settings.intra_op_threads
    if runtime not in RUNTIMES:
        raise FacegateError("model_unavailable", f"FACEGATE_RUNTIME={runtime!r}: use one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise FacegateError("model_unavailable", f"FACEGATE_PRECISION={precision!r}: use one of "
                            f"{', '.join(PRECISIONS)} (int8 is not built yet)")
    if runtime == "onnxruntime" and precision == "bf16":
        raise FacegateError("model_unavailable", "FACEGATE_PRECISION=bf16 needs FACEGATE_RUNTIME=openvino or auto")

    def record(session, placement: Placement):
        log.info("model %s on %s %s (%s)", name, placement.runtime, placement.precision, placement.why)
        return session, _record(placement)

    reference = create_session(path, providers, threads)
    if runtime == "onnxruntime":
        return record(reference, Placement(name, "onnxruntime", "fp32", "FACEGATE_RUNTIME=onnxruntime"))
    core = openvino_core()
    on_gpu = reference.get_providers()[0] != "CPUExecutionProvider"
    if runtime == "auto" and (core is None or on_gpu or platform.machine().lower() not in ("x86_64", "amd64")):
        why = "openvino is not installed" if core is None else ("a GPU" if on_gpu else "not an x86 CPU")
        return record(reference, Placement(name, "onnxruntime", "fp32", why))
    if precision == "bf16" and not cpu_has_bf16(core):
        raise FacegateError("model_unavailable", "FACEGATE_PRECISION=bf16 but this CPU has no bf16 (AMX or "
                            "AVX512-BF16): set FACEGATE_PRECISION=auto or fp32")
    shape = _fixed_shape(reference)
    if runtime == "auto" and shape is None:
        return record(reference, Placement(name, "onnxruntime", "fp32", "symbolic input size"))
    if runtime == "openvino" and shape is None:
        return record(OpenVinoSession(path, "fp32", threads, core), Placement(name, "openvino", "fp32",
                                                                              "FACEGATE_RUNTIME=openvino"))
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    input_name = reference.get_inputs()[0].name
    gate = _gate_inputs(path, shape)
    floor = settings.runtime_cosine_floor
    tries = ["bf16", "fp32"] if precision in ("auto", "bf16") and cpu_has_bf16(core) else ["fp32"]
    candidate = chosen = cosine = None
    notes = []
    for p in tries:
        session = OpenVinoSession(path, p, threads, core)
        if gate is None:
            if p == "bf16":
                notes.append("bf16 not tried: no gate faces for this model")
                continue
            candidate, chosen = session, p
            break
        agreement = min_cosine(reference, session, input_name, gate, pixels)
        if agreement >= floor:
            candidate, chosen, cosine = session, p, round(agreement, 6)
            break
        if precision == p or runtime == "openvino" and p == "fp32":
            raise FacegateError("model_unavailable", f"{name}: OpenVINO {p} agrees with onnxruntime fp32 only to a "
                                f"cosine of {agreement:.4f} (< {floor}) on the gate faces: set "
                                f"FACEGATE_PRECISION=fp32 or FACEGATE_RUNTIME=onnxruntime")
        notes.append(f"{p} refused by the gate (cosine {agreement:.4f} < {floor})")
    why = "; ".join(notes)
    if candidate is None:
        return record(reference, Placement(name, "onnxruntime", "fp32", why))
    if runtime == "openvino":
        return record(candidate, Placement(name, "openvino", chosen,
                                           "FACEGATE_RUNTIME=openvino" + (f"; {why}" if why else ""), min_cosine=cosine))
    ort_ms, ov_ms = median_ms(reference, input_name, x), median_ms(candidate, input_name, x)
    if ort_ms >= MIN_GAIN * ov_ms:
        return record(candidate, Placement(name, "openvino", chosen,
                                           f"{ort_ms / ov_ms:.1f}x faster than onnxruntime" + (f"; {why}" if why else ""),
                                           round(ort_ms, 2), round(ov_ms, 2), cosine))
    return record(reference, Placement(name, "onnxruntime", "fp32", f"OpenVINO {chosen} not {MIN_GAIN}x faster",
                                       round(ort_ms, 2), round(ov_ms, 2), cosine))


def remembered(pack_path: Path, settings) -> dict[str, Placement]:
    """The placements measured on this machine with these settings, by model (no measuring)."""
    out = {}
    for model in sorted(Path(pack_path).glob("*.onnx")):
        known = _cached(model, _cache_key(model, settings))
        if known is not None:
            out[model.stem] = known
    return out


def open_model(path: str | Path, settings, pixels=None):
    """:func:`place`'s session alone."""
    return place(path, settings, pixels)[0]
