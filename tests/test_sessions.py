import onnxruntime as ort
import pytest

from facegate.models.onnx import create_session, resolve_providers


def test_auto_providers_use_cuda_only_when_onnxruntime_sees_it():
    chosen = resolve_providers("auto")
    assert chosen[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in chosen) == ("CUDAExecutionProvider" in ort.get_available_providers())


def test_explicit_providers_are_checked():
    assert resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="not available"):
        resolve_providers("NoSuchExecutionProvider")


def test_sessions_have_spinning_off(engine):
    path = engine.pack.verified_path("fr_eye")
    sess = create_session(path, "CPUExecutionProvider")
    opts = sess.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.set_denormal_as_zero") == "1"
