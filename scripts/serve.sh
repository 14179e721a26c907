#!/usr/bin/env bash
# Install, build the model pack and run the service on the embedded SQLite default.
# Extra arguments go to `facegate serve` (e.g. --host 0.0.0.0 --port 8000 --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
FACEGATE_EXTRAS=${FACEGATE_EXTRAS:-} bash scripts/setup.sh
exec .venv/bin/facegate serve "$@"
