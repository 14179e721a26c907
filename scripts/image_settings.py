"""The package-index settings of this machine, for an image build (scripts/build-image.sh).

Writes into OUT_DIR a ``pip.conf`` with pip's effective settings here (``pip config list``:
files and PIP_* variables) and, when npm is installed, an ``npmrc`` with npm's (the user and
global files plus the effective registry), then prints one ``--volume`` argument per line: those
two files at the places pip and npm read them as root in the build, and every local path the
settings name (a file:// index, a find-links folder, a CA bundle, a constraints file) at the
same path, read-only. Nothing here names a registry: whatever this machine uses, the build uses.

    python3 scripts/image_settings.py OUT_DIR
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

_PIP_LINE = re.compile(r"^(?P<section>[^.]*)\.(?P<name>[^=]+)=(?P<value>.*)$")


def pip_settings() -> dict[str, dict[str, str]]:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    sections: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for line in out.splitlines():
        m = _PIP_LINE.match(line.strip())
        if not m:
            continue
        value = m["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if m["section"] == ":env:":
            env[m["name"]] = value
        else:
            sections.setdefault(m["section"], {})[m["name"]] = value
    sections.setdefault("global", {}).update(env)      # PIP_* variables win over the files
    return sections


def npm_settings() -> str | None:
    if shutil.which("npm") is None:
        return None

    def get(key: str) -> str:
        return subprocess.run(["npm", "config", "get", key], capture_output=True, text=True).stdout.strip()

    lines = []
    for key in ("globalconfig", "userconfig"):
        path = Path(get(key))
        if path.is_file():
            lines += [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith((";", "#"))]
    lines = [ln for ln in lines if not ln.strip().startswith(("prefix", "nodedir", "cache"))]
    registry = get("registry")
    if registry:
        lines.append(f"registry={registry}")
    return "\n".join(lines) + "\n"


def local_paths(values) -> set[str]:
    """Absolute paths that exist here, named by the settings (plain or file:// URLs)."""
    found = set()
    for value in values:
        for word in re.split(r"[\s,]+", value):
            word = word.strip().strip("'\"")
            if word.startswith("file://"):   # an index's pages link to files beside it (../../files/...)
                word = os.path.dirname(urlparse(word).path.rstrip("/"))
            if word.startswith("/") and os.path.exists(word):
                found.add(word)
    return found


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    volumes = []
    values: list[str] = []
    pip = pip_settings()
    conf = configparser.ConfigParser(interpolation=None)
    for section, items in pip.items():
        conf[section] = items
        values += items.values()
    with open(out / "pip.conf", "w") as fh:
        conf.write(fh)
    volumes.append(f"{out / 'pip.conf'}:/etc/pip.conf:ro")
    npmrc = npm_settings()
    if npmrc is not None:
        (out / "npmrc").write_text(npmrc)
        volumes.append(f"{out / 'npmrc'}:/root/.npmrc:ro")
        values += [ln.split("=", 1)[1] for ln in npmrc.splitlines() if "=" in ln]
    volumes += [f"{os.path.realpath(p)}:{p}:ro" for p in sorted(local_paths(values))]
    print("\n".join(f"--volume={v}" for v in volumes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
