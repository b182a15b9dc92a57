#!/usr/bin/env bash
# Instructions per proxied request in user space, under valgrind's callgrind: nginx as a reverse
# proxy, Gatehouse with a required key, and Gatehouse with a key and a rate-limit policy, side by
# side. Unlike req/s on a shared machine, these counts repeat exactly from run to run, so they
# show what a change to the request path costs or saves. Installs nginx and valgrind if missing
# and builds the release binary. Usage: bash scripts/bench-gateway-instructions.sh [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
if ! command -v nginx >/dev/null || ! command -v valgrind >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx valgrind >/dev/null
fi
cargo build --release -p gatehouse-cli
bin="$PWD/target/release/gatehouse"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT

origin_port=18280 proxy_port=18281 gateway_port=18282 management_port=18283
nginx_conf() { # name, server block
  cat >"$work/$1.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/$1.pid;
error_log $work/$1.err warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work; keepalive_requests 1000000;
$2
}
CONF
}
wait_port() { for _ in $(seq 1 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }
nginx_conf origin "server { listen 127.0.0.1:$origin_port; location / { default_type text/plain; return 200 'ok'; } }"
nginx_conf proxy "upstream origin { server 127.0.0.1:$origin_port; keepalive 64; } server { listen 127.0.0.1:$proxy_port; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
wait_port $origin_port

# Sends the requests over 4 keep-alive connections; $3: a subscription key or "".
load() {
  python3 - "$1" "$2" "$3" <<'PY'
import http.client, sys
port, n, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
headers = {"User-Agent": "bench", "Accept": "*/*"}
if key:
    headers["Ocp-Apim-Subscription-Key"] = key
for i in range(n):
    c = conns[i % 4]
    c.request("GET", "/bench/x", headers=headers)
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}

# Runs "$@" under callgrind, counts only the measured requests, prints instructions per request.
measure() { # label, port, key, command...
  local label=$1 port=$2 key=$3; shift 3
  local out="$work/callgrind-$port-$RANDOM"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.%p" "$@" >"$out.log" 2>&1 &
  local pid=$!
  wait_port "$port"
  load "$port" 200 "$key"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  load "$port" "$requests" "$key"
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local total
  # The dump taken after the measured requests is the largest file (the other holds the
  # shutdown, with instrumentation off).
  total=$(for f in "$out".[0-9]*; do
    callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen {gsub(",", "", $1); print $1; seen = 1}'
  done | sort -n | tail -n 1)
  if [ -z "$total" ]; then
    echo "$label: callgrind recorded nothing (see $out.log)" >&2
    exit 1
  fi
  printf '%-44s %10d\n' "$label" $((total / requests))
}

# A Gatehouse instance with API `bench`, key `key0…`, and optionally an API policy.
instance() { # dir, policy xml or ""
  local dir=$1 policy=$2
  GATEHOUSE_LOG=warn "$bin" serve --data-dir "$dir" --no-portal --gateway-listen 127.0.0.1:$gateway_port --management-listen 127.0.0.1:$management_port >"$dir.log" 2>&1 &
  local pid=$!
  wait_port $management_port
  export GATEHOUSE_DATA_DIR=$dir
  echo "{\"properties\":{\"displayName\":\"bench\",\"path\":\"bench\",\"serviceUrl\":\"http://127.0.0.1:$origin_port\",\"protocols\":[\"http\"]}}" | "$bin" put /apis/bench --body - >/dev/null
  echo '{"properties":{"displayName":"get","method":"GET","urlTemplate":"/{*rest}","templateParameters":[{"name":"rest"}]}}' | "$bin" put /apis/bench/operations/get --body - >/dev/null
  echo '{"properties":{"scope":"/apis","displayName":"s","state":"active","primaryKey":"key00000000000000000000000000000"}}' | "$bin" put /subscriptions/s1 --body - >/dev/null
  if [ -n "$policy" ]; then
    python3 -c 'import json,sys; print(json.dumps({"properties": {"format": "rawxml", "value": sys.argv[1]}}))' "$policy" | "$bin" put /apis/bench/policies/policy --body - >/dev/null
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
key=key00000000000000000000000000000
instance "$work/plain" ""
instance "$work/limited" '<policies><inbound><base /><rate-limit calls="1000000000" renewal-period="60" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>'

echo "user-space instructions per proxied request ($requests requests over 4 keep-alive connections)"
measure "nginx reverse proxy" $proxy_port "" nginx -c "$work/proxy.conf" -p "$work"
for case in plain limited; do
  label="gatehouse, key required"
  [ $case = limited ] && label="gatehouse, key + rate-limit policy"
  GATEHOUSE_GATEWAY_WORKERS=1 TOKIO_WORKER_THREADS=1 GATEHOUSE_LOG=warn measure "$label" $gateway_port $key \
    "$bin" serve --data-dir "$work/$case" --no-portal --gateway-listen 127.0.0.1:$gateway_port --management-listen 127.0.0.1:$management_port
done
