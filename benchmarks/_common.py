"""What the benchmark scripts share: where the repository and the evaluation data are, summary
statistics of timings, the machine's load, and a real ``facegate serve`` on loopback (also the
service tests' server: ``tests/service_support.py`` re-exports it).

The scripts run from the repository root as modules: ``python -m benchmarks.<name> ...``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
FACEGATE = [sys.executable, "-m", "facegate"]


def shared_dir() -> Path:
    """The evaluation data (``data/``, ``models/``): ``$FACEGATE_SHARED``, else ``../shared``
    next to the repository."""
    env = os.environ.get("FACEGATE_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def add_shared_option(ap) -> None:
    """A ``--shared`` option on an argparse parser: the evaluation data, default :func:`shared_dir`."""
    ap.add_argument("--shared", default=str(shared_dir()),
                    help="the evaluation data (default: $FACEGATE_SHARED, else ../shared)")


# ------------------------------------------------------------------ figures
def pct(values, q: float) -> float:
    """The ``q``-th percentile (numpy's linear interpolation); NaN for no values."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, q)) if v.size else float("nan")


def ms(seconds) -> dict:
    """Median, mean, 90th percentile (milliseconds, 2 decimals) and count of timings in seconds."""
    v = np.asarray(seconds, dtype=np.float64) * 1000
    return {"median": round(float(np.median(v)), 2), "mean": round(float(v.mean()), 2),
            "p90": round(pct(v, 90), 2), "n": int(v.size)}


def uptime() -> str:
    """``uptime``'s line (the load averages tell how busy a shared machine was)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


# ------------------------------------------------------------------ a real server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict, *args: str, check: bool = True, checkout: Path | str = REPO) -> subprocess.CompletedProcess:
    """``facegate ARGS`` in a subprocess with ``env`` (a server's, to reach its data directory)."""
    proc = subprocess.run([*FACEGATE, *args], env=env, cwd=checkout, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"facegate {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def create_key(env: dict, role: str, *extra: str, checkout: Path | str = REPO) -> dict:
    """A new API key made with the real CLI (``facegate keys create``); ``["key"]`` is the secret."""
    return json.loads(cli(env, "keys", "create", "--role", role, "--json", *extra, checkout=checkout).stdout)


class ServerProcess:
    """``facegate serve`` in a subprocess on a free loopback port; ``url`` is its base address.

    ``data_dir`` becomes FACEGATE_DATA_DIR (FACEGATE_DATABASE_URL of the calling environment is
    dropped, so the server uses its own SQLite store there); ``settings`` become FACEGATE_*
    variables (``rate_limit_per_minute=10`` -> ``FACEGATE_RATE_LIMIT_PER_MINUTE=10``); ``env``
    adds other variables; ``serve_args`` go after ``facegate serve``'s own. ``self.env`` is ready
    before ``start()``, so keys can be made first (:func:`create_key`). The server's output goes
    to ``log_path`` (relative to ``data_dir``, default ``server.log``; ``log()`` returns its
    end), or with ``log_path=None`` to this process's stdout and stderr.
    """

    def __init__(self, data_dir: Path | str, workers: int = 1, *, env: dict | None = None,
                 serve_args: tuple[str, ...] = (), log_path: Path | str | None = "server.log",
                 checkout: Path | str = REPO, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FACEGATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1",
                    **{f"FACEGATE_{k.upper()}": str(v) for k, v in settings.items()}, **(env or {})}
        self.env.pop("FACEGATE_DATABASE_URL", None)
        # Benchmarks measure matching and liveness, not consent: their servers do not ask for it
        # unless a caller says so (consent_required=1, as tests/test_compliance.py does).
        self.env.setdefault("FACEGATE_CONSENT_REQUIRED", "0")
        self.workers = workers
        self.serve_args = tuple(serve_args)
        self.checkout = Path(checkout)        # the facegate served (another checkout's, to compare)
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(data_dir) / log_path if log_path is not None else None
        self._log = None

    def start(self, timeout: float = 90, interval: float = 0.2) -> "ServerProcess":
        """Start the server and wait until ``/readyz`` answers 200 (checked every ``interval`` s)."""
        self._log = open(self.log_path, "wb") if self.log_path is not None else None
        output = {"stdout": self._log, "stderr": subprocess.STDOUT} if self._log else {}
        self.proc = subprocess.Popen([*FACEGATE, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--workers", str(self.workers), "--log-level", "warning", *self.serve_args],
                                     env=self.env, cwd=self.checkout, **output)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(interval)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout}s: {self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """The last 4,000 characters the server wrote (nothing with ``log_path=None``)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
