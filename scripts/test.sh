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
# The capture page's browser tests (tests/browser) drive Debian's chromium through Playwright for
# Python (Playwright's own browser download is not used); a CJK font renders the Chinese texts.
need_apt=""
command -v chromium >/dev/null 2>&1 || need_apt="chromium"
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need_apt="$need_apt fonts-wqy-microhei"
if [ -n "$need_apt" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >/dev/null) \
    || echo "warning: apt-get install$need_apt failed; the browser tests will fail in CI" >&2
fi
# The console's single sign-on test (tests/browser/test_console_oidc.py) runs a real OpenID Connect
# provider, npm's oidc-provider (pinned in tests/oidc/package.json), on Debian's nodejs.
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) \
    || echo "warning: apt-get install nodejs npm failed; the OIDC test will skip" >&2
fi
if command -v npm >/dev/null 2>&1 && [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  (cd tests/oidc && npm install --no-audit --no-fund --silent) || echo "warning: npm install in tests/oidc failed" >&2
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
# nginx for the replica tests (tests/replicas/test_replicas.py starts its own, on free ports, with
# deploy/nginx.conf): Debian's package where it is missing. Where PostgreSQL is required (CI),
# nginx is too, unless FACEGATE_REQUIRE_NGINX says otherwise.
export FACEGATE_REQUIRE_NGINX="${FACEGATE_REQUIRE_NGINX:-${FACEGATE_REQUIRE_POSTGRES:-}}"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null) \
      || echo "warning: apt-get install nginx failed" >&2
  fi
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$FACEGATE_REQUIRE_NGINX" = 1 ]; then
      echo "nginx could not be installed and FACEGATE_REQUIRE_NGINX=1" >&2; exit 1
    fi
    echo "warning: nginx is not installed; the replica tests will skip" >&2
  fi
fi
# The image tests (tests/image: scripts/build-image.sh, a container, the compose deployment) use
# Debian's podman with runc, mmdebstrap for the base image and podman-compose; tests/test_alerts.py
# uses promtool (Debian's prometheus package). Where FACEGATE_REQUIRE_IMAGE=1 (CI) they must be there.
need_apt=""
for tool in podman:podman runc:runc mmdebstrap:mmdebstrap podman-compose:podman-compose promtool:prometheus; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || need_apt="$need_apt ${tool#*:}"
done
if [ -n "$need_apt" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt netavark aardvark-dns >/dev/null) \
    || echo "warning: apt-get install$need_apt failed" >&2
fi
if [ "${FACEGATE_REQUIRE_IMAGE:-}" = 1 ]; then
  for tool in podman runc mmdebstrap podman-compose promtool; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] \
      || { echo "$tool could not be installed and FACEGATE_REQUIRE_IMAGE=1" >&2; exit 1; }
  done
fi
exec .venv/bin/python -m pytest -q "$@"
