#!/usr/bin/env bash
# A tenant moves between two cells, and its client follows.
#
# Starts cellns (DNS and token API for the zone cells.demo.test.), two toy
# cells (examples/cell.rs) on 127.0.0.2 and 127.0.0.3 with the same port,
# and the toy client (examples/client.rs) for tenant acme. Then it moves
# acme from cell a to cell b by rewriting the map file, as a control plane
# would, and shows the client being refused by its old cell (wrong_cell),
# fetching one new token and reaching the new cell.
#
# With --scheduled, the map keeps acme's tenant line and schedules the move
# instead ([moves.acme] a few seconds ahead): cellns flips DNS and tokens by
# itself at that time, without a reload (docs/moves.md).
#
# Usage: examples/demo.sh [--non-interactive] [--scheduled]
#   --non-interactive   do not wait for Enter; exit 0 as soon as the client
#                       has followed the move (the default when stdin is not
#                       a terminal). Exits 1 if any step takes too long.
#   --scheduled         schedule the move in the map instead of rewriting
#                       the tenant line.
# Environment:
#   DEMO_PROFILE   cargo profile to build with: release (default) or dev
#   DEMO_TIMEOUT   seconds to wait for each step (default 60)
#
# Needs cargo, and Linux (all of 127.0.0.0/8 is on the loopback interface).
# On macOS add the two addresses first:
#   sudo ifconfig lo0 alias 127.0.0.2 up; sudo ifconfig lo0 alias 127.0.0.3 up
set -euo pipefail

interactive=1
scheduled=0
for arg in "$@"; do
  case "$arg" in
    --non-interactive) interactive=0 ;;
    --scheduled) scheduled=1 ;;
    *) echo "usage: $0 [--non-interactive] [--scheduled]" >&2; exit 2 ;;
  esac
done
[[ -t 0 ]] || interactive=0
profile=${DEMO_PROFILE:-release}
timeout=${DEMO_TIMEOUT:-60}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

say "building cellns and the examples ($profile)"
cargo build --quiet --profile "$profile" --bin cellns --example cell --example client
out="${CARGO_TARGET_DIR:-$repo/target}/$([[ $profile == dev ]] && echo debug || echo "$profile")"
cellns="$out/cellns"
cell="$out/examples/cell"
client="$out/examples/client"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cellns-demo.XXXXXX")
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ $status -ne 0 ]]; then
    for log in "$tmp"/*.log; do
      [[ -e $log ]] && { echo "--- $log"; tail -n 20 "$log"; }
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE contains PATTERN (a fixed string), at most $timeout seconds.
wait_for() {
  local file=$1 pattern=$2 deadline=$((SECONDS + timeout))
  until grep -qF -- "$pattern" "$file" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${timeout}s waiting for '$pattern' in $file" >&2
      return 1
    fi
    sleep 0.1
  done
}

# The client's log lines not shown yet, printed; true when one of them
# contains PATTERN (a fixed string). The client's lines and the demo's own
# are printed by this one process, so they appear in the order things
# happened.
shown=0
show_client() {
  local pattern=${1:-} total new
  total=$(wc -l <"$tmp/client.log")
  ((total > shown)) || return 1
  new=$(sed -n "$((shown + 1)),${total}p" "$tmp/client.log")
  printf '%s\n' "$new"
  shown=$total
  [[ -n $pattern ]] && grep -qF -- "$pattern" <<<"$new"
}

# Shows the client's lines as they come until one contains PATTERN, at most
# $timeout seconds.
follow_client() {
  local pattern=$1 deadline=$((SECONDS + timeout))
  until show_client "$pattern"; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${timeout}s waiting for '$pattern' in the client's log" >&2
      return 1
    fi
    sleep 0.1
  done
}

# The address cellns logged (JSON log line whose message starts with WHAT).
logged_addr() {
  grep -m1 -F "\"message\":\"$1" "$tmp/cellns.log" | sed -E 's/.*"addr":"([^"]+)".*/\1/'
}

# Writes the map with acme in cell $1, version demo-$2, and, when $3 is
# given, acme's move to cell b at that time (RFC 3339). The file is written
# next to the map and renamed over it, so cellns never reads half a file.
write_map() {
  cat >"$tmp/map.toml.tmp" <<EOF
# The demo map: one tenant, two cells on loopback addresses.
version = "demo-$2"

[zone]
origin = "cells.demo.test."
ttl = 2    # short so the demo is quick; production maps use about 30
nameservers = ["ns1.cells.demo.test."]
hostmaster = "hostmaster.cells.demo.test."

[zone.glue]
"ns1.cells.demo.test." = ["127.0.0.1"]

[cells.a]
hostname = "a.cells.demo.test."
ipv4 = ["127.0.0.2"]
region = "demo"

[cells.b]
hostname = "b.cells.demo.test."
ipv4 = ["127.0.0.3"]
region = "demo"

[tenants]
acme = "$1"

[safety]
# A reload that moves more than 10% of the listed tenants is rejected by
# default (a typo must not move everyone). This map lists one tenant, so
# moving it is a 100% move: allow it.
max_moved_fraction = 1.0
EOF
  if [[ -n ${3:-} ]]; then
    cat >>"$tmp/map.toml.tmp" <<EOF

# acme stays in cell a until 'at', then every cellns instance serves it
# from cell b, without a reload; its answers carry zone.move_ttl around it.
[moves.acme]
to = "b"
at = "$3"
EOF
  fi
  mv "$tmp/map.toml.tmp" "$tmp/map.toml"
}

# RFC 3339 UTC of now + $1 seconds (GNU date, or BSD date on macOS).
rfc3339_in() {
  local t=$(($(date +%s) + $1))
  date -u -d "@$t" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$t" +%Y-%m-%dT%H:%M:%SZ
}

# What DNS says about the tenant (the same cell as the token's claim).
show_dns() {
  if command -v dig >/dev/null; then
    echo "DNS: acme.cells.demo.test -> $(dig @"${dns%:*}" -p "${dns##*:}" +short +norecurse acme.cells.demo.test A | tr '\n' ' ')"
  fi
}

say "starting cellns"
"$cellns" keygen --out "$tmp/keys" >/dev/null
# The auth service's API key; cellns keeps only its SHA-256.
api_key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "auth-service sha256:$(printf %s "$api_key" | sha256sum | cut -d' ' -f1)" >"$tmp/api-keys"
write_map a 1
"$cellns" --log-format json serve --map "$tmp/map.toml" \
  --dns-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --signing-keys "$tmp/keys" --api-keys "$tmp/api-keys" 2>"$tmp/cellns.log" &
pids+=($!)
wait_for "$tmp/cellns.log" '"message":"serving"'
dns=$(logged_addr "DNS listening")
http=$(logged_addr "HTTP listening")
echo "cellns: DNS on $dns, token API and JWKS on http://$http"

say "starting cell a on 127.0.0.2 and cell b on 127.0.0.3"
start_cell() { # NAME ADDRESS PORT
  "$cell" --listen "$2:$3" --hostname "$1.cells.demo.test" --zone cells.demo.test \
    --jwks "http://$http/.well-known/jwks.json" --dns "$dns" >"$tmp/cell-$1.log" 2>&1 &
  pids+=($!)
  wait_for "$tmp/cell-$1.log" "listening on"
}
start_cell a 127.0.0.2 0
port=$(sed -n -E 's/.*listening on 127\.0\.0\.2:([0-9]+).*/\1/p' "$tmp/cell-a.log")
start_cell b 127.0.0.3 "$port"
echo "cells: a.cells.demo.test = 127.0.0.2:$port, b.cells.demo.test = 127.0.0.3:$port"

say "starting the client of tenant acme"
DEMO_API_KEY=$api_key "$client" --cellns "http://$http" --dns "$dns" --cell-port "$port" \
  --tenant acme --interval-ms 500 >"$tmp/client.log" 2>&1 &
pids+=($!)
follow_client "served   by a.cells.demo.test"
show_dns

if ((interactive)); then
  echo
  echo "Try it: dig @${dns%:*} -p ${dns##*:} +short acme.cells.demo.test"
  read -r -p "Press Enter to move acme to cell b... "
fi

show_client || true
# The lines shown so far came before the move; the rest come after it.
lines=$shown
if ((scheduled)); then
  at=$(rfc3339_in 6)
  say "moving acme from cell a to cell b: scheduled at $at (map demo-2, tenant line unchanged)"
  write_map a 2 "$at"
  # What cellns says about the move (the demo's key may read /v1/).
  if command -v curl >/dev/null; then
    deadline=$((SECONDS + timeout))
    until curl -fsS -H "Authorization: Bearer $api_key" "http://$http/v1/tenants/acme" 2>/dev/null |
      grep -qF '"move":{'; do
      if ((SECONDS >= deadline)); then
        echo "timed out after ${timeout}s waiting for cellns to load the move" >&2
        exit 1
      fi
      sleep 0.1
    done
    phase=$(curl -fsS -H "Authorization: Bearer $api_key" "http://$http/v1/tenants/acme" |
      sed -E 's/.*"phase":"([^"]+)".*/\1/')
    echo "cellns: acme's move is loaded, phase $phase; DNS and tokens flip at $at"
  fi
else
  say "moving acme from cell a to cell b (map demo-2)"
  write_map b 2
fi
follow_client "served   by b.cells.demo.test"
show_dns

# What happened after the move, from the client's own log.
after=$(sed -n "$((lines + 1)),${shown}p" "$tmp/client.log")
tokens=$(grep -c "token    for cell" <<<"$after" || true)
say "acme now lives in cell b; the client followed with $tokens new token(s)"

if ((interactive)); then
  read -r -p "Press Enter to stop... "
fi
