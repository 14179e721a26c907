#!/usr/bin/env bash
# Install, build the model pack, start a throwaway PostgreSQL for the store tests, run the suite.
# Extra arguments go to pytest.
#
# What the tests use beyond Python, and the Debian package each comes from (installed with one
# apt-get when this runs as root and something is missing; the check below names what is still
# missing, one line per tool, before any test runs):
#   chromium, fonts-wqy-microhei  the capture page's and the console's browser tests (Playwright
#                                 drives Debian's chromium; the CJK font renders the Chinese texts)
#   nodejs, npm                   the console's single sign-on test runs npm's oidc-provider
#   postgresql                    the PostgreSQL store tests (a throwaway cluster, stopped at exit)
#   nginx                         the replica tests
#   podman runc netavark aardvark-dns iptables mmdebstrap podman-compose
#                                 the image tests (netavark, podman's network backend, needs
#                                 iptables for `podman run -p` and compose's network)
#   prometheus                    promtool, for the alert rules' tests
set -euo pipefail
cd "$(dirname "$0")/.."

# tool|a path that proves it|Debian package|what needs it|FACEGATE_REQUIRE_* that makes it a must
TOOLS="chromium|/usr/bin/chromium|chromium|the browser tests|BROWSER
font|/usr/share/fonts/truetype/wqy/wqy-microhei.ttc|fonts-wqy-microhei|the browser tests' Chinese texts|BROWSER
npm|/usr/bin/npm|npm|the OIDC sign-on test|
initdb|/usr/lib/postgresql/*/bin/initdb|postgresql|the PostgreSQL store tests|POSTGRES
nginx|/usr/sbin/nginx|nginx|the replica tests|NGINX
podman|/usr/bin/podman|podman|the image tests|IMAGE
runc|/usr/sbin/runc|runc|the image tests|IMAGE
netavark|/usr/lib/podman/netavark|netavark|the image tests (podman's network)|IMAGE
aardvark-dns|/usr/lib/podman/aardvark-dns|aardvark-dns|the image tests (compose's DNS)|IMAGE
iptables|/usr/sbin/iptables|iptables|the image tests (netavark's port forwarding)|IMAGE
mmdebstrap|/usr/bin/mmdebstrap|mmdebstrap|the image tests (the base image)|IMAGE
podman-compose|/usr/bin/podman-compose|podman-compose|the image tests (the compose deployment)|IMAGE
promtool|/usr/bin/promtool|prometheus|the alert rules' tests|IMAGE"
# Where PostgreSQL is required (CI), nginx is too, unless FACEGATE_REQUIRE_NGINX says otherwise.
export FACEGATE_REQUIRE_NGINX="${FACEGATE_REQUIRE_NGINX:-${FACEGATE_REQUIRE_POSTGRES:-}}"
# FACEGATE_TOOLS_ROOT and FACEGATE_NO_APT are for tests/test_scripts.py: a machine without the tools.
have() { compgen -G "${FACEGATE_TOOLS_ROOT:-}$1" >/dev/null; }
missing_packages() {
  local tool path pkg why req
  while IFS='|' read -r tool path pkg why req; do
    have "$path" || echo "$pkg"
  done <<<"$TOOLS"
}
need=$(missing_packages | sort -u | tr '\n' ' ')
if [ -n "${need// /}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${FACEGATE_NO_APT:-}" ]; then
  echo "installing with apt-get: $need" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null) \
    || echo "warning: apt-get install $need failed" >&2
fi
# One line per tool still missing; a missing tool that a FACEGATE_REQUIRE_* variable makes a must
# stops here, before any test runs.
must_stop=0
while IFS='|' read -r tool path pkg why req; do
  have "$path" && continue
  var="FACEGATE_REQUIRE_$req"
  if [ -n "$req" ] && [ "${!var:-}" = 1 ]; then
    echo "missing: $tool ($path), needed by $why: apt-get install -y $pkg ($var=1 makes it a must)" >&2
    must_stop=1
  else
    echo "missing: $tool ($path): $why will skip; apt-get install -y $pkg" >&2
  fi
done <<<"$TOOLS"
[ "$must_stop" = 0 ] || exit 1

bash scripts/setup.sh
# The MiniFASNet PAD models are built from the evaluation copy of their weights when it is
# there (operators supply their own; nothing of it is committed), so every machine tests the same.
SHARED_DIR=${FACEGATE_SHARED:-../shared}
if [ -d "$SHARED_DIR/models/minifasnet" ]; then
  .venv/bin/facegate liveness build-pad --weights "$SHARED_DIR/models/minifasnet" >/dev/null
fi

if have /usr/bin/npm && [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  (cd tests/oidc && npm install --no-audit --no-fund --silent) || echo "warning: npm install in tests/oidc failed" >&2
fi

# A throwaway PostgreSQL in a folder of its own, stopped when the suite ends, whichever way it ends.
pg_dir=""
stop_postgres() {
  [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ] || return 0
  local bin
  bin=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' | tail -1)")
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  else
    "$bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$pg_dir"
}
if [ -z "${FACEGATE_TEST_POSTGRES_URL:-}" ] && have '/usr/lib/postgresql/*/bin/initdb'; then
  pg_dir=$(mktemp -d /tmp/facegate-pg.XXXXXX)
  trap stop_postgres EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if url=$(FACEGATE_PG_DIR="$pg_dir" bash scripts/start-postgres.sh); then
    export FACEGATE_TEST_POSTGRES_URL="$url"
  else
    # start-postgres.sh may have found another server on its port; that one is not ours to stop.
    pg_dir=""
  fi
fi
if [ -z "${FACEGATE_TEST_POSTGRES_URL:-}" ]; then
  if [ "${FACEGATE_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "PostgreSQL could not be started and FACEGATE_REQUIRE_POSTGRES=1" >&2; exit 1
  fi
  echo "warning: PostgreSQL could not be started; PostgreSQL store tests will skip" >&2
fi

set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
exit "$rc"
