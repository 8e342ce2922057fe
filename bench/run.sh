#!/usr/bin/env bash
# Gatehouse throughput benchmark (issue 5): nginx upstream, nginx proxy_pass
# and Gatehouse (keyless and keyed) side by side, wrk pinned to cpu 0 and
# every server pinned to cpu 1; issue 11 adds the same over TLS (an nginx
# and a Gatehouse on https with one self-signed certificate); issue 12's
# --store redis adds a redis-server and a Gatehouse in cluster mode on it;
# issue 13's nginx-all and allcores are an nginx (worker_processes auto)
# and a Gatehouse (its default threads) that nothing pins. See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=$ROOT/../shared/bench
[[ -d $SHARED ]] && SHARED=$(cd "$SHARED" && pwd)
NGINX_RUN=/tmp/gwbench-run          # fixed by the nginx configurations
LOAD_CPU=0
SERVER_CPU=1
UP_PORT=9001
PX_PORT=9002
GH_PORT=9003
TX_PORT=9004    # nginx proxy over TLS (bench/proxy-tls-nginx.conf)
GT_PORT=9005    # Gatehouse over TLS
RD_PORT=9006    # redis-server (--store redis)
GR_PORT=9007    # Gatehouse with storage.type redis (--store redis)
AX_PORT=9008    # nginx proxy on every core, unpinned (bench/proxy-all-nginx.conf)
GA_PORT=9009    # Gatehouse with its default threads, unpinned

usage() {
    cat <<'EOF'
Usage: bench/run.sh [options]

  --conns LIST      concurrencies, comma or space separated   [1,32,128]
  --rounds N        rounds per concurrency (variants alternate) [3]
  --duration S      seconds per wrk run                         [10]
  --warmup S        seconds of unmeasured load per variant and
                    concurrency before the rounds (0 = none)    [1]
  --quiet-wait S    before each run, wait for other processes to
                    leave the cpus (< 10% busy); S s in total   [120]
  --keys N          pre-load N extra keys before measuring, then
                    restart Gatehouse on the filled store       [0]
  --keys-timeout S  give up pre-loading after S seconds         [1800]
  --workers N       Gatehouse worker threads ("gatehouse.workers";
                    default: the gateway's own default)
  --no-quota        keyed session with quota_max -1 (quota off);
                    default is a quota too large to trip
  --no-metrics      Gatehouse with "gatehouse.metrics": false (request
                    counting off), to measure what /metrics costs
  --quick           smoke test: 1 round, 3 s, c=32 only
  --variants LIST   measure only these variants (nginx is always
                    added, the ratios need it; tls adds nginx-tls,
                    its baseline, and allcores adds nginx-all;
                    redis implies --store redis)                [all]
  --store TYPE      sled, or redis: also start a redis-server on
                    9006 and a Gatehouse in cluster mode on it (9007),
                    and measure the variant redis (keyed through
                    it) besides the others                      [sled]
  --no-build        use target/release/gatehouse as it is
  --keep            keep the run directory (logs, wrk output)
  -h, --help        this text
EOF
}

die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- options
CONNS= ROUNDS= DUR= WARMUP= QUIET_WAIT=120 KEYS=0 KEYS_TIMEOUT=1800 WORKERS=0 METRICS=1 QUICK=0 BUILD=1 KEEP=0 QUOTA=1 ONLY=
STORE=sled
while (($#)); do
    case $1 in
        --conns) CONNS=${2:?--conns needs a list}; shift ;;
        --rounds) ROUNDS=${2:?}; shift ;;
        --duration) DUR=${2:?}; shift ;;
        --warmup) WARMUP=${2:?}; shift ;;
        --quiet-wait) QUIET_WAIT=${2:?}; shift ;;
        --keys) KEYS=${2:?}; shift ;;
        --keys-timeout) KEYS_TIMEOUT=${2:?}; shift ;;
        --workers) WORKERS=${2:?}; shift ;;
        --no-quota) QUOTA=0 ;;
        --no-metrics) METRICS=0 ;;
        --quick) QUICK=1 ;;
        --variants) ONLY=${2:?--variants needs a list}; shift ;;
        --store) STORE=${2:?--store needs sled or redis}; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done
if ((QUICK)); then
    : "${CONNS:=32}" "${ROUNDS:=1}" "${DUR:=3}"
fi
: "${CONNS:=1,32,128}" "${ROUNDS:=3}" "${DUR:=10}" "${WARMUP:=1}"
CONNS=${CONNS//,/ }
for n in $CONNS $ROUNDS $DUR $WARMUP $QUIET_WAIT $KEYS $KEYS_TIMEOUT $WORKERS; do
    [[ $n =~ ^[0-9]+$ ]] || die "not a whole number: $n"
done
((ROUNDS >= 1 && DUR >= 1)) || die "--rounds and --duration must be >= 1"
for c in $CONNS; do ((c >= 1)) || die "concurrency must be >= 1"; done
[[ $STORE == sled || $STORE == redis ]] || die "--store: expected sled or redis, got '$STORE'"

# Issue 11: nginx-tls and tls run over https, on their own servers; tls's
# ratios are taken against nginx-tls, so asking for tls adds it.
# Issue 12: redis (keyed through a Gatehouse whose store and counters are in
# a redis-server) needs those two servers: --store redis adds it to what
# --variants asks for, and --variants redis implies --store redis.
# Issue 13: nginx-all and allcores run on servers of their own that nothing
# pins (nginx with worker_processes auto, Gatehouse as configured by default);
# allcores's ratios are taken against nginx-all, so asking for allcores adds it.
VARIANTS=(direct nginx keyless keyed redis messy policy basic jwths jwtrs real nginx-tls tls nginx-all allcores)
[[ " ${ONLY//,/ } " == *" redis "* ]] && STORE=redis
if [[ -n $ONLY ]]; then
    wanted=" nginx ${ONLY//,/ } "
    [[ $wanted == *" tls "* ]] && wanted+="nginx-tls "
    [[ $wanted == *" allcores "* ]] && wanted+="nginx-all "
    [[ $STORE == redis ]] && wanted+="redis "
    for v in ${ONLY//,/ }; do
        [[ " ${VARIANTS[*]} " == *" $v "* ]] || die "--variants: unknown variant '$v' (known: ${VARIANTS[*]})"
    done
    kept=()
    for v in "${VARIANTS[@]}"; do [[ $wanted == *" $v "* ]] && kept+=("$v"); done
    VARIANTS=("${kept[@]}")
elif [[ $STORE != redis ]]; then
    kept=()
    for v in "${VARIANTS[@]}"; do [[ $v != redis ]] && kept+=("$v"); done
    VARIANTS=("${kept[@]}")
fi
has_variant() { [[ " ${VARIANTS[*]} " == *" $1 "* ]]; }
TX=0 GT=0 RD=0  # start the TLS nginx / the TLS Gatehouse / redis-server and its Gatehouse
AX=0 GA=0       # start the unpinned nginx / the unpinned Gatehouse (issue 13)
has_variant nginx-all && AX=1
has_variant allcores && GA=1
has_variant nginx-tls && TX=1
has_variant tls && GT=1
has_variant redis && RD=1

# ---------------------------------------------------------------- cleanup
RUN=
MADE_NGINX_RUN=0
MADE_POLICY=0
UP_PID= PX_PID= GH_PID=
TX_PID= GT_PID=    # the TLS nginx and Gatehouse, started only for the TLS variants
RD_PID= GR_PID=    # redis-server and its Gatehouse, started only for --store redis
AX_PID= GA_PID=    # the unpinned nginx and Gatehouse, started only for nginx-all, allcores
MADE_TLS_FILES=0   # the certificate copied into $NGINX_RUN
BG_PID= BG_NAME=   # wrk or the key pre-loader while one runs
GH_STARTS=0

alive() { # true while the process exists and is not a zombie
    local s
    [[ -n ${1:-} ]] && s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [[ ${s:0:1} != Z ]]
}

stop_pid() { # stop_pid PID NAME: TERM, wait up to 15 s, then KILL; exact PID only
    local pid=$1 name=$2 i
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "run.sh: $name (pid $pid) ignored SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

nginx_workers() { # the worker PIDs of the nginx master $1: its children
    local master=${1:-} f s st kids=()
    [[ -n $master ]] || return 0
    for f in /proc/[0-9]*/stat; do
        s=$(cat "$f" 2>/dev/null) || continue
        s=${s##*) }
        read -ra st <<<"$s"
        if [[ ${st[1]} == "$master" ]]; then f=${f#/proc/}; kids+=("${f%/stat}"); fi
    done
    echo "${kids[*]}"
}

bg_wait() { # bg_wait NAME OUTFILE|- CMD...: runs CMD in the background (output to
    # OUTFILE, or ours for -) and waits for it, so that INT/TERM reach our trap
    # at once and cleanup can stop CMD by PID
    BG_NAME=$1
    local out=$2
    shift 2
    if [[ $out == - ]]; then
        "$@" &
    else
        "$@" >"$out" 2>&1 &
    fi
    BG_PID=$!
    local rc=0
    wait "$BG_PID" || rc=$?
    BG_PID=
    return "$rc"
}

stop_nginx() { # stop_nginx MASTER_PID NAME: master by PID, then any worker left
    local pid=$1 name=$2 workers w
    [[ -n $pid ]] || return 0
    workers=$(nginx_workers "$pid")
    stop_pid "$pid" "$name"
    for w in $workers; do
        if alive "$w" && [[ $(cat /proc/"$w"/comm 2>/dev/null) == nginx ]]; then
            echo "run.sh: $name worker $w outlived its master; killing it" >&2
            kill -KILL "$w" 2>/dev/null || true
        fi
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $BG_PID ]] && stop_pid "$BG_PID" "$BG_NAME"
    [[ -n $GT_PID ]] && stop_pid "$GT_PID" "gatehouse tls"
    [[ -n $GA_PID ]] && stop_pid "$GA_PID" "gatehouse all-cores"
    [[ -n $GR_PID ]] && stop_pid "$GR_PID" "gatehouse redis"
    [[ -n $RD_PID ]] && stop_pid "$RD_PID" redis-server
    [[ -n $GH_PID ]] && stop_pid "$GH_PID" gatehouse
    [[ -n $TX_PID ]] && stop_nginx "$TX_PID" "nginx tls proxy"
    [[ -n $AX_PID ]] && stop_nginx "$AX_PID" "nginx all-cores proxy"
    [[ -n $PX_PID ]] && stop_nginx "$PX_PID" "nginx proxy"
    [[ -n $UP_PID ]] && stop_nginx "$UP_PID" "nginx upstream"
    if ((MADE_POLICY)); then rm -f /usr/sbin/policy-rc.d; fi
    if ((MADE_TLS_FILES)); then rm -f "$NGINX_RUN/tls.crt" "$NGINX_RUN/tls.key"; fi
    if ((MADE_NGINX_RUN)); then rm -rf "$NGINX_RUN"; fi
    if [[ -n $RUN && -d $RUN ]]; then
        if ((KEEP)); then
            echo "run.sh: run directory kept: $RUN" >&2
        else
            rm -rf "$RUN"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT
trap 'echo "run.sh: terminated" >&2; exit 143' TERM

# ---------------------------------------------------------------- tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)   # JWT keys and tokens, the TLS certificate
if ((RD)); then   # redis-server's package depends on redis-tools (redis-cli)
    { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; } || need+=(redis-server)
fi
if ((${#need[@]})); then
    SUDO=
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "need ${need[*]} and I am not root (no sudo)"
        SUDO=sudo
    fi
    log "installing ${need[*]}"
    # Keep the package scripts from starting a system nginx on port 80 (or
    # a system redis-server on 6379).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        MADE_POLICY=1
    fi
    $SUDO apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
    if ((MADE_POLICY)); then $SUDO rm -f /usr/sbin/policy-rc.d; MADE_POLICY=0; fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx is not installed"
command -v wrk >/dev/null || die "wrk is not installed"
command -v openssl >/dev/null || die "openssl is not installed"
if ((RD)); then
    command -v redis-server >/dev/null || die "redis-server is not installed"
    command -v redis-cli >/dev/null || die "redis-cli is not installed"
fi

NCPU=$(nproc --all)
((NCPU >= 2)) || die "needs at least 2 cpus (wrk on cpu $LOAD_CPU, servers on cpu $SERVER_CPU); found $NCPU"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- build
BIN=$ROOT/target/release/gatehouse
# What the binary was built from (the repository may move on during the run).
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] &&
    REV="$REV + uncommitted changes in src/"
if ((BUILD)); then
    log "building gatehouse (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $BIN ]] || die "no $BIN (build it, or drop --no-build)"
((BUILD)) || REV="binary of $(date -r "$BIN" '+%F %T') (--no-build; HEAD was $REV)"

# ---------------------------------------------------------------- configs
pick_conf() { # our copy is authoritative; the shared reference is used when present
    local name=$1
    if [[ -f $SHARED/$name ]]; then
        if ! cmp -s "$SHARED/$name" "$HERE/$name"; then
            echo "run.sh: note: $SHARED/$name differs from bench/$name; using the shared one" >&2
        fi
        echo "$SHARED/$name"
    else
        echo "$HERE/$name"
    fi
}
UP_CONF=$(pick_conf upstream-nginx.conf)
PX_CONF=$(pick_conf proxy-nginx.conf)

# ---------------------------------------------------------------- preflight
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("$UP_PORT" "$PX_PORT" "$GH_PORT")
((TX)) && ports+=("$TX_PORT")
((GT)) && ports+=("$GT_PORT")
((RD)) && ports+=("$RD_PORT" "$GR_PORT")
((AX)) && ports+=("$AX_PORT")
((GA)) && ports+=("$GA_PORT")
for p in "${ports[@]}"; do
    port_busy "$p" && die "127.0.0.1:$p is already in use (another benchmark or server?)"
done
for f in "$NGINX_RUN"/upstream.pid "$NGINX_RUN"/proxy.pid "$NGINX_RUN"/proxy-tls.pid "$NGINX_RUN"/proxy-all.pid; do
    if [[ -f $f ]] && alive "$(cat "$f" 2>/dev/null)"; then
        die "$f names a running process: is another benchmark running?"
    fi
done
if [[ ! -d $NGINX_RUN ]]; then
    mkdir -p "$NGINX_RUN"
    MADE_NGINX_RUN=1
fi
RUN=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
chmod 755 "$RUN"
# Run a copy, so a rebuild in the tree during the run cannot change what we measure.
cp "$BIN" "$RUN/gatehouse"
BIN=$RUN/gatehouse
if ((TX || GT)); then
    # Issue 11: one self-signed P-256 certificate for both TLS servers, valid
    # for 127.0.0.1 and localhost; nginx reads its copy under $NGINX_RUN (the
    # path is fixed in its configuration), Gatehouse the one in $RUN.
    CERT=$RUN/tls.crt CERT_KEY=$RUN/tls.key
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout "$CERT_KEY" -out "$CERT" -subj /CN=localhost \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$RUN/openssl.log" 2>&1 ||
        { cat "$RUN/openssl.log" >&2; die "openssl could not make the TLS certificate"; }
    MADE_TLS_FILES=1
    cp "$CERT" "$NGINX_RUN/tls.crt"
    cp "$CERT_KEY" "$NGINX_RUN/tls.key"
fi

# ---------------------------------------------------------------- estimate
nconns=$(wc -w <<<"$CONNS")
measure_s=$((nconns * (${#VARIANTS[@]} * (WARMUP + 1) + ROUNDS * ${#VARIANTS[@]} * (DUR + 2))))
echo "Gatehouse benchmark: conns [$CONNS], $ROUNDS round(s) x ${DUR} s per variant, warm-up ${WARMUP} s"
echo "estimated measuring time: ~$((measure_s / 60)) min $((measure_s % 60)) s after build and server start$( ((KEYS)) && echo ", plus pre-loading $KEYS keys (at most ${KEYS_TIMEOUT} s)");"
echo "  at most $(((measure_s + QUIET_WAIT) / 60)) min if other processes keep the cpus busy (--quiet-wait $QUIET_WAIT)"

# ---------------------------------------------------------------- servers
# https URLs are checked against our certificate (so its names are checked too).
http_code() {
    local tls=()
    [[ $* == *https://* ]] && tls=(--cacert "$CERT")
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${tls[@]}" "$@" || true
}

wait_http() { # wait_http PID NAME URL LOG SECONDS
    local pid=$1 name=$2 url=$3 logf=$4 secs=$5 i
    for ((i = 0; i < secs * 10; i++)); do
        if ! alive "$pid"; then
            echo "run.sh: $name exited during start-up; its log ($logf):" >&2
            tail -n 30 "$logf" >&2 2>/dev/null || true
            exit 1
        fi
        [[ $(http_code "$url") == 200 ]] && return 0
        sleep 0.1
    done
    echo "run.sh: $name did not answer 200 on $url within $secs s; its log ($logf):" >&2
    tail -n 30 "$logf" >&2 2>/dev/null || true
    exit 1
}

start_nginx() { # start_nginx CONF NAME ERRLOG [unpinned] -> sets REPLY to the master PID
    local conf=$1 name=$2 err=$3 pin=(taskset -c "$SERVER_CPU")
    [[ ${4:-} == unpinned ]] && pin=()
    "$NGINX" -t -q -c "$conf" -e "$err" -p "$NGINX_RUN/" >"$RUN/$name-test.log" 2>&1 ||
        { cat "$RUN/$name-test.log" >&2; die "$name: nginx -t rejected $conf"; }
    "${pin[@]}" "$NGINX" -c "$conf" -e "$err" -p "$NGINX_RUN/" \
        >"$RUN/$name.out" 2>&1 &
    REPLY=$!
}

log "starting nginx upstream ($UP_CONF) on cpu $SERVER_CPU"
start_nginx "$UP_CONF" upstream "$NGINX_RUN/upstream.err"
UP_PID=$REPLY
wait_http "$UP_PID" "nginx upstream" "http://127.0.0.1:$UP_PORT/" "$NGINX_RUN/upstream.err" 10

log "starting nginx proxy ($PX_CONF) on cpu $SERVER_CPU"
start_nginx "$PX_CONF" proxy "$NGINX_RUN/proxy.err"
PX_PID=$REPLY
wait_http "$PX_PID" "nginx proxy" "http://127.0.0.1:$PX_PORT/" "$NGINX_RUN/proxy.err" 10

TX_CONF=$HERE/proxy-tls-nginx.conf   # ours only: ../shared/bench/ has no TLS proxy
if ((TX)); then
    log "starting nginx tls proxy ($TX_CONF) on cpu $SERVER_CPU"
    start_nginx "$TX_CONF" proxy-tls "$NGINX_RUN/proxy-tls.err"
    TX_PID=$REPLY
    wait_http "$TX_PID" "nginx tls proxy" "https://127.0.0.1:$TX_PORT/" "$NGINX_RUN/proxy-tls.err" 10
fi

AX_CONF=$HERE/proxy-all-nginx.conf   # ours only: ../shared/bench/ has no all-cores proxy
if ((AX)); then
    # Issue 13: no taskset: nginx's worker_processes auto on every cpu.
    log "starting nginx all-cores proxy ($AX_CONF), not pinned"
    start_nginx "$AX_CONF" proxy-all "$NGINX_RUN/proxy-all.err" unpinned
    AX_PID=$REPLY
    wait_http "$AX_PID" "nginx all-cores proxy" "http://127.0.0.1:$AX_PORT/" "$NGINX_RUN/proxy-all.err" 10
fi

SECRET=bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$RUN/apps" "$RUN/policies"
# "gatehouse": {...}: --workers and --no-metrics.
gh_opts=()
((WORKERS)) && gh_opts+=("\"workers\": $WORKERS")
((METRICS)) || gh_opts+=("\"metrics\": false")
workers_json=
if ((${#gh_opts[@]})); then
    workers_json=", \"gatehouse\": {$(IFS=,; echo "${gh_opts[*]}")}"
fi
gh_conf() { # gh_conf PORT STORAGE [EXTRA]: a tyk.conf; every gateway shares apps/ and policies/
    cat <<EOF
{
  "listen_address": "127.0.0.1",
  "listen_port": $1,
  "secret": "$SECRET",
  "app_path": "apps/",
  "storage": $2,
  "policies": {"policy_path": "policies"},
  "hash_keys": true,
  "hash_key_function": "murmur64"$workers_json${3:-}
}
EOF
}
gh_conf "$GH_PORT" '{"type": "sled", "path": "store"}' >"$RUN/tyk.conf"
# Issue 11: the TLS gateway: the same, on its own port and store, https on
# every listener (proxy and admin share the port) with the run's certificate.
if ((GT)); then
    gh_conf "$GT_PORT" '{"type": "sled", "path": "store-tls"}' ',
  "http_server_options": {"use_ssl": true, "min_version": 771, "max_version": 772,
    "certificates": [{"domain_name": "127.0.0.1", "cert_file": "tls.crt", "key_file": "tls.key"}]}' \
        >"$RUN/tyk-tls.conf"
fi
# Issue 13: the all-cores gateway: the same, on its own port and store; it
# sets nothing about threads (no event_loops, the workers only if --workers
# does for all), and start_gatehouse does not pin it.
((GA)) && gh_conf "$GA_PORT" '{"type": "sled", "path": "store-all"}' >"$RUN/tyk-all.conf"
# Issue 12: the cluster-mode gateway: the same, on its own port, with its
# sessions, quotas and rate limits in the run's redis-server.
if ((RD)); then
    gh_conf "$GR_PORT" "{\"type\": \"redis\", \"host\": \"127.0.0.1\", \"port\": $RD_PORT}" \
        ",
  \"node_secret\": \"$SECRET-node\"" >"$RUN/tyk-redis.conf"
fi
cat >"$RUN/apps/bench-keyed.json" <<EOF
{
  "name": "Bench keyed", "api_id": "bench-keyed", "org_id": "1",
  "use_keyless": false,
  "auth": {"auth_header_name": "Authorization"},
  "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
  "proxy": {"listen_path": "/keyed/", "target_url": "http://127.0.0.1:$UP_PORT/", "strip_listen_path": true}
}
EOF
cat >"$RUN/apps/bench-basic.json" <<EOF
{
  "name": "Bench basic", "api_id": "bench-basic", "org_id": "1",
  "use_keyless": false, "use_basic_auth": true,
  "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
  "proxy": {"listen_path": "/basic/", "target_url": "http://127.0.0.1:$UP_PORT/", "strip_listen_path": true}
}
EOF
# Issue 9: JWT APIs, HS256 with a secret and RS256 with a public key, whose
# tokens name the bench-gold policy (centralised: a session per identity).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$RUN/jwt-rsa.pem" 2>/dev/null ||
    die "openssl could not make an RSA key"
openssl pkey -in "$RUN/jwt-rsa.pem" -pubout -out "$RUN/jwt-rsa.pub" 2>/dev/null
JWT_SECRET=bench-jwt-secret
for v in hs rs; do
    if [[ $v == hs ]]; then method=hmac src=$(printf %s "$JWT_SECRET" | base64 -w0); else method=rsa src=$(base64 -w0 <"$RUN/jwt-rsa.pub"); fi
    cat >"$RUN/apps/bench-jwt$v.json" <<EOF
{
  "name": "Bench JWT $v", "api_id": "bench-jwt$v", "org_id": "1",
  "use_keyless": false, "enable_jwt": true, "jwt_signing_method": "$method",
  "jwt_source": "$src", "jwt_policy_field_name": "pol",
  "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
  "proxy": {"listen_path": "/jwt$v/", "target_url": "http://127.0.0.1:$UP_PORT/", "strip_listen_path": true}
}
EOF
done
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
jwt_token() { # jwt_token ALG: a token for identity bench-user naming bench-gold, valid a day
    local head body sig
    head=$(printf '{"alg":"%s","typ":"JWT"}' "$1" | b64url)
    body=$(printf '{"sub":"bench-user","pol":"bench-gold","exp":%s}' $(($(date +%s) + 86400)) | b64url)
    if [[ $1 == HS256 ]]; then
        sig=$(printf %s "$head.$body" | openssl dgst -sha256 -hmac "$JWT_SECRET" -binary | b64url)
    else
        sig=$(printf %s "$head.$body" | openssl dgst -sha256 -sign "$RUN/jwt-rsa.pem" -binary | b64url)
    fi
    echo "$head.$body.$sig"
}
# Issue 10: a "realistic" keyed API: 50 white-list entries (the request
# matches the 25th), a global and an endpoint header transform, CORS, and a
# URL rewrite on the endpoint requested.
python3 - "$RUN/apps/bench-real.json" "$UP_PORT" <<'PYEOF2'
import json, sys
out, port = sys.argv[1], sys.argv[2]
white = [{"path": f"/resource{i}/{{id}}", "method": "GET"} for i in range(50)]
white[24] = {"path": "/items/{id}", "method": "GET"}
api = {
    "name": "Bench realistic", "api_id": "bench-real", "org_id": "1", "use_keyless": False,
    "auth": {"auth_header_name": "Authorization"},
    "CORS": {"enable": True, "allowed_origins": ["https://app.example"],
             "allowed_headers": ["Authorization", "Content-Type"]},
    "version_data": {"not_versioned": True, "versions": {"Default": {
        "name": "Default", "use_extended_paths": True,
        "global_headers": {"X-Gateway": "gatehouse"},
        "extended_paths": {
            "white_list": white,
            "transform_headers": [{"path": "/items/{id}", "method": "GET",
                                   "add_headers": {"X-Items": "1"}, "delete_headers": ["X-Debug"]}],
            "url_rewrites": [{"path": "/items/{id}", "method": "GET",
                              "match_pattern": "/real/items/(\\d+)", "rewrite_to": "/real/?item=$1"}],
        }}}},
    "proxy": {"listen_path": "/real/", "target_url": f"http://127.0.0.1:{port}/", "strip_listen_path": True},
}
json.dump(api, open(out, "w"))
PYEOF2
cat >"$RUN/apps/bench-open.json" <<EOF
{
  "name": "Bench keyless", "api_id": "bench-open", "org_id": "1",
  "use_keyless": true,
  "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
  "proxy": {"listen_path": "/open/", "target_url": "http://127.0.0.1:$UP_PORT/", "strip_listen_path": true}
}
EOF

start_gatehouse() { # start_gatehouse [tls|redis|all]: the plain gateway (GH_PID, GH_LOG), the TLS
    # one (GT_PID, GT_LOG), the cluster-mode one (GR_PID, GR_LOG) or the
    # unpinned one (GA_PID, GA_LOG); all but the last pinned to the server cpu
    local name=gatehouse conf=$RUN/tyk.conf port=$GH_PORT scheme=http logf pid i t0=$SECONDS
    local pin=(taskset -c "$SERVER_CPU")
    if [[ ${1:-} == all ]]; then
        name="gatehouse all-cores" conf=$RUN/tyk-all.conf port=$GA_PORT logf=$RUN/gatehouse.all.log
        GA_LOG=$logf
        pin=()
    elif [[ ${1:-} == tls ]]; then
        name="gatehouse tls" conf=$RUN/tyk-tls.conf port=$GT_PORT scheme=https logf=$RUN/gatehouse.tls.log
        GT_LOG=$logf
    elif [[ ${1:-} == redis ]]; then
        name="gatehouse redis" conf=$RUN/tyk-redis.conf port=$GR_PORT logf=$RUN/gatehouse.redis.log
        GR_LOG=$logf
    else
        logf=$RUN/gatehouse.$((++GH_STARTS)).log
        GH_LOG=$logf
    fi
    : >"$logf"   # exists before the wait below reads it
    "${pin[@]}" "$BIN" --conf "$conf" 2>"$logf" >/dev/null &
    pid=$!
    case ${1:-} in tls) GT_PID=$pid ;; redis) GR_PID=$pid ;; all) GA_PID=$pid ;; *) GH_PID=$pid ;; esac
    # Start-up loads every stored session: allow time for large stores.
    for ((i = 0; i < 3000; i++)); do
        alive "$pid" || { tail -n 30 "$logf" >&2; die "$name exited during start-up (log above)"; }
        grep -q "listening on 127.0.0.1:$port" "$logf" && break
        sleep 0.1
    done
    grep -q "listening on 127.0.0.1:$port" "$logf" ||
        { tail -n 30 "$logf" >&2; die "$name did not log 'listening on 127.0.0.1:$port' within 300 s"; }
    wait_http "$pid" "$name" "$scheme://127.0.0.1:$port/hello" "$logf" 10
    log "$name (pid $pid) ready in $((SECONDS - t0)) s"
}

log "starting gatehouse on cpu $SERVER_CPU"
start_gatehouse

if ((QUOTA)); then
    QUOTA_JSON='{"quota_max": 1000000000000, "quota_remaining": 1000000000000, "quota_renewal_rate": 3600}'
else
    QUOTA_JSON='{"quota_max": -1}'
fi
# Issue 9: a policy with the same limits, for the 'policy' variant's key.
python3 -c '
import json, sys
p = {"id": "bench-gold", "org_id": "1", "rate": 1000000, "per": 1,
     "access_rights": {a: {"api_id": a, "versions": ["Default"]}
                       for a in ("bench-keyed", "bench-jwths", "bench-jwtrs")}}
p.update(json.loads(sys.argv[1]))
p.pop("quota_remaining", None)
print(json.dumps(p))' "$QUOTA_JSON" >"$RUN/policies/bench-gold.json"
curl -s --max-time 10 "http://127.0.0.1:$GH_PORT/tyk/reload?block=true" -H "x-tyk-authorization: $SECRET" >/dev/null ||
    die "reload request failed"
key_body=$(python3 -c '
import json, sys
s = {"rate": 1000000, "per": 1, "org_id": "1",
     "access_rights": {a: {"api_id": a, "versions": ["Default"]} for a in ("bench-keyed", "bench-real")}}
s.update(json.loads(sys.argv[1]))
print(json.dumps(s))' "$QUOTA_JSON")
answer=$(curl -s --max-time 10 -X POST "http://127.0.0.1:$GH_PORT/tyk/keys/create" \
    -H "x-tyk-authorization: $SECRET" -H 'Content-Type: application/json' -d "$key_body") ||
    die "key create request failed"
KEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$answer" 2>/dev/null) ||
    die "key create did not answer a key: $answer"
answer=$(curl -s --max-time 10 -X POST "http://127.0.0.1:$GH_PORT/tyk/keys/create" \
    -H "x-tyk-authorization: $SECRET" -H 'Content-Type: application/json' \
    -d '{"org_id": "1", "apply_policies": ["bench-gold"]}') || die "policy key create request failed"
PKEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$answer" 2>/dev/null) ||
    die "policy key create did not answer a key: $answer"
# Issue 9: a basic-auth user (bcrypt, as Tyk stores it) with the keyed key's limits.
basic_body=$(python3 -c '
import json, sys
s = {"rate": 1000000, "per": 1, "org_id": "1", "basic_auth_data": {"password": "bench-pass"},
     "access_rights": {"bench-basic": {"api_id": "bench-basic", "versions": ["Default"]}}}
s.update(json.loads(sys.argv[1]))
print(json.dumps(s))' "$QUOTA_JSON")
curl -s --max-time 10 -X POST "http://127.0.0.1:$GH_PORT/tyk/keys/bench-user" -H "x-tyk-authorization: $SECRET" \
    -H 'Content-Type: application/json' -d "$basic_body" | grep -q '"status":"ok"' || die "basic-auth user create failed"
BASIC="Basic $(printf bench-user:bench-pass | base64)"
JWT_HS=$(jwt_token HS256)
JWT_RS=$(jwt_token RS256)

if ((KEYS)); then
    log "pre-loading $KEYS keys (bounded at ${KEYS_TIMEOUT} s)"
    bg_wait "key pre-loader" - taskset -c "$LOAD_CPU" python3 "$HERE/preload_keys.py" --port "$GH_PORT" --secret "$SECRET" \
        --api-id bench-keyed --count "$KEYS" --timeout "$KEYS_TIMEOUT" --quota-json "$QUOTA_JSON" ||
        die "pre-loading keys failed"
    PRELOAD_HWM=$(awk '/^VmHWM/ {print $2}' /proc/"$GH_PID"/status)
    log "restarting gatehouse on the store with $((KEYS + 1)) keys"
    stop_pid "$GH_PID" gatehouse
    GH_PID=
    start_gatehouse
fi

create_key() { # create_key NAME BASE_URL [curl args]: a key like the keyed variant's, made
    # the same way through that gateway's admin API; sets KEY_ANSWER to its answer, REPLY to the key
    local name=$1 base=$2
    shift 2
    KEY_ANSWER=$(curl -s --max-time 10 "$@" -X POST "$base/tyk/keys/create" \
        -H "x-tyk-authorization: $SECRET" -H 'Content-Type: application/json' -d "$key_body") ||
        die "key create request to $name failed"
    REPLY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$KEY_ANSWER" 2>/dev/null) ||
        die "key create on $name did not answer a key: $KEY_ANSWER"
}

if ((GT)); then
    # Issue 11: the TLS gateway on its own store, with its own key, made over
    # https on its admin API.
    log "starting gatehouse tls on cpu $SERVER_CPU"
    start_gatehouse tls
    create_key "gatehouse tls" "https://127.0.0.1:$GT_PORT" --cacert "$CERT"
    TKEY=$REPLY
fi

if ((GA)); then
    # Issue 13: the unpinned gateway on its own store, with its own key.
    log "starting gatehouse all-cores, not pinned"
    start_gatehouse all
    create_key "gatehouse all-cores" "http://127.0.0.1:$GA_PORT"
    AKEY=$REPLY
fi

if ((RD)); then
    # Issue 12: a redis-server of the run's own, nothing on disk, pinned with
    # the servers: serving a request in cluster mode costs its CPU too.
    log "starting redis-server on 127.0.0.1:$RD_PORT, cpu $SERVER_CPU"
    mkdir -p "$RUN/redis"
    RD_LOG=$RUN/redis.log
    taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$RD_PORT" --save "" --appendonly no \
        --dir "$RUN/redis" --daemonize no --logfile "$RD_LOG" >"$RUN/redis.out" 2>&1 &
    RD_PID=$!
    for ((i = 0; i < 100; i++)); do
        alive "$RD_PID" || { cat "$RUN/redis.out" >&2; tail -n 30 "$RD_LOG" >&2 2>/dev/null; die "redis-server exited during start-up"; }
        [[ $(redis-cli -p "$RD_PORT" PING 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
    [[ $(redis-cli -p "$RD_PORT" PING 2>/dev/null) == PONG ]] ||
        { tail -n 30 "$RD_LOG" >&2 2>/dev/null; die "redis-server did not answer PING on $RD_PORT within 10 s"; }
    # The gateway in cluster mode on it, with a key like the keyed variant's,
    # made the same way through its own admin API (so it lands in Redis).
    log "starting gatehouse redis on cpu $SERVER_CPU"
    start_gatehouse redis
    create_key "gatehouse redis" "http://127.0.0.1:$GR_PORT"
    RKEY=$REPLY
    RKEY_HASH=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("key_hash", ""))' "$KEY_ANSWER")
fi

# Every variant must answer 200 "ok" before anything is measured.
declare -A URL=(
    [direct]="http://127.0.0.1:$UP_PORT/"
    [nginx]="http://127.0.0.1:$PX_PORT/"
    [keyless]="http://127.0.0.1:$GH_PORT/open/"
    [keyed]="http://127.0.0.1:$GH_PORT/keyed/"
    # Issue 8: a path the router must make canonical (`//`, `.`, an escaped
    # letter, a `;param`): the normaliser's slow path, keyed.
    [messy]="http://127.0.0.1:$GH_PORT/keyed//a/./%62;p/c"
    # Issue 9: the keyed API with a key whose rights and limits come from a policy.
    [policy]="http://127.0.0.1:$GH_PORT/keyed/"
    # Issue 9: a basic-auth API, the same user and password on every request.
    [basic]="http://127.0.0.1:$GH_PORT/basic/"
    # Issue 9: JWT APIs, the same HS256 / RS256 token on every request.
    [jwths]="http://127.0.0.1:$GH_PORT/jwths/"
    [jwtrs]="http://127.0.0.1:$GH_PORT/jwtrs/"
    # Issue 10: the realistic API (white list, transforms, CORS, rewrite).
    [real]="http://127.0.0.1:$GH_PORT/real/items/42"
    # Issue 11: https with keep-alive, as nginx and as Gatehouse's keyed API.
    [nginx-tls]="https://127.0.0.1:$TX_PORT/"
    [tls]="https://127.0.0.1:$GT_PORT/keyed/"
    # Issue 12: the keyed API through the gateway whose store and counters are in Redis.
    [redis]="http://127.0.0.1:$GR_PORT/keyed/"
    # Issue 13: nginx and the keyed API on servers that nothing pins.
    [nginx-all]="http://127.0.0.1:$AX_PORT/"
    [allcores]="http://127.0.0.1:$GA_PORT/keyed/"
)
check_ok() { # check_ok NAME URL [curl args]
    local name=$1 url=$2 body code
    shift 2
    local tls=()
    [[ $url == https://* ]] && tls=(--cacert "$CERT")
    body=$(curl -s --max-time 5 -w '\n%{http_code}' "${tls[@]}" "$@" "$url") || die "$name: $url did not answer"
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    [[ $code == 200 && $body == ok ]] || die "$name: $url answered $code '$body', wanted 200 'ok'"
}
check_ok direct "${URL[direct]}"
check_ok "nginx proxy" "${URL[nginx]}"
check_ok "gatehouse keyless" "${URL[keyless]}"
check_ok "gatehouse keyed" "${URL[keyed]}" -H "Authorization: $KEY"
check_ok "gatehouse keyed, messy path" "${URL[messy]}" -H "Authorization: $KEY"
check_ok "gatehouse policy key" "${URL[policy]}" -H "Authorization: $PKEY"
check_ok "gatehouse basic auth" "${URL[basic]}" -H "Authorization: $BASIC"
check_ok "gatehouse JWT HS256" "${URL[jwths]}" -H "Authorization: Bearer $JWT_HS"
check_ok "gatehouse JWT RS256" "${URL[jwtrs]}" -H "Authorization: Bearer $JWT_RS"
check_ok "gatehouse realistic API" "${URL[real]}" -H "Authorization: $KEY" -H "Origin: https://app.example"
code=$(http_code "${URL[keyed]}")
[[ $code == 401 || $code == 403 ]] || die "gatehouse keyed answered $code without a key: auth is not enforced"
((TX)) && check_ok "nginx tls proxy" "${URL[nginx-tls]}"
if ((GT)); then
    check_ok "gatehouse tls keyed" "${URL[tls]}" -H "Authorization: $TKEY"
    code=$(http_code "${URL[tls]}")
    [[ $code == 401 || $code == 403 ]] || die "gatehouse tls answered $code without a key: auth is not enforced"
fi
((AX)) && check_ok "nginx all-cores proxy" "${URL[nginx-all]}"
if ((GA)); then
    check_ok "gatehouse all-cores keyed" "${URL[allcores]}" -H "Authorization: $AKEY"
    code=$(http_code "${URL[allcores]}")
    [[ $code == 401 || $code == 403 ]] || die "gatehouse all-cores answered $code without a key: auth is not enforced"
fi
if ((RD)); then
    check_ok "gatehouse redis keyed" "${URL[redis]}" -H "Authorization: $RKEY"
    code=$(http_code "${URL[redis]}")
    [[ $code == 401 || $code == 403 ]] || die "gatehouse redis answered $code without a key: auth is not enforced"
fi
negotiated() { # negotiated PORT: the TLS version and suite an OpenSSL client gets, as wrk's would
    local out
    out=$(openssl s_client -connect "127.0.0.1:$1" -brief </dev/null 2>&1 || true)
    echo "$(sed -n 's/^Protocol version: //p' <<<"$out") $(sed -n 's/^Ciphersuite: //p' <<<"$out")"
}
((TX)) && TX_NEGOTIATED=$(negotiated "$TX_PORT")
((GT)) && GT_NEGOTIATED=$(negotiated "$GT_PORT")

# ---------------------------------------------------------------- measure
ticks() { # utime+stime of the PIDs given, in clock ticks
    local t=0 p s f
    for p in "$@"; do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) }
        read -ra f <<<"$s"
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}
target_pids() { # the processes whose CPU a variant is charged
    case $1 in
        direct) echo "$UP_PID $(nginx_workers "$UP_PID")" ;;
        nginx) echo "$PX_PID $(nginx_workers "$PX_PID")" ;;
        keyless|keyed|messy|policy|basic|jwths|jwtrs|real) echo "$GH_PID" ;;
        nginx-tls) echo "$TX_PID $(nginx_workers "$TX_PID")" ;;
        tls) echo "$GT_PID" ;;
        redis) echo "$GR_PID $RD_PID" ;;   # both serve each request
        nginx-all) echo "$AX_PID $(nginx_workers "$AX_PID")" ;;
        allcores) echo "$GA_PID" ;;
    esac
}
sys_busy() { # busy clock ticks of the whole machine: user nice system irq softirq steal
    local l a
    read -r l </proc/stat
    read -ra a <<<"$l"
    echo $((a[1] + a[2] + a[3] + a[6] + a[7] + a[8]))
}
child_ms() { # CHILD_MS = user+system ms of the children this shell has reaped
    # (bash's `times`; must run in this shell, not in $(...))
    local line ms=0 t
    times >"$RUN/times"
    line=$(sed -n 2p "$RUN/times")
    for t in $line; do
        [[ $t =~ ^([0-9]+)m([0-9]+)\.([0-9]+)s$ ]] || continue
        ms=$((ms + BASH_REMATCH[1] * 60000 + 10#${BASH_REMATCH[2]} * 1000 + 10#${BASH_REMATCH[3]}))
    done
    CHILD_MS=$ms
}
QUIET_LEFT=$((QUIET_WAIT * 2))   # half-seconds of waiting left, for the whole run
wait_quiet() { # waits until the machine is < 10% busy over 0.5 s, from a budget of
    # --quiet-wait seconds shared by all runs (so the total time stays bounded)
    local b0 b1 pct told=0
    while :; do
        b0=$(sys_busy)
        sleep 0.5
        b1=$(sys_busy)
        pct=$(((b1 - b0) * 100 * 2 / (CLK_TCK * NCPU)))
        ((pct < 10)) && return 0
        if ((QUIET_LEFT <= 0)); then
            echo "run.sh: warning: machine ${pct}% busy with other processes and the --quiet-wait budget is spent; measuring anyway" >&2
            return 0
        fi
        if ((!told)); then
            echo "run.sh: machine ${pct}% busy with other processes; waiting (budget left $((QUIET_LEFT / 2)) s)" >&2
            told=1
        fi
        QUIET_LEFT=$((QUIET_LEFT - 1))
    done
}
run_wrk() { # run_wrk VARIANT CONNS SECONDS OUTFILE
    local v=$1 c=$2 d=$3 out=$4
    local args=(-t1 "-c$c" "-d${d}s" --latency)
    [[ $v == keyed || $v == messy ]] && args+=(-H "Authorization: $KEY")
    [[ $v == policy ]] && args+=(-H "Authorization: $PKEY")
    [[ $v == basic ]] && args+=(-H "Authorization: $BASIC")
    [[ $v == jwths ]] && args+=(-H "Authorization: Bearer $JWT_HS")
    [[ $v == jwtrs ]] && args+=(-H "Authorization: Bearer $JWT_RS")
    [[ $v == real ]] && args+=(-H "Authorization: $KEY" -H "Origin: https://app.example")
    [[ $v == tls ]] && args+=(-H "Authorization: $TKEY")
    [[ $v == redis ]] && args+=(-H "Authorization: $RKEY")
    [[ $v == allcores ]] && args+=(-H "Authorization: $AKEY")
    bg_wait wrk "$out" timeout $((d + 30)) taskset -c "$LOAD_CPU" wrk "${args[@]}" "${URL[$v]}" ||
        { cat "$out" >&2; die "wrk failed for $v at c=$c"; }
}
check_servers() {
    alive "$UP_PID" || die "nginx upstream died (see $NGINX_RUN/upstream.err)"
    alive "$PX_PID" || die "nginx proxy died (see $NGINX_RUN/proxy.err)"
    alive "$GH_PID" || { tail -n 30 "$GH_LOG" >&2; die "gatehouse died during the run (log above)"; }
    if ((TX)); then alive "$TX_PID" || die "nginx tls proxy died (see $NGINX_RUN/proxy-tls.err)"; fi
    if ((GT)); then alive "$GT_PID" || { tail -n 30 "$GT_LOG" >&2; die "gatehouse tls died during the run (log above)"; }; fi
    if ((AX)); then alive "$AX_PID" || die "nginx all-cores proxy died (see $NGINX_RUN/proxy-all.err)"; fi
    if ((GA)); then alive "$GA_PID" || { tail -n 30 "$GA_LOG" >&2; die "gatehouse all-cores died during the run (log above)"; }; fi
    if ((RD)); then
        alive "$RD_PID" || { tail -n 30 "$RD_LOG" >&2; die "redis-server died during the run (log above)"; }
        alive "$GR_PID" || { tail -n 30 "$GR_LOG" >&2; die "gatehouse redis died during the run (log above)"; }
    fi
}

# Store commits: every durable store write bumps the number in
# store/gatehouse.seq (see src/store.rs), so its growth during the keyed runs
# counts disk writes; the request path must add none (quota counters are
# persisted in one batch per second, whatever the request rate).
store_seq() { cat "$RUN/store/gatehouse.seq" 2>/dev/null || echo 0; }
KEYED_COMMITS=0 KEYED_REQUESTS=0 KEYED_SECONDS=0
RESULTS=$RUN/results.tsv
printf 'conns\tround\tvariant\trequests\telapsed_s\tnon2xx\tsocket_errors\tp50_us\tp99_us\tcpu_ticks\tother_ticks\n' >"$RESULTS"
ALL_PIDS="$UP_PID $(nginx_workers "$UP_PID") $PX_PID $(nginx_workers "$PX_PID") $GH_PID"
((TX)) && ALL_PIDS+=" $TX_PID $(nginx_workers "$TX_PID")"
((GT)) && ALL_PIDS+=" $GT_PID"
((RD)) && ALL_PIDS+=" $GR_PID $RD_PID"
((AX)) && ALL_PIDS+=" $AX_PID $(nginx_workers "$AX_PID")"
((GA)) && ALL_PIDS+=" $GA_PID"
GH_LOG_START=$(wc -l <"$GH_LOG")
GT_LOG_START=0
((GT)) && GT_LOG_START=$(wc -l <"$GT_LOG")
GR_LOG_START=0
((RD)) && GR_LOG_START=$(wc -l <"$GR_LOG")
GA_LOG_START=0
((GA)) && GA_LOG_START=$(wc -l <"$GA_LOG")
# Issue 12: every answer wrk counted from the redis variant (warm-ups
# included; +1 for the check above), to set beside its quota counter in Redis.
REDIS_REQUESTS=1
REDIS_RUN_REQUESTS=0 REDIS_RUN_TICKS=0 REDIS_RUN_RD_TICKS=0   # its measured runs, for the CPU split
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }
for c in $CONNS; do
    if ((WARMUP)); then
        log "c=$c: warm-up ${WARMUP} s per variant"
        for v in "${VARIANTS[@]}"; do
            run_wrk "$v" "$c" "$WARMUP" "$RUN/warmup.txt"
            [[ $v == redis ]] && REDIS_REQUESTS=$((REDIS_REQUESTS + $(wrk_requests "$RUN/warmup.txt")))
        done
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
        order=()
        n=${#VARIANTS[@]}
        for ((i = 0; i < n; i++)); do order+=("${VARIANTS[(i + r - 1) % n]}"); done
        log "c=$c round $r/$ROUNDS: ${order[*]}"
        for v in "${order[@]}"; do
            check_servers
            out=$RUN/wrk-c$c-r$r-$v.txt
            pids=$(target_pids "$v")
            wait_quiet
            t0=$(ticks $pids) a0=$(ticks $ALL_PIDS) b0=$(sys_busy)
            child_ms
            w0=$CHILD_MS
            s0=$(store_seq)
            [[ $v == redis ]] && r0=$(ticks "$RD_PID")
            run_wrk "$v" "$c" "$DUR" "$out"
            [[ $v == redis ]] && REDIS_RUN_RD_TICKS=$((REDIS_RUN_RD_TICKS + $(ticks "$RD_PID") - r0))
            if [[ $v == keyed ]]; then
                KEYED_COMMITS=$((KEYED_COMMITS + $(store_seq) - s0))
                KEYED_REQUESTS=$((KEYED_REQUESTS + $(awk '/requests in/ {print $1}' "$out")))
                KEYED_SECONDS=$((KEYED_SECONDS + DUR))
            fi
            child_ms
            w1=$CHILD_MS b1=$(sys_busy) a1=$(ticks $ALL_PIDS) t1=$(ticks $pids)
            # CPU used by anything but wrk and our servers during the run.
            other=$(((b1 - b0) - (a1 - a0) - (w1 - w0) * CLK_TCK / 1000))
            ((other < 0)) && other=0
            parsed=$(python3 "$HERE/report.py" parse "$out") || die "cannot parse $out"
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$r" "$v" "$parsed" "$((t1 - t0))" "$other" >>"$RESULTS"
            if [[ $v == redis ]]; then
                REDIS_REQUESTS=$((REDIS_REQUESTS + $(wrk_requests "$out")))
                REDIS_RUN_REQUESTS=$((REDIS_RUN_REQUESTS + $(wrk_requests "$out")))
                REDIS_RUN_TICKS=$((REDIS_RUN_TICKS + t1 - t0))
            fi
        done
    done
done
check_servers

# ---------------------------------------------------------------- report
hwm_kib() { awk '/^VmHWM/ {print $2}' /proc/"$1"/status 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
px_workers=$(nginx_workers "$PX_PID")
px_worker_hwm=0
for w in $px_workers; do px_worker_hwm=$((px_worker_hwm + $(hwm_kib "$w"))); done
gh_threads=$(awk '/^Threads/ {print $2}' /proc/"$GH_PID"/status)

echo
echo "==================== Gatehouse benchmark ===================="
echo "machine : $NCPU cpus, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -r)"
echo "pinning : wrk -t1 on cpu $LOAD_CPU (taskset -c $LOAD_CPU); nginx upstream, nginx proxy and gatehouse on cpu $SERVER_CPU (taskset -c $SERVER_CPU)"
echo "tools   : $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
echo "gateway : gatehouse $REV, $gh_threads threads, workers=$( ((WORKERS)) && echo "$WORKERS" || echo default), hash_keys murmur64, metrics $( ((METRICS)) && echo on || echo off)"
echo "keyed   : header auth, rate 1000000/1s, $( ((QUOTA)) && echo "quota 1e12/3600s (counted, never trips)" || echo "quota off (-1)"), $((KEYS + 1)) key(s) in the store"
echo "nginx   : upstream $UP_CONF, proxy $PX_CONF"
if ((TX || GT)); then
    echo "tls     : one self-signed P-256 certificate (127.0.0.1, localhost) for both; keep-alive, handshakes"
    echo "          amortised; gatehouse tls's ratios are against nginx tls proxy, both on cpu $SERVER_CPU:"
    ((TX)) && echo "          nginx tls proxy $TX_CONF on $TX_PORT: TLSv1.2-1.3, nginx defaults otherwise; $TX_NEGOTIATED"
    ((GT)) && echo "          gatehouse tls on $GT_PORT: use_ssl, own store, 1 key (as keyed); $GT_NEGOTIATED"
fi
if ((AX || GA)); then
    # Issue 13: what the kernel allows them, read back, and what they run.
    cpus_of() { awk '/^Cpus_allowed_list/ {print $2}' /proc/"$1"/status 2>/dev/null; }
    echo "allcores: not pinned (no taskset); wrk and the nginx upstream as above; allcores's ratios"
    echo "          are against nginx all-cores; on this $NCPU-cpu machine they share the cpus with wrk:"
    ((AX)) && echo "          nginx all-cores $AX_CONF on $AX_PORT: worker_processes auto = $(wc -w <<<"$(nginx_workers "$AX_PID")") worker(s), cpus $(cpus_of "$AX_PID")"
    ((GA)) && echo "          gatehouse all-cores on $GA_PORT: default threads ($(awk '/^Threads/ {print $2}' /proc/"$GA_PID"/status) threads), own store, 1 key (as keyed), cpus $(cpus_of "$GA_PID")"
fi
if ((RD)); then
    echo "redis   : redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on $RD_PORT (--save \"\" --appendonly no), on cpu $SERVER_CPU with the servers;"
    echo "          gatehouse redis on $GR_PORT: storage.type redis (sessions, quota and rate limit counted"
    echo "          in Redis on every request), 1 key (as keyed); its keyed requests park on the event loop while its own Redis link counts them."
    echo "          gatehouse redis's CPU us/req = gatehouse redis + redis-server: both serve every request"
fi
echo "runs    : ${DUR} s each, $ROUNDS round(s), variant order rotated every round, ${WARMUP} s warm-up"
echo "columns : ok req/s = 2xx/3xx responses per second (wrk's total minus 'Non-2xx or 3xx');"
echo "          spread = (max-min)/median of ok req/s over rounds; CPU us/req = utime+stime"
echo "          of the server under test (direct: the upstream nginx, master+worker) / requests;"
echo "          errors = non-2xx/3xx responses + socket errors, summed over rounds;"
nservers=$((3 + TX + GT + 2 * RD + AX + GA))
nservers=$(sed -n "${nservers}p" <<<$'one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine')
echo "          other CPU = CPU used by anything but wrk and the $nservers servers during"
echo "          the run, in % of one cpu (median; > 10% means a disturbed measurement)"
python3 "$HERE/report.py" table "$RESULTS" "$CLK_TCK"
echo
echo "peak RSS (VmHWM, process lifetime, read after the runs):"
echo "  nginx proxy     : worker $(mib "$px_worker_hwm"), master $(mib "$(hwm_kib "$PX_PID")")"
echo "  gatehouse       : $(mib "$(hwm_kib "$GH_PID")") with $((KEYS + 1)) key(s) in the store$( ((KEYS)) && echo " (restarted after pre-loading; $(mib "$PRELOAD_HWM") peak while creating them)")"
if ((TX)); then
    tx_worker_hwm=0
    for w in $(nginx_workers "$TX_PID"); do tx_worker_hwm=$((tx_worker_hwm + $(hwm_kib "$w"))); done
    echo "  nginx tls proxy : worker $(mib "$tx_worker_hwm"), master $(mib "$(hwm_kib "$TX_PID")")"
fi
((GT)) && echo "  gatehouse tls   : $(mib "$(hwm_kib "$GT_PID")") with 1 key in the store"
if ((AX)); then
    ax_worker_hwm=0
    for w in $(nginx_workers "$AX_PID"); do ax_worker_hwm=$((ax_worker_hwm + $(hwm_kib "$w"))); done
    echo "  nginx all-cores : workers $(mib "$ax_worker_hwm") (all), master $(mib "$(hwm_kib "$AX_PID")")"
fi
((GA)) && echo "  gatehouse all-cores: $(mib "$(hwm_kib "$GA_PID")") with 1 key in the store"
if ((RD)); then
    echo "  gatehouse redis : $(mib "$(hwm_kib "$GR_PID")") (its 1 key is in redis-server)"
    echo "  redis-server    : $(mib "$(hwm_kib "$RD_PID")") (used_memory $(redis-cli -p "$RD_PORT" INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p'))"
fi

echo
echo "store writes during the keyed runs: $KEYED_COMMITS durable commit(s) for $KEYED_REQUESTS requests in $KEYED_SECONDS s"
echo "  (quota counters are persisted in one batch per quota_persist_interval, 1 s; none per request)"
if ((RD)); then
    # Issue 12: proof that the redis variant's counters went to Redis.
    qname=quota-$RKEY_HASH
    [[ -n $RKEY_HASH ]] || qname=$(redis-cli -p "$RD_PORT" --scan --pattern 'quota-*' | head -n1)
    echo
    echo "redis-server after the runs: redis-cli -p $RD_PORT DBSIZE = $(redis-cli -p "$RD_PORT" DBSIZE)" \
        "($(redis-cli -p "$RD_PORT" --scan | sed -E 's/[^-]+$//' | sort | uniq -c | awk '{printf "%s%s*: %s", (NR > 1 ? ", " : ""), $2, $1}'))"
    echo "  $qname = $(redis-cli -p "$RD_PORT" GET "$qname") used; wrk counted $REDIS_REQUESTS answers from the redis"
    echo "  variant (warm-ups and the check included; requests cut off when wrk stops may count too)"
    awk -v all="$REDIS_RUN_TICKS" -v rd="$REDIS_RUN_RD_TICKS" -v n="$REDIS_RUN_REQUESTS" -v hz="$CLK_TCK" 'BEGIN {
        if (n > 0) printf "  redis variant CPU us/req, all measured runs: %.2f in gatehouse redis + %.2f in redis-server\n",
            (all - rd) * 1e6 / hz / n, rd * 1e6 / hz / n }'
fi

# Anything Gatehouse logged at WARN or ERROR, at start-up or under load.
for f in "$RUN"/gatehouse.*.log; do
    problems=$(grep -E '^\[[^]]* (WARN|ERROR) ' "$f" || true)
    start=0
    [[ $f == "$GH_LOG" ]] && start=$GH_LOG_START
    [[ $f == "${GT_LOG:-}" ]] && start=$GT_LOG_START
    [[ $f == "${GR_LOG:-}" ]] && start=$GR_LOG_START
    [[ $f == "${GA_LOG:-}" ]] && start=$GA_LOG_START
    during=$( ((start)) && tail -n +"$((start + 1))" "$f" | grep -cE '^\[[^]]* (WARN|ERROR) ' || true)
    if [[ -n $problems ]]; then
        echo
        echo "gatehouse log $(basename "$f"): $(wc -l <<<"$problems") WARN/ERROR line(s)${during:+, $during of them during the runs}; first 10:"
        head -n 10 <<<"$problems" | sed 's/^/  /'
    fi
done
for f in "$NGINX_RUN"/upstream.err "$NGINX_RUN"/proxy.err "$NGINX_RUN"/proxy-tls.err "$NGINX_RUN"/proxy-all.err; do
    if [[ -s $f ]] && grep -qv '\[notice\]' "$f"; then
        echo
        echo "$(basename "$f") has entries:"
        grep -v '\[notice\]' "$f" | head -n 10 | sed 's/^/  /'
    fi
done
# redis-server logs its start-up at warning level (' # ') too: only real
# warnings and errors, less the overcommit advice (nothing is ever saved here).
if ((RD)); then
    problems=$(grep ' # ' "$RD_LOG" 2>/dev/null | grep -Ei 'warning|error|fail' | grep -v 'Memory overcommit' || true)
    if [[ -n $problems ]]; then
        echo
        echo "redis.log has $(wc -l <<<"$problems") warning(s); first 10:"
        head -n 10 <<<"$problems" | cut -c1-200 | sed 's/^/  /'
    fi
fi
