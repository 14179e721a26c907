#!/usr/bin/env bash
# Install, build the model pack, start a throwaway PostgreSQL for the store tests, run the suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${FACEGATE_TEST_POSTGRES_URL:-}" ] && [ -f scripts/start-postgres.sh ]; then
  if url=$(bash scripts/start-postgres.sh); then
    export FACEGATE_TEST_POSTGRES_URL="$url"
  else
    echo "warning: PostgreSQL could not be started; PostgreSQL store tests will skip" >&2
  fi
fi
exec .venv/bin/python -m pytest -q "$@"
