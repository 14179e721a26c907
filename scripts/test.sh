#!/usr/bin/env bash
# Install, build the model pack, start a throwaway PostgreSQL for the store tests, run the suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The MiniFASNet PAD models are built from the evaluation copy of their weights when it is
# there (operators supply their own; nothing of it is committed), so every machine tests the same.
SHARED_DIR=${FACEGATE_SHARED:-../shared}
if [ -d "$SHARED_DIR/models/minifasnet" ]; then
  .venv/bin/facegate liveness build-pad --weights "$SHARED_DIR/models/minifasnet" >/dev/null
fi
if [ -z "${FACEGATE_TEST_POSTGRES_URL:-}" ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || echo "warning: apt-get install postgresql failed" >&2
  fi
  if url=$(bash scripts/start-postgres.sh); then
    export FACEGATE_TEST_POSTGRES_URL="$url"
  elif [ "${FACEGATE_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "PostgreSQL could not be started and FACEGATE_REQUIRE_POSTGRES=1" >&2; exit 1
  else
    echo "warning: PostgreSQL could not be started; PostgreSQL store tests will skip" >&2
  fi
fi
exec .venv/bin/python -m pytest -q "$@"
