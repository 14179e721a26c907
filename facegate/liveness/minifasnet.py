"""MiniFASNetV2 / MiniFASNetV1SE passive anti-spoofing graphs, built here from weight arrays.

Minivision's Silent-Face-Anti-Spoofing networks (Apache-2.0) are published as PyTorch
checkpoints; operators supply their parameters as ``.npz`` archives (one array per parameter,
PyTorch names). This module writes the ONNX graph with ``onnx.helper`` from those arrays, so no
conversion toolchain is needed, and installs the result as a separate model pack
(``$FACEGATE_MODEL_DIR/minifasnet``) whose manifest pins every file's sha256. Weights and built
models never live in the repository.

Network facts (from the weights' README): input NCHW float32 BGR 0..255 at 80x80; output three
logits, softmax class 1 = real. Crop: the face box scaled by 2.7 (V2) or 4.0 (V1SE), shifted back
inside the image, resized bilinearly.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.models.pack import sha256_file

PACK_NAME = "minifasnet"
PACK_FORMAT = 1
BN_EPS = 1e-5
INPUT_SIZE = 80


@dataclass(frozen=True)
class MiniFASNetSpec:
    name: str              # model name in the pack manifest
    weights_file: str      # file name of the .npz the operator supplies
    crop_scale: float
    weights_sha256: str    # pinned: a different archive is refused unless explicitly allowed


MINIFASNET_MODELS: tuple[MiniFASNetSpec, ...] = (
    MiniFASNetSpec("minifasnet_v2", "2.7_80x80_MiniFASNetV2.weights.npz", 2.7,
                   "3d205aad3a45f6d4f13d8c1ecc9174187de396c5c5f224fc00f6aac2dd5b292b"),
    MiniFASNetSpec("minifasnet_v1se", "4_0_0_80x80_MiniFASNetV1SE.weights.npz", 4.0,
                   "3907c53c66a40b12e5ac236ee0f3b78268de579073ba733a3a2f6d310371456c"),
)


class _GraphWriter:
    """Accumulates ONNX nodes and initialisers for the MiniFASNet layer vocabulary."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.w = weights
        self.nodes = []
        self.inits = []
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr.astype(np.float32)), name))
        return name

    def node(self, op: str, inputs: list[str], prefix: str, **attrs) -> str:
        from onnx import helper
        out = self._name(prefix)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, key: str, stride: int, pad: int, groups: int = 1) -> str:
        w = self.w[f"{key}.weight"]
        k = w.shape[-1]
        return self.node("Conv", [x, self.const(f"{key}.weight", w)], key, kernel_shape=[k, k],
                         strides=[stride, stride], pads=[pad] * 4, group=groups)

    def bn(self, x: str, key: str) -> str:
        names = [self.const(f"{key}.{p}", self.w[f"{key}.{p}"])
                 for p in ("weight", "bias", "running_mean", "running_var")]
        return self.node("BatchNormalization", [x, *names], key, epsilon=BN_EPS)

    def prelu(self, x: str, key: str) -> str:
        slope = self.w[f"{key}.weight"].reshape(-1, 1, 1)
        return self.node("PRelu", [x, self.const(f"{key}.weight", slope)], key)

    def conv_block(self, x: str, key: str, stride: int, pad: int, depthwise: bool, act: bool = True) -> str:
        groups = self.w[f"{key}.conv.weight"].shape[0] if depthwise else 1
        y = self.bn(self.conv(x, f"{key}.conv", stride, pad, groups), f"{key}.bn")
        return self.prelu(y, f"{key}.prelu") if act else y

    def se(self, x: str, key: str) -> str:
        y = self.node("GlobalAveragePool", [x], f"{key}.pool")
        y = self.bn(self.conv(y, f"{key}.fc1", 1, 0), f"{key}.bn1")
        y = self.node("Relu", [y], f"{key}.relu")
        y = self.bn(self.conv(y, f"{key}.fc2", 1, 0), f"{key}.bn2")
        y = self.node("Sigmoid", [y], f"{key}.sigmoid")
        return self.node("Mul", [x, y], f"{key}.scale")

    def depth_wise(self, x: str, key: str, stride: int, residual: bool) -> str:
        y = self.conv_block(x, f"{key}.conv", 1, 0, depthwise=False)
        y = self.conv_block(y, f"{key}.conv_dw", stride, 1, depthwise=True)
        y = self.conv_block(y, f"{key}.project", 1, 0, depthwise=False, act=False)
        if f"{key}.se_module.fc1.weight" in self.w:
            y = self.se(y, f"{key}.se_module")
        return self.node("Add", [x, y], f"{key}.add") if residual else y

    def residual_stage(self, x: str, key: str) -> str:
        count = 1 + max(int(m.group(1)) for k in self.w
                        if (m := re.match(rf"{re.escape(key)}\.model\.(\d+)\.", k)))
        for i in range(count):
            x = self.depth_wise(x, f"{key}.model.{i}", 1, residual=True)
        return x


def build_minifasnet_graph(weights: dict[str, np.ndarray], name: str = "minifasnet"):
    """The ONNX ModelProto for MiniFASNetV2 or V1SE (which one follows from the arrays)."""
    import onnx
    from onnx import TensorProto, helper

    weights = {k: np.asarray(v) for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    g = _GraphWriter(weights)
    x = "input"
    x = g.conv_block(x, "conv1", 2, 1, depthwise=False)
    x = g.conv_block(x, "conv2_dw", 1, 1, depthwise=True)
    x = g.depth_wise(x, "conv_23", 2, residual=False)
    x = g.residual_stage(x, "conv_3")
    x = g.depth_wise(x, "conv_34", 2, residual=False)
    x = g.residual_stage(x, "conv_4")
    x = g.depth_wise(x, "conv_45", 2, residual=False)
    x = g.residual_stage(x, "conv_5")
    x = g.conv_block(x, "conv_6_sep", 1, 0, depthwise=False)
    x = g.conv_block(x, "conv_6_dw", 1, 0, depthwise=True, act=False)
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.node("Gemm", [x, g.const("linear.weight", weights["linear.weight"])], "linear", transB=1)
    x = g.bn(x, "bn")
    g.nodes.append(helper.make_node("Gemm", [x, g.const("prob.weight", weights["prob.weight"])],
                                    ["logits"], name="prob", transB=1))
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="facegate.liveness.minifasnet")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def load_weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def build_minifasnet_pack(weights_dir: str | Path, model_dir: str | Path, allow_unpinned: bool = False,
                          reference_dir: str | Path | None = None) -> Path:
    """Build both networks from ``weights_dir`` into ``model_dir/minifasnet`` (replaced atomically).

    Archives whose sha256 differs from the pinned one are refused unless ``allow_unpinned``.
    When ``reference_dir`` holds ``*.reference.npz`` files (input + logits), each built graph is
    checked against them and the build fails on a mismatch above 1e-3.
    """
    import onnx

    weights_dir = Path(weights_dir).expanduser()
    model_dir = Path(model_dir).expanduser()
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-minifasnet-", dir=model_dir))
    try:
        entries = []
        for spec in MINIFASNET_MODELS:
            src = weights_dir / spec.weights_file
            if not src.exists():
                raise FileNotFoundError(f"{src} not found: supply the {spec.name} weights archive")
            digest = sha256_file(src)
            if digest != spec.weights_sha256 and not allow_unpinned:
                raise ValueError(f"{src.name} has sha256 {digest}, expected {spec.weights_sha256}; "
                                 "refusing unknown weights (use --allow-unpinned to override)")
            model = build_minifasnet_graph(load_weights(src), spec.name)
            out = staging / f"{spec.name}.onnx"
            onnx.save(model, str(out))
            entry = {
                "name": spec.name, "task": "pad", "file": out.name, "sha256": sha256_file(out),
                "source": {"package": "Silent-Face-Anti-Spoofing (Minivision)", "licence": "Apache-2.0",
                           "weights_file": spec.weights_file, "weights_sha256": digest},
                "inputs": [{"name": "input", "shape": ["batch", 3, INPUT_SIZE, INPUT_SIZE]}],
                "outputs": [{"name": "logits", "shape": ["batch", 3]}],
                "colour_order": "BGR", "pixel_scaling": "raw 0..255", "crop_scale": spec.crop_scale,
                "live_class": 1,
            }
            ref = Path(reference_dir) / spec.weights_file.replace(".weights.", ".reference.") if reference_dir else None
            if ref is not None and ref.exists():
                err = reference_error(out, ref)
                if err > 1e-3:
                    raise ValueError(f"{spec.name}: built graph differs from the reference logits by {err:.2e}")
                entry["reference_max_abs_error"] = float(err)
            entries.append(entry)
        manifest = {"format": PACK_FORMAT, "pack": PACK_NAME, "pack_id": f"{PACK_NAME}-{entries[0]['sha256'][:12]}",
                    "kind": "pad", "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "models": entries}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        dest = model_dir / PACK_NAME
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
        return dest
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def reference_error(onnx_path: Path, reference_npz: Path) -> float:
    """Largest absolute difference between the graph's logits and the reference logits."""
    from facegate.models.onnx import create_session

    with np.load(reference_npz) as ref:
        x, want = ref["input"].astype(np.float32), ref["logits"]
    sess = create_session(onnx_path, "CPUExecutionProvider")
    got = sess.run(None, {"input": x})[0]
    return float(np.abs(got - want).max())
