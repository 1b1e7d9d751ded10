#!/usr/bin/env bash
# Stop the SeaweedFS S3 store started by scripts/services/s3-start.sh (same env vars).
#   bash scripts/services/s3-stop.sh            # stop, keep data for the next start
#   bash scripts/services/s3-stop.sh --purge    # stop and delete $S3_STATE (the seaweedfs venv is kept)
# Idempotent. Signals only the PID recorded in $S3_STATE/weed.pid, and only if that
# process is a `weed`: SIGTERM, then SIGKILL after S3_STOP_TIMEOUT seconds (default 5;
# weed's graceful gRPC shutdown can hang for a long time, and the stores recover after a kill).
set -euo pipefail

STATE_BASE="${SERVICES_STATE_DIR:-/tmp/coffer-test-services}"
S3_STATE="${S3_STATE:-$STATE_BASE/s3}"
PIDFILE="$S3_STATE/weed.pid"
TIMEOUT="${S3_STOP_TIMEOUT:-5}"
log() { echo "s3-stop: $*" >&2; }
# alive PID: exists and is not a zombie (zombies linger where PID 1 reaps slowly)
alive() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null || true)"; [ -n "$st" ] && [ "${st#Z}" = "$st" ]; }

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = weed ]; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((TIMEOUT * 10))); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
  fi
  log "stopped pid $pid"
else
  log "not running"
fi
rm -f "$PIDFILE"

if [ "${1:-}" = "--purge" ]; then
  log "removing $S3_STATE"
  rm -rf "$S3_STATE"
fi
