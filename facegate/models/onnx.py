"""onnxruntime sessions with the options facegate needs everywhere.

Providers are chosen automatically (CUDA when onnxruntime-gpu sees a GPU, else CPU) unless
``providers`` names them. Intra-op spinning is off: with several small sessions alternating on
two cores, spinning threads slowed the whole pipeline several times over (../shared/MODEL-FACTS.md).
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)


def resolve_providers(providers: str | list[str] | None = "auto") -> list[str]:
    available = ort.get_available_providers()
    if providers in (None, "", "auto"):
        chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
        return chosen + ["CPUExecutionProvider"]
    wanted = providers.split(",") if isinstance(providers, str) else list(providers)
    wanted = [p.strip() for p in wanted if p.strip()]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ValueError(f"execution providers {missing} are not available (have {available})")
    return wanted


def create_session(path: str | Path, providers: str | list[str] | None = "auto",
                   intra_op_threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=resolve_providers(providers))
