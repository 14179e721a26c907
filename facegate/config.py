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

from facegate.vocab import INDEX_KINDS, PERIOD_KINDS, PURPOSES


def _default_model_dir() -> str:
    return str(Path.home() / ".cache" / "facegate" / "models")


@dataclass(frozen=True)
class Settings:
    model_dir: str = field(default_factory=_default_model_dir)
    pack: str = "default"                 # a pack name under model_dir, or a folder path
    providers: str = "auto"               # "auto", or a comma list e.g. "CPUExecutionProvider"
    intra_op_threads: int = 0             # 0 = onnxruntime default (all cores)
    runtime: str = "auto"                 # auto | onnxruntime | openvino, per model (facegate/models/runtime.py)
    precision: str = "auto"               # auto | fp32 | bf16 (OpenVINO on a CPU with bf16, behind the gate)
    runtime_cosine_floor: float = 0.995   # a precision is used only where its outputs agree with fp32 this well
    data_dir: str = "./data"
    database_url: str = ""                # default: sqlite under data_dir
    max_image_bytes: int = 15 * 1024 * 1024
    max_image_pixels: int = 25_000_000       # a 24 MP camera photo fits; more is refused on the header, before decoding
    min_face_px: int = 24                 # smallest face the detector looks for
    min_enrol_face_px: int = 64           # reject enrolment photos with smaller faces
    min_verify_face_px: int = 40          # smaller faces: face_too_small
    target_fmr: float = 1e-4              # default operating point
    identify_margin: float = 0.05         # 1:N: first subject must beat the second by this
    identify_fmr: float = 1e-5            # 1:N and the enrolment duplicate check: per-comparison FMR; a search of N
                                          # subjects makes ~N comparisons (FPIR per point: benchmarks/RESULTS.md)
    population: str = ""                  # calibration table for this deployment's population: "" = the pack's default table
                                          # (lfw-dev + NUAA dev); NAME = calibration-NAME.json in the pack or the shipped
                                          # facegate/calibration/<pack>-NAME.json (e.g. "lfw"); a name without a table
                                          # stops the engine from loading (model_unavailable). See README "Operating points".
    data_key: str = ""                    # base64 AES key for templates at rest
    data_key_file: str = ""
    store_images: bool = False
    second_opinion: bool = True           # 1:N: rescore the shortlist with the pack's second embedder (SFace) where
                                          # the subjects have its templates; enrolment and import store both
                                          # (benchmarks/results/gallery.md, "second opinion")
    index_kind: str = "auto"              # auto | flat | ivf_sq | ivf_pq | ivf_pq_refine | hnsw_sq
    index_early_stop: float = 0.6         # ivf_pq_refine: a candidate at this cosine in the nearest cells ends a
                                          # 1:N search early (<= 0: always full depth); see docs/gallery.md
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    inference_concurrency: int = 2
    inference_queue: int = 8
    cors_origins: str = ""
    api_docs: bool = False                # /docs and /redoc: Swagger UI and ReDoc load script from a public CDN (docs/security.md); /openapi.json is always served
    rate_limit_per_minute: int = 600
    max_request_bytes: int = 32 * 1024 * 1024   # whole HTTP body (multipart or base64 JSON)
    review_band: float = 0.05             # verify: scores this far under the threshold -> manual_review
    review_min_quality: float = 0.35      # verify: face quality under this -> manual_review
    min_document_face_px: int = 20        # compare: the ID-card chip photo side (~102x126 px)
    identify_top_k: int = 5
    retry_after_s: int = 1                # Retry-After on 503 overloaded
    index_sync_s: float = 2.0             # how often a server re-reads gallery changes from the database
    key_cache_s: float = 5.0              # longest life of a cached API key; keys are cached only while the change feed
                                          # (PostgreSQL) is connected, which announces revocations at once (auth.KeyCache)
    graceful_shutdown_s: float = 20.0     # SIGTERM: in-flight requests get this long to finish before they are cut
                                          # (uvicorn's timeout_graceful_shutdown); keep it under the orchestrator's kill
                                          # grace (deploy/compose.yaml: stop_grace_period 30s), over the slowest request
    keep_reference: bool = True           # keep an encrypted face crop of each enrolment photo (the console shows it to
                                          # reviewers; `templates reembed` rebuilds templates from it); 0 = none kept
    console_idle_min: float = 15.0        # operator console: a session unused this long ends
    console_absolute_h: float = 8.0       # ... and every session ends this long after sign-in
    console_max_failures: int = 5         # failed sign-ins under a name or device before each try waits
    console_source_max_failures: int = 20  # ... from one address (a service hall's NAT), likewise
    console_lockout_s: float = 60.0       # the first wait; each further failure doubles it ...
    console_throttle_max_s: float = 900.0  # ... up to this (a wait, never a lock an outsider can hold)
    console_claim_s: int = 600            # a reviewer's claim on a case lasts this long
    console_secure_cookie: bool = True    # the session cookie is Secure (served over TLS, or on loopback)
    console_oidc_issuer: str = ""         # single sign-on (OpenID Connect, authorization code + PKCE): the provider's issuer
    console_oidc_client_id: str = ""
    console_oidc_client_secret: str = ""
    console_oidc_redirect_uri: str = ""   # default: this server's /console/api/oidc/callback as the request reached it
    console_oidc_name_claim: str = "preferred_username"   # the name an auto-created operator gets, when free
    console_oidc_auto_create: bool = False   # an unknown (issuer, sub) becomes an operator with no role until granted
    liveness_seed: int | None = None      # tests only: deterministic challenges
    liveness_challenge: str = ""          # tests only: every session gets this challenge (comma list of actions)
    cert_period: str = "year"             # pension certification period: year | half | quarter | month
    cert_grace_days: int = 0              # days after a period ends before the uncertified are overdue
    cert_max_failures: int = 3            # failed face attempts within the window -> locked to manual review
    cert_failure_window_h: float = 24.0
    kiosk_require_liveness: bool = True   # kiosk: no passed liveness session -> manual_review, never a match
    kiosk_review_wait_s: float = 180.0    # kiosk: how long the person waits for a reviewer before the counter
    liveness_pad: str = "auto"            # passive PAD: auto | none | comma list of fr_liveness, minifasnet
    liveness_pad_threshold: float = 0.5   # fused P(live) needed to pass: mean over PAD families of each one's median
    liveness_pad_frames: int = 4          # frames of a capture scored by passive PAD
    liveness_require_passive: bool = True  # no PAD model installed -> not live ("passive: unavailable")
    liveness_identity_fmr: float = 1e-3   # the still photo sent with a capture shows its face: 1:1 threshold at this FMR
    liveness_identity_threshold: float = 0.35   # same face throughout one capture (lowest pairwise cosine); calibrated
                                                # on genuine vs swapped captures, benchmarks/results/liveness_calibration.md
    liveness_session_ttl_s: int = 45      # time to send the capture after the challenge is issued
    liveness_result_ttl_s: int = 120      # a passed session can be used (once) this long
    liveness_max_frames: int = 450
    liveness_max_seconds: float = 20.0
    liveness_max_frame_pixels: int = 4_000_000   # a frame upload over this is refused before decoding (frames are
                                                 # reduced to 640 px on arrival; a 2560x1440 camera frame fits)
    liveness_session_bytes: int = 32 * 1024 * 1024   # stored frames of one capture (450 frames of ~70 kB JPEG)
    liveness_key_bytes: int = 256 * 1024 * 1024      # stored frames of all of one key's captures in progress
    liveness_open_sessions: int = 64      # sessions one key may have waiting for their capture at once
    liveness_detect_side: int = 320       # face detection runs on frames downscaled to this long side
    liveness_pose_every: int = 5          # head pose model on every n-th frame while the head is still, interpolated in between
    liveness_pose_every_moving: int = 1   # ... and on every n-th frame while it turns or nods
    liveness_intra_op_threads: int = 1    # threads of each liveness model (a capture is one request's work)
    liveness_detect_every: int = 5        # detector on every n-th frame; the 68 points carry the box in between
    # ---- the 2025 face-recognition rules (docs/compliance.md says which article each serves)
    consent_required: bool = True         # captures and enrolments need a consent record of the current notice
    consent_legal_basis: str = ""         # enrolment without a consent record on this named legal basis instead
                                          # (e.g. a statute); recorded in each enrolment's audit row
    default_purpose: str = "pension_certification"   # the purpose of an enrolment or capture that names none
    retention_liveness_frames_days: float = 0.0       # frames of a judged or expired capture (deleted when judged)
    retention_liveness_sessions_days: float = 1.0     # session rows (the live face's embedding) after expiry
    retention_withdrawn_days: float = 0.0             # subject rows after consent was withdrawn (faces: at once)
    retention_deceased_days: float = 30.0             # templates of subjects marked deceased
    retention_certification_periods: int = 2          # certification captures: embeddings of this many periods
    retention_decision_evidence_days: float = 30.0    # kept decision evidence after a person decided (console)
    retention_operator_sessions_days: float = 30.0    # operator sessions after they ended (console)
    retention_audit_days: float = 5 * 366.0           # audit rows, archived with the chain's head
    retention_interval_s: float = 3600.0  # the in-service purge: one replica per interval (0 = off)
    retention_lease_s: float = 600.0      # a purge that died holds its lease this long at most
    filing_threshold: int = 100_000       # individuals whose face information is stored: the filing count (备案)
    stored_individuals_warn: int = 90_000  # the service logs a warning at or over this count
    stored_count_interval_s: float = 600.0  # the service's filing count: counted once per interval across replicas

    def __post_init__(self):
        for name, allowed in _CLOSED.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"FACEGATE_{name.upper()}={value!r} is not one of {', '.join(allowed)}")

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
_CLOSED = {"index_kind": ("auto", *INDEX_KINDS), "cert_period": PERIOD_KINDS, "default_purpose": PURPOSES}


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
