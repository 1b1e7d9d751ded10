#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL server for tests, on 127.0.0.1 only.
#
#   url=$(bash scripts/services/postgres-start.sh | tail -n1)     # postgresql+psycopg://app:app@127.0.0.1:55432/app
#   bash scripts/services/postgres-stop.sh                         # stop it (add --purge to delete its data too)
#
# Idempotent: a second run reuses the running server / existing cluster.
# Progress goes to stderr; stdout carries env-style lines, the LAST line is the
# SQLAlchemy URL. The same lines are written to $PG_STATE/env.
#
# Settings (env vars, all optional):
#   SERVICES_STATE_DIR  base dir for all test services        (default /tmp/coffer-test-services)
#   PG_STATE            this server's dir                     (default $SERVICES_STATE_DIR/postgres)
#   PG_PORT             TCP port on 127.0.0.1                 (default 55432)
#   PG_USER / PG_PASSWORD / PG_DB   role and database created (default app / app / app)
#   PG_BINDIR           dir with initdb/pg_ctl                (default: newest /usr/lib/postgresql/*/bin)
#   PG_DURABLE=1        keep fsync on (default off: faster, data may be lost on power loss; fine for tests)
#   SERVICES_NO_INSTALL=1  never run apt-get (default: install Debian's postgresql if missing and root)
#   PG_DRIVER           SQLAlchemy driver part of the URL     (default psycopg, i.e. psycopg 3)
#
# When run as root, the server runs as the Debian 'postgres' user (postgres refuses
# root), so $PG_STATE and its parents must be reachable by that user (/tmp is).
set -euo pipefail

STATE_BASE="${SERVICES_STATE_DIR:-/tmp/coffer-test-services}"
PG_STATE="${PG_STATE:-$STATE_BASE/postgres}"
PG_PORT="${PG_PORT:-55432}"
PG_USER="${PG_USER:-app}"
PG_PASSWORD="${PG_PASSWORD:-app}"
PG_DB="${PG_DB:-app}"
PG_DRIVER="${PG_DRIVER:-psycopg}"
DATA="$PG_STATE/data"
SOCK="$PG_STATE/run"          # unix socket dir (kept short: socket paths are limited to ~107 bytes)
LOG="$PG_STATE/postgres.log"

log() { echo "postgres-start: $*" >&2; }

find_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then echo "$PG_BINDIR"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
}

BINDIR="$(find_bindir)"
if [ -z "$BINDIR" ] || [ ! -x "$BINDIR/initdb" ]; then
  if [ "$(id -u)" = 0 ] && [ "${SERVICES_NO_INSTALL:-0}" != 1 ]; then
    log "installing Debian's postgresql (about 20 s, 41 MB download)"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d (if present) keeps apt from starting the packaged 'main' cluster
    apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }
    BINDIR="$(find_bindir)"
  fi
  [ -n "$BINDIR" ] && [ -x "$BINDIR/initdb" ] || { log "no PostgreSQL server found; apt-get install postgresql"; exit 1; }
fi

# Run a command as the server's owner: 'postgres' when we are root, else ourselves.
if [ "$(id -u)" = 0 ]; then
  OWNER=postgres
  id postgres >/dev/null 2>&1 || { log "user 'postgres' missing (install Debian's postgresql package)"; exit 1; }
  as_owner() { runuser -u postgres -- "$@"; }
else
  OWNER="$(id -un)"
  as_owner() { "$@"; }
fi

mkdir -p "$PG_STATE"
[ "$(id -u)" = 0 ] && chown "$OWNER" "$PG_STATE"
as_owner test -w "$PG_STATE" || { log "$PG_STATE is not writable by $OWNER (choose SERVICES_STATE_DIR under /tmp)"; exit 1; }
as_owner mkdir -p "$SOCK"

# 1. Create the cluster once.
if [ ! -s "$DATA/PG_VERSION" ]; then
  log "initdb in $DATA"
  as_owner rm -rf "$DATA"
  as_owner "$BINDIR/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >"$PG_STATE/initdb.log" 2>&1 \
    || { cat "$PG_STATE/initdb.log" >&2; exit 1; }
  {
    echo "# test settings appended by scripts/services/postgres-start.sh"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$SOCK'"
    echo "max_connections = 200"
    if [ "${PG_DURABLE:-0}" != 1 ]; then
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
    fi
  } | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
fi

# 2. Start it unless it is already running (pg_ctl checks the PID in postmaster.pid).
if as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "already running (pid $(head -n1 "$DATA/postmaster.pid"))"
else
  if (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then
    log "port $PG_PORT on 127.0.0.1 is taken by another process; set PG_PORT"; exit 1
  fi
  log "starting on 127.0.0.1:$PG_PORT (log: $LOG)"
  as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 -o "-p $PG_PORT" start >&2 \
    || { tail -n 30 "$LOG" >&2; exit 1; }
fi

# 3. Create the role and database (idempotent), over the unix socket as superuser.
psql_su() { as_owner "$BINDIR/psql" -h "$SOCK" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_su -d postgres -v u="$PG_USER" -v p="$PG_PASSWORD" >&2 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'u', :'p')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'u') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'u', :'p') \gexec
SQL
if [ -z "$(psql_su -d postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" ]; then
  psql_su -d postgres -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\"" >&2
fi

URL="postgresql+$PG_DRIVER://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
{
  echo "PGHOST=127.0.0.1"
  echo "PGPORT=$PG_PORT"
  echo "PGUSER=$PG_USER"
  echo "PGPASSWORD=$PG_PASSWORD"
  echo "PGDATABASE=$PG_DB"
  echo "DATABASE_URL=$URL"
} >"$PG_STATE/env"
cat "$PG_STATE/env"
echo "$URL"
