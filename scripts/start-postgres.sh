#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the tests and print its SQLAlchemy URL on stdout.
#
#   export FACEGATE_TEST_POSTGRES_URL=$(scripts/start-postgres.sh)
#
# The cluster lives in $FACEGATE_PG_DIR (default: a new temp dir), listens on 127.0.0.1:54329
# (override with FACEGATE_PG_PORT) with trust auth, fsync off. If a server already answers on
# that port the script only prints the URL. Stop it with:
#   pg_ctl -D "$FACEGATE_PG_DIR/data" stop        (as the postgres user when run as root)
set -euo pipefail

PORT="${FACEGATE_PG_PORT:-54329}"
DB=facegate_test
URL="postgresql+psycopg://postgres@127.0.0.1:${PORT}/${DB}"

BIN="$(dirname "$(readlink -f "$(command -v initdb || echo /usr/lib/postgresql/15/bin/initdb)")")"
if [ ! -x "$BIN/initdb" ]; then
  for d in /usr/lib/postgresql/*/bin; do BIN="$d"; done
fi
[ -x "$BIN/initdb" ] || { echo "initdb not found: apt-get install -y postgresql" >&2; exit 1; }

as_pg() {  # initdb and postgres refuse to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='${DB}'" | grep -q 1 \
    || as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
  echo "$URL"
  exit 0
fi

DIR="${FACEGATE_PG_DIR:-$(mktemp -d /tmp/facegate-pg.XXXXXX)}"
mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
fi
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >&2 || { cat "$DIR/server.log" >&2; exit 1; }
as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB" 2>/dev/null || true
echo "cluster in $DIR" >&2
echo "$URL"
