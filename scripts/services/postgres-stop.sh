#!/usr/bin/env bash
# Stop the PostgreSQL server started by scripts/services/postgres-start.sh (same env vars).
#   bash scripts/services/postgres-stop.sh            # stop, keep data for the next start
#   bash scripts/services/postgres-stop.sh --purge    # stop and delete $PG_STATE
# Idempotent: does nothing if it is not running. Stops only the postmaster whose PID
# the server recorded in $PG_STATE/data/postmaster.pid (via pg_ctl, then kill by that PID).
set -euo pipefail

STATE_BASE="${SERVICES_STATE_DIR:-/tmp/coffer-test-services}"
PG_STATE="${PG_STATE:-$STATE_BASE/postgres}"
DATA="$PG_STATE/data"
log() { echo "postgres-stop: $*" >&2; }
# alive PID: process exists and is not a zombie (zombies linger where PID 1 reaps slowly)
alive() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null || true)"; [ -n "$st" ] && [ "${st#Z}" = "$st" ]; }

BINDIR="${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}"
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
  as_owner() { runuser -u postgres -- "$@"; }
else
  as_owner() { "$@"; }
fi

if [ -f "$DATA/postmaster.pid" ]; then
  pid="$(head -n1 "$DATA/postmaster.pid")"
  if [ -n "$BINDIR" ] && [ -x "$BINDIR/pg_ctl" ]; then
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >&2 || true
  fi
  # Fallback: the recorded PID, only if it still is a postgres process.
  if [ -n "$pid" ] && alive "$pid" && grep -q postgres "/proc/$pid/comm" 2>/dev/null; then
    log "pg_ctl did not stop pid $pid; sending SIGTERM then SIGKILL"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
else
  log "not running"
fi

if [ "${1:-}" = "--purge" ]; then
  log "removing $PG_STATE"
  rm -rf "$PG_STATE"
fi
