#!/usr/bin/env bash
# Instructions per proxied request (issue 13): Gatehouse under valgrind's
# callgrind, a keyed and a keyless API in front of a local nginx upstream,
# N sequential keep-alive requests each. Callgrind counts instructions, not
# time, so the numbers repeat on a busy or noisy machine where bench/run.sh's
# ratios move by 10-50%: use it to decide whether a hot-path change helps,
# and bench/run.sh for what it is worth against nginx.
#
# Usage: bench/instructions.sh [--requests N] [--top K] [--no-build] [--keep]
# GATEHOUSE_BIN=path measures that binary instead (implies --no-build).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=2000 TOP=15 BUILD=1 KEEP=0
while (($#)); do
    case $1 in
        --requests) N=${2:?}; shift ;;
        --top) TOP=${2:?}; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n 2,11p "$0"; exit 0 ;;
        *) echo "instructions.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
die() { echo "instructions.sh: $*" >&2; exit 1; }
for tool in valgrind callgrind_control callgrind_annotate nginx python3 curl; do
    command -v "$tool" >/dev/null ||
        die "$tool is needed (Debian packages: valgrind, nginx-light, python3, curl)"
done
BIN=${GATEHOUSE_BIN:-}
[[ -n $BIN ]] && BUILD=0
((BUILD)) && (cd "$ROOT" && cargo build --release --quiet)
BIN=${BIN:-$ROOT/target/release/gatehouse}
[[ -x $BIN ]] || die "no binary at $BIN"

RUN=$(mktemp -d /tmp/gatehouse-instructions.XXXXXX)
UP_PID= VG_PID= VG=
cleanup() {
    # valgrind itself, then the subshell that started it, then nginx.
    for pid in $VG $VG_PID $UP_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $VG_PID $UP_PID; do
        wait "$pid" 2>/dev/null || true
    done
    # valgrind is not our child: give it 10 s to write its last dump and go.
    for _ in $(seq 100); do
        [[ -n $VG ]] && kill -0 "$VG" 2>/dev/null || break
        sleep 0.1
    done
    if ((KEEP)); then echo "run directory kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
UP_PORT=$(free_port)
GW_PORT=$(free_port)
cp "$BIN" "$RUN/gatehouse"
mkdir -p "$RUN/apps" "$RUN/nginx"

# The upstream: nginx answering "ok", as bench/upstream-nginx.conf does.
cat >"$RUN/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN/nginx/up.pid;
error_log $RUN/nginx/up.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    client_body_temp_path $RUN/nginx/body;
    proxy_temp_path $RUN/nginx/proxy;
    fastcgi_temp_path $RUN/nginx/fcgi;
    uwsgi_temp_path $RUN/nginx/uwsgi;
    scgi_temp_path $RUN/nginx/scgi;
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { return 200 "ok"; }
    }
}
EOF
nginx -c "$RUN/upstream.conf" -e "$RUN/nginx/up.err" -p "$RUN/nginx/" &
UP_PID=$!

SECRET=instructions-$RANDOM$RANDOM
cat >"$RUN/tyk.conf" <<EOF
{
  "listen_address": "127.0.0.1",
  "listen_port": $GW_PORT,
  "secret": "$SECRET",
  "app_path": "apps/",
  "storage": {"type": "sled", "path": "store"},
  "hash_keys": true,
  "hash_key_function": "murmur64"
}
EOF
api() { # id listen-path keyless
    cat >"$RUN/apps/$1.json" <<EOF
{
  "name": "$1", "api_id": "$1", "org_id": "1", "use_keyless": $3,
  "auth": {"auth_header_name": "Authorization"},
  "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
  "proxy": {"listen_path": "$2", "target_url": "http://127.0.0.1:$UP_PORT/", "strip_listen_path": true}
}
EOF
}
api keyed /keyed/ false
api open /open/ true

(cd "$RUN" && RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.out" \
    ./gatehouse --conf tyk.conf >"$RUN/gatehouse.log" 2>&1) &
VG_PID=$!
for _ in $(seq 120); do
    curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/hello" && break
    kill -0 "$VG_PID" 2>/dev/null || { cat "$RUN/gatehouse.log" >&2; die "gatehouse did not start"; }
    sleep 0.5
done
curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/hello" || die "gatehouse did not answer /hello"
# callgrind_control talks to valgrind's own process, the subshell's child.
VG=$(pgrep -f "callgrind-out-file=$RUN/cg.out" | head -1)
[[ -n $VG ]] || die "cannot find the valgrind process"

# The bench's key: rate and quota counted on every request, never tripped.
KEY=$(curl -s -H "x-tyk-authorization: $SECRET" \
    -d '{"rate":1000000,"per":1,"quota_max":1000000000000,"quota_renewal_rate":3600,"org_id":"1","access_rights":{"keyed":{"api_id":"keyed","versions":["Default"]}}}' \
    "http://127.0.0.1:$GW_PORT/tyk/keys/create" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

# N requests on one keep-alive connection, as wrk writes them; any answer
# but 200 fails the run.
client() { # path key-or-dash count
    python3 - "$GW_PORT" "$1" "$2" "$3" <<'EOF'
import socket, sys
port, path, key, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
if key != "-":
    head += f"Authorization: {key}\r\n"
req = (head + "\r\n").encode()
s = socket.create_connection(("127.0.0.1", port))
buf = b""
for i in range(n):
    s.sendall(req)
    while b"\r\n\r\n" not in buf:
        more = s.recv(65536)
        if not more:
            sys.exit(f"connection closed after {i} answers")
        buf += more
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = head.split(b" ", 2)[1]
    if status != b"200":
        sys.exit(f"answer {i}: {head.decode(errors='replace')}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, value = line.split(b":", 1)
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += s.recv(65536)
    buf = rest[length:]
EOF
}

measure() { # label path key
    client "$2" "$3" 300 # warm: connections, caches, the upstream pool
    callgrind_control -z "$VG" >/dev/null
    client "$2" "$3" "$N"
    callgrind_control -d "$1" "$VG" >/dev/null
}
measure keyed /keyed/ "$KEY"
measure keyless /open/ -

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
echo "Gatehouse instructions per request (callgrind), $N sequential keep-alive requests per API"
echo "binary: $BIN ($(date -r "$BIN" '+%F %T'))"
echo "counts every thread of the process while the requests ran (background threads too)"
i=0
for label in keyed keyless; do
    i=$((i + 1))
    f="$RUN/cg.out.$i"
    [[ -s $f ]] || die "callgrind wrote no dump $f"
    t=$(total "$f")
    printf '  %-8s %8d instructions per request  (%s in all)\n' "$label" $((t / N)) "$t"
done
echo "top $TOP gatehouse functions of the keyed run, inclusive, per request:"
callgrind_annotate --inclusive=yes --threshold=100 "$RUN/cg.out.1" 2>/dev/null |
    grep -E '^ *[0-9,]+ .*gatehouse::' | grep -vE 'gatehouse::(main|run)\b|server::serve\b' |
    awk -v n="$N" '{c=$1; gsub(",", "", c); sub(/^ *[0-9,]+ \([^)]*\) +/, ""); sub(/ \[.*$/, ""); sub(/^[^:]*\.rs:/, "")
        # An inlined function shows once per file it was inlined from: keep its largest.
        if (!seen[$0]++) printf "  %8d  %s\n", c / n, $0}' | head -n "$TOP"
