"""All configuration in one place: environment variables, optionally a TOML config file.

Precedence: explicit keyword arguments > environment (``FACEGATE_<NAME>``) > the TOML file
named by ``FACEGATE_CONFIG`` > defaults.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


def _default_model_dir() -> str:
    return str(Path.home() / ".cache" / "facegate" / "models")


@dataclass(frozen=True)
class Settings:
    model_dir: str = field(default_factory=_default_model_dir)
    pack: str = "default"                 # a pack name under model_dir, or a folder path
    providers: str = "auto"               # "auto", or a comma list e.g. "CPUExecutionProvider"
    intra_op_threads: int = 0             # 0 = onnxruntime default (all cores)
    data_dir: str = "./data"
    database_url: str = ""                # default: sqlite under data_dir
    max_image_bytes: int = 15 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    min_face_px: int = 40                 # MTCNN minimum face size for detection
    min_enrol_face_px: int = 64           # reject enrolment photos with smaller faces
    min_verify_face_px: int = 32
    target_fmr: float = 1e-4              # default operating point
    identify_margin: float = 0.05         # 1:N: first subject must beat the second by this
    data_key: str = ""                    # base64 AES key for templates at rest
    data_key_file: str = ""
    store_images: bool = False
    index_kind: str = "auto"              # auto | flat | hnsw
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    inference_concurrency: int = 2
    inference_queue: int = 8
    cors_origins: str = ""
    rate_limit_per_minute: int = 600
    liveness_seed: int | None = None      # tests only: deterministic challenges

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'facegate.db'}"

    @classmethod
    def load(cls, **overrides) -> "Settings":
        values: dict = {}
        cfg_path = os.environ.get("FACEGATE_CONFIG")
        if cfg_path:
            with open(cfg_path, "rb") as fh:
                values.update(tomllib.load(fh).get("facegate", {}))
        for f in dataclasses.fields(cls):
            env = os.environ.get(f"FACEGATE_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items() if k in _FIELD_NAMES})


_FIELD_NAMES = {f.name for f in dataclasses.fields(Settings)}


def _coerce(cls, name: str, value):
    default = next(f for f in dataclasses.fields(cls) if f.name == name)
    kind = default.type
    if not isinstance(value, str):
        return value
    if "bool" in kind:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if "int" in kind:
        return int(value) if value.strip() else None
    if "float" in kind:
        return float(value)
    return value
