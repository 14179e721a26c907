#!/usr/bin/env bash
# The full schemathesis run (~30 minutes on the 2-core machine): a fresh `facegate serve` with an
# admin and a kiosk key, every operation of /openapi.json fuzzed for --max-time seconds per key
# (positive and negative data, stateful sequences), checks: no 5xx, declared status codes, media
# types and response schemas. Prints the summary (cases, failures by kind, the server's 5xx count)
# and writes it with both reports to --out. Figures: benchmarks/results/security.md.
#   bash scripts/fuzz.sh                      # the recorded run
#   bash scripts/fuzz.sh --max-time 60        # a short look
# Exit status 0 only with no failure, no error and no 5xx. The CI test is tests/security/test_schemathesis.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python tests/security/fuzz.py --max-time 840 --examples 1000 --workers 2 --stateful \
  --out benchmarks/results/fuzz.json "$@"
