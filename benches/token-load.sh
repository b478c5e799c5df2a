#!/usr/bin/env bash
# HTTP load test of POST /v1/tokens: tokens/s on one core and latency
# percentiles under load.
#
# The server (release build) runs pinned to one CPU with one tokio worker;
# wrk runs pinned to another CPU, keeping CONNS connections busy. Every
# request is a full token issue: API key check, rate limiter (disabled
# here with --rate-limit 0 so it measures the issuer, not the limit), JSON
# parse, routing decision on the live snapshot, signing, JSON answer.
#
# Environment: ALG (EdDSA|ES256, default EdDSA), DURATION (default 10s),
# CONNS (default 32), SERVER_CPU (default 0), LOAD_CPU (default 1).
# Needs: wrk (Debian package wrk), taskset (util-linux), curl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ALG=${ALG:-EdDSA}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
for tool in wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "token-load: needs $tool (apt-get install wrk util-linux curl)" >&2; exit 1; }
done

cargo build --release --bin cellns >&2
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

target/release/cellns keygen --out "$tmp/keys" --alg "$ALG" >&2
KEY=bench-caller-key-0123456789abcdef
echo "bench sha256:$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)" >"$tmp/api-keys"

TOKIO_WORKER_THREADS=1 taskset -c "$SERVER_CPU" target/release/cellns --log-format json serve \
    --dns-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --signing-keys "$tmp/keys" --api-keys "$tmp/api-keys" --rate-limit 0 \
    2>"$tmp/log" &
pid=$!
addr=
for _ in $(seq 300); do
    addr=$(sed -n 's/.*"addr":"\([^"]*\)".*"message":"HTTP listening".*/\1/p; s/.*"message":"HTTP listening".*"addr":"\([^"]*\)".*/\1/p' "$tmp/log" | head -1)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "token-load: server did not start" >&2; cat "$tmp/log" >&2; exit 1; }

body='{"tenant":"acme","subject":"user-42","ttl_seconds":900}'
code=$(curl -s -o "$tmp/one" -w '%{http_code}' -X POST "http://$addr/v1/tokens" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$body")
[ "$code" = 200 ] || { echo "token-load: a single request failed ($code): $(cat "$tmp/one")" >&2; exit 1; }

cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("non-2xx: %d, socket errors: %d\n", non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA

# CPU time the server used (user + system, clock ticks): on a shared
# machine wall-clock tokens/s understates what one core does, so the
# tokens per CPU-second of the server are reported too.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
echo "# ALG=$ALG CONNS=$CONNS DURATION=$DURATION server on CPU $SERVER_CPU (1 tokio worker), wrk on CPU $LOAD_CPU"
before=$(cpu_ticks)
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$tmp/post.lua" "http://$addr/v1/tokens" | tee "$tmp/wrk.out"
after=$(cpu_ticks)
requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$tmp/wrk.out")
awk -v r="$requests" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { s = t / hz; printf "server CPU: %.2f s for %d tokens = %.0f tokens per CPU-second\n", s, r, (s > 0 ? r / s : 0) }'
