#!/usr/bin/env bash
# Schemathesis conformance run for Gatehouse's policy admin endpoints.
#
# Starts a throw-away gateway (sled store, file policies, one keyless API),
# seeds one policy and one key under the spec's example ids, and fuzzes it with
# schemathesis against Tyk's own Gateway API spec
# (../shared/tyk/gateway-api.openapi.yml beside the repo), limited to:
#   /tyk/policies            GET, POST
#   /tyk/policies/{polID}    GET, PUT, DELETE
#   /tyk/keys/policy/{keyID} POST
# Checks: status_code_conformance, content_type_conformance,
# response_schema_conformance, i.e. every status / Content-Type / body the
# gateway sends must be one the spec documents for that operation. (Not
# not_a_server_error: Tyk itself answers a DELETE of an unknown policy with a
# documented 500 "Delete failed".)
#
# Usage: tests/schemathesis/run.sh [extra schemathesis args...]
# Env:   GATEHOUSE_BIN (default target/debug/gatehouse), SPEC, MAX_EXAMPLES (50)
# Exit:  schemathesis' status (non-zero when it found failures).
# Tested with schemathesis 4.32.5 (pinned below when it has to be installed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${GATEHOUSE_BIN:-$ROOT/target/debug/gatehouse}"
SPEC="${SPEC:-$ROOT/../shared/tyk/gateway-api.openapi.yml}"
SECRET=352d20ee67be67f6340b4c0605b044b7
ST_VERSION=4.32.5

[ -x "$BIN" ] || { echo "no gateway binary at $BIN (cargo build first)" >&2; exit 2; }

TMP="$(mktemp -d /tmp/gatehouse-st.XXXXXX)"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# (a) config, one keyless API, empty policy folder
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$TMP/apps" "$TMP/policies" "$TMP/store"
cat > "$TMP/tyk.conf" <<JSON
{"listen_address":"127.0.0.1","listen_port":$PORT,"secret":"$SECRET",
 "app_path":"$TMP/apps","storage":{"type":"sled","path":"$TMP/store"},
 "policies":{"policy_source":"file","policy_path":"$TMP/policies"}}
JSON
cat > "$TMP/apps/sc-api.json" <<'JSON'
{"name":"Schemathesis API","api_id":"sc-api","org_id":"1","use_keyless":true,
 "version_data":{"not_versioned":true,"versions":{"Default":{"name":"Default"}}},
 "proxy":{"listen_path":"/sc/","target_url":"http://127.0.0.1:1/","strip_listen_path":true}}
JSON

# (b) start the gateway and wait for /hello
BASE="http://127.0.0.1:$PORT"
"$BIN" --conf "$TMP/tyk.conf" >"$TMP/gateway.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  curl -fsS -o /dev/null "$BASE/hello" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$TMP/gateway.log" >&2; exit 2; }
  sleep 0.1
done
curl -fsS -o /dev/null "$BASE/hello" || { echo "gateway did not answer /hello" >&2; exit 2; }

# Seed the ids the spec uses as examples, so the 200 paths (GET policy bodies,
# POST /tyk/keys/policy/{keyID}) are exercised too: one policy, loaded by a
# reload, and one key (hash_keys is off, so the raw id is the path id).
admin() { curl -fsS -o /dev/null -H "X-Tyk-Authorization: $SECRET" "$@"; }
admin -X POST "$BASE/tyk/policies" -d '{"id":"5ead7120575961000181867e","name":"seed","org_id":"1",
  "rate":100,"per":60,"quota_max":-1,"tags":["seed"],"meta_data":{"k":"v"},
  "access_rights":{"sc-api":{"api_id":"sc-api","api_name":"Schemathesis API","versions":["Default"]}}}'
admin "$BASE/tyk/reload?block=true"
admin -X POST "$BASE/tyk/keys/5e9d9544a1dcd60001d0ed207eb558517c3c48fb826c62cc6f6161eb" \
  -d '{"access_rights":{"sc-api":{"api_id":"sc-api","versions":["Default"]}}}'

# (c) schemathesis
ST="$(command -v schemathesis || command -v st || true)"
if [ -z "$ST" ]; then
  python3 -m pip install --quiet "schemathesis==$ST_VERSION"
  ST="$(command -v schemathesis || command -v st)"
fi

# (d) run; (e) cleanup happens in the EXIT trap, exit status is schemathesis'
set +e
"$ST" run "$SPEC" \
  --url "$BASE" \
  --header "X-Tyk-Authorization: $SECRET" \
  --include-path-regex '^/tyk/(policies(/\{polID\})?|keys/policy/\{keyID\})$' \
  --checks status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "${MAX_EXAMPLES:-50}" \
  --generation-database none \
  --no-color \
  "$@"
RC=$?
set -e
echo "gateway log: $(wc -l <"$TMP/gateway.log") lines; exit status $RC"
exit $RC
