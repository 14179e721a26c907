"""The images, built once per test session with scripts/build-image.sh --deploy (podman's layer
cache and the base tarball in ~/.cache/facegate/image-base make a rebuild of unchanged sources
take seconds)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .support import REPO, engine_env, need, need_podman


@pytest.fixture(scope="session")
def images() -> dict:
    need_podman()
    cache = Path(os.environ.get("FACEGATE_IMAGE_CACHE") or Path.home() / ".cache" / "facegate" / "image-base")
    need(shutil.which("mmdebstrap") is not None or any(cache.glob("bookworm-*.tar")),
         "mmdebstrap is not installed (scripts/test.sh installs it) and no base image is cached: "
         "the base image is made with it")
    started = time.monotonic()
    proc = subprocess.run(["bash", "scripts/build-image.sh", "--deploy"], cwd=REPO, env=engine_env(),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"scripts/build-image.sh failed ({proc.returncode}):\n{proc.stderr[-5000:]}"
    line = proc.stdout.strip().splitlines()[-1]
    size = int(re.search(r"\((\d+) bytes\)", line).group(1))
    print(f"\n{line}; build-image.sh --deploy took {time.monotonic() - started:.0f} s")
    return {"facegate": "localhost/facegate:latest", "postgres": "localhost/facegate-postgres:local",
            "nginx": "localhost/facegate-nginx:local", "size_bytes": size}
