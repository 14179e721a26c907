"""The runtime seam (issue 32): each model on onnxruntime or OpenVINO behind the same session
interface, auto's choice by measurement and the accuracy gate on the pack's gate faces, settings
that cannot be honoured refused in one line, and the same embeddings either way (so onnxruntime
stays the reference and existing galleries stay valid)."""
from __future__ import annotations

import dataclasses
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from facegate.errors import FacegateError
from facegate.models import runtime
from facegate.models.arcface import ArcFaceStyleEmbedder, pixels

FR = {"mean": 127.0, "std": 128.0, "swap_rb": False}
SFACE = {"mean": 0.0, "std": 1.0, "swap_rb": True}


@pytest.fixture(scope="module")
def pack(settings):
    from facegate.models.pack import load_pack
    p = load_pack(settings.model_dir, settings.pack)
    if not (p.path / runtime.GATE_FACES).exists():
        pytest.fail("the pack has no gate faces: run `facegate models build` (scripts/setup.sh does)")
    return p


@pytest.fixture
def crops(pack) -> list[np.ndarray]:
    return list(np.load(pack.path / runtime.GATE_FACES)[:24])


@pytest.fixture
def fresh(settings, monkeypatch, tmp_path):
    """Settings whose placement is measured now (nothing remembered from other processes)."""
    monkeypatch.setattr(runtime, "PLACEMENT_CACHE", f"placements-test-{tmp_path.name}.json")
    yield lambda **kw: dataclasses.replace(settings, intra_op_threads=1, **kw)
    for leftover in Path(settings.model_dir).expanduser().glob(f"*/placements-test-{tmp_path.name}.json"):
        leftover.unlink()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


@pytest.mark.parametrize("name,how", [("fr_feature", FR), ("sface", SFACE)])
def test_openvino_embeds_as_onnxruntime_does(pack, crops, fresh, name, how):
    ort = ArcFaceStyleEmbedder(runtime.open_model(pack.verified_path(name), fresh(runtime="onnxruntime")), **how)
    ov = ArcFaceStyleEmbedder(runtime.open_model(pack.verified_path(name), fresh(runtime="openvino"),
                                                 partial(pixels, **how)), **how)
    assert isinstance(ov.session, runtime.OpenVinoSession) and not isinstance(ort.session, runtime.OpenVinoSession)
    assert ov.dim == ort.dim and ov.input_size == ort.input_size == 112
    cos = _cosines(ort.embed(crops), ov.embed(crops))
    assert cos.min() >= 0.9999, cos.min()
    assert runtime.PLACEMENTS[name].runtime == "openvino" and runtime.PLACEMENTS[name].min_cosine >= 0.9999


def test_auto_keeps_onnxruntime_where_openvino_is_missing_or_the_size_is_symbolic(pack, fresh, monkeypatch):
    _, placed = runtime.place(pack.verified_path("yunet"), fresh())
    assert (placed.runtime, placed.why) == ("onnxruntime", "symbolic input size")
    monkeypatch.setattr(runtime, "openvino_core", lambda: None)
    _, placed = runtime.place(pack.verified_path("fr_feature"), fresh())
    assert (placed.runtime, placed.why) == ("onnxruntime", "openvino is not installed")


def test_auto_measures_and_remembers_its_choice(pack, fresh, monkeypatch):
    s = fresh()
    _, first = runtime.place(pack.verified_path("fr_feature"), s, partial(pixels, **FR))
    assert first.onnxruntime_ms > 0 and first.openvino_ms > 0
    assert first.runtime == ("openvino" if first.onnxruntime_ms >= runtime.MIN_GAIN * first.openvino_ms
                             else "onnxruntime")

    def no_measuring(*a, **kw):
        raise AssertionError("measured again")
    monkeypatch.setattr(runtime, "_place", no_measuring)
    session, again = runtime.place(pack.verified_path("fr_feature"), s, partial(pixels, **FR))
    assert again == first and isinstance(session, runtime.OpenVinoSession) == (first.runtime == "openvino")
    assert runtime.remembered(pack.path, s)["fr_feature"] == first


@pytest.mark.parametrize("runtime_,precision,needle", [
    ("openvino", "auto", "pip install openvino"),
    ("auto", "bf16", "no bf16"),
    ("onnxruntime", "bf16", "FACEGATE_RUNTIME=openvino or auto"),
    ("tensorrt", "auto", "FACEGATE_RUNTIME='tensorrt'"),
    ("auto", "int8", "int8 is not built yet"),
])
def test_settings_that_cannot_be_honoured_are_one_line(pack, fresh, monkeypatch, runtime_, precision, needle):
    if runtime_ == "openvino":
        monkeypatch.setattr(runtime, "openvino_core", lambda: None)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda core: False)
    with pytest.raises(FacegateError) as e:
        runtime.place(pack.verified_path("fr_feature"), fresh(runtime=runtime_, precision=precision))
    assert e.value.code == "model_unavailable" and needle in e.value.message and "\n" not in e.value.message


class _Noisy:
    """An OpenVINO session whose bf16 outputs are off by ``noise`` (a precision that would move scores)."""

    def __init__(self, real, noise):
        self.real, self.noise = real, noise

    def __getattr__(self, name):
        return getattr(self.real, name)

    def run(self, names, feed):
        out = self.real.run(names, feed)
        rng = np.random.default_rng(1)
        return [o + self.noise * np.abs(o).mean() * rng.standard_normal(o.shape).astype(o.dtype) for o in out]


@pytest.mark.parametrize("noise,expected", [(0.0, "bf16"), (0.5, "fp32")])
def test_the_gate_lets_a_precision_through_only_where_it_agrees_with_fp32(pack, fresh, monkeypatch, noise, expected):
    """This CPU may have no bf16: the bf16 session is fp32 with a chosen error, and the gate
    must accept it without error and refuse it with one."""
    real = runtime.OpenVinoSession
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda core: True)
    monkeypatch.setattr(runtime, "OpenVinoSession", lambda path, precision="fp32", threads=0, core=None:
                        _Noisy(real(path, "fp32", threads, core), noise if precision == "bf16" else 0.0))
    _, placed = runtime.place(pack.verified_path("fr_feature"), fresh(runtime="openvino"), partial(pixels, **FR))
    assert placed.precision == expected
    if expected == "fp32":
        assert "bf16 refused by the gate" in placed.why
        with pytest.raises(FacegateError) as e:
            runtime.place(pack.verified_path("fr_feature"), fresh(runtime="openvino", precision="bf16"),
                          partial(pixels, **FR))
        assert e.value.code == "model_unavailable" and "FACEGATE_PRECISION=fp32" in e.value.message


def test_an_openvino_session_serves_several_threads_at_once(pack, crops, fresh):
    emb = ArcFaceStyleEmbedder(runtime.open_model(pack.verified_path("fr_feature"), fresh(runtime="openvino")), **FR)
    expected = emb.embed(crops[:8])
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(emb.embed(crops[:8]))
        except Exception as exc:       # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20
    assert all(np.allclose(r, expected, atol=1e-6) for r in results)


def test_the_engine_decides_the_same_on_either_runtime(settings, lfw_images):
    """Verify scores of real LFW pairs on onnxruntime and on whatever auto picked agree to 1e-3
    (auto may also move O-Net, whose landmarks shift the crop a little) and every decision at
    the default operating point is the same, so a gallery enrolled on one runtime is matched on
    the other."""
    from facegate.engine import FaceEngine
    from facegate.matching.decisions import threshold
    people = sorted(p for p in lfw_images.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)[:6]
    photos = [sorted(p.glob("*.jpg"))[:2] for p in people]
    scores = {}
    for name in ("onnxruntime", "auto"):
        engine = FaceEngine.load(dataclasses.replace(settings, runtime=name))
        embs = [[engine.face(p.read_bytes(), policy="largest").embedding for p in pair] for pair in photos]
        scores[name] = np.array([float(a @ b) for a, b in embs] + [float(embs[i][0] @ embs[i + 1][0])
                                                                    for i in range(len(embs) - 1)])
    assert np.abs(scores["onnxruntime"] - scores["auto"]).max() <= 1e-3, scores
    point = threshold(engine.operating_points, settings.target_fmr)
    assert [point.matches(x) for x in scores["onnxruntime"]] == [point.matches(x) for x in scores["auto"]]
    assert sum(point.matches(x) for x in scores["auto"]) == len(photos)        # genuine pairs match, others not
