#!/usr/bin/env bash
# Admin write throughput (issue 13): keys created per second through
# POST /tyk/keys/create, by 1 and by 16 concurrent keep-alive clients
# (wrk, pinned to cpu 0; Gatehouse pinned to cpu 1), on the embedded store
# with its durability unchanged (every answer waits for its flush).
# Afterwards the store is reopened and every acknowledged key counted.
#
# Usage: bench/admin_writes.sh [--duration S] [--conns LIST] [--no-build]
# GATEHOUSE_BIN=path runs that binary instead (implies --no-build), to
# compare builds side by side in the same hour.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DUR=5 CONNS="1 16" BUILD=1
while (($#)); do
    case $1 in
        --duration) DUR=${2:?}; shift ;;
        --conns) CONNS=${2//,/ }; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n 2,11p "$0"; exit 0 ;;
        *) echo "admin_writes.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
command -v wrk >/dev/null || { echo "admin_writes.sh: wrk is needed (Debian package wrk)" >&2; exit 1; }
BIN=${GATEHOUSE_BIN:-}
[[ -n $BIN ]] && BUILD=0
((BUILD)) && (cd "$ROOT" && cargo build --release --quiet)
BIN=${BIN:-$ROOT/target/release/gatehouse}

RUN=$(mktemp -d /tmp/gatehouse-admin-bench.XXXXXX)
GH_PID=
cleanup() {
    [[ -n $GH_PID ]] && kill "$GH_PID" 2>/dev/null && wait "$GH_PID" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SECRET=bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$RUN/apps"
cat >"$RUN/tyk.conf" <<EOF
{"listen_address": "127.0.0.1", "listen_port": $PORT, "secret": "$SECRET", "app_path": "apps",
 "storage": {"type": "sled", "path": "data"}, "hash_keys": true, "hash_key_function": "murmur64", "enable_hashed_keys_listing": true}
EOF
cat >"$RUN/apps/a.json" <<'EOF'
{"name": "a", "api_id": "a", "org_id": "1", "auth": {"auth_header_name": "Authorization"},
 "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
 "proxy": {"listen_path": "/a/", "target_url": "http://127.0.0.1:9/", "strip_listen_path": true}}
EOF
cat >"$RUN/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"rate": 1000, "per": 1, "org_id": "1", "quota_max": -1, "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-tyk-authorization"] = "$SECRET"
EOF

start() {
    (cd "$RUN" && exec taskset -c 1 "$BIN" --conf tyk.conf 2>>"$RUN/gatehouse.log" >/dev/null) &
    GH_PID=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/hello" && return 0
        sleep 0.1
    done
    echo "admin_writes.sh: gatehouse did not start; its log:" >&2
    tail -n 20 "$RUN/gatehouse.log" >&2
    exit 1
}
stop() { kill "$GH_PID" && wait "$GH_PID" 2>/dev/null || true; GH_PID=; }

start
echo "Gatehouse admin writes: POST /tyk/keys/create, ${DUR} s per concurrency, durable before each 200"
total=0
seq_now() { tr -d " \n" <"$RUN/data/gatehouse.seq" 2>/dev/null || echo 0; }
for c in $CONNS; do
    before=$(seq_now)
    out=$(taskset -c 0 wrk -t1 "-c$c" "-d${DUR}s" -s "$RUN/post.lua" "http://127.0.0.1:$PORT/tyk/keys/create")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    flushes=$(($(seq_now) - ${before:-0}))
    printf '  %2d client(s): %10s keys/s  (%s requests, non-2xx: %s, %s keys per flush)\n' "$c" "$rps" "$reqs" "${bad:-0}" \
        "$(awk -v k="$reqs" -v r="$flushes" 'BEGIN {printf "%.1f", r ? k / r : 0}')"
    total=$((total + reqs - ${bad:-0}))
done
rounds=$(tr -d " \n" <"$RUN/data/gatehouse.seq")
stop
echo "  store commits: $rounds for $total keys ($(awk -v k="$total" -v r="$rounds" 'BEGIN {printf "%.1f", k / r}') keys per flush)"
# Every acknowledged key is in the store after a restart.
start
listed=$(curl -s -H "x-tyk-authorization: $SECRET" "http://127.0.0.1:$PORT/tyk/keys" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["keys"]))')
stop
echo "  after a restart: $listed keys listed (acknowledged: at least $total)"
((listed >= total)) || { echo "admin_writes.sh: acknowledged keys are missing" >&2; exit 1; }
