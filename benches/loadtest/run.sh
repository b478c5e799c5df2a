#!/usr/bin/env bash
# Load harness: cellns against Knot DNS, NSD, a bare recvmmsg/sendmmsg
# responder (this machine's practical UDP limit) and, when built, hickory-dns.
# Prints markdown tables to stdout (also $RESULTS/table.md); raw per-run data in
# $RESULTS/results.json; the plot with plot.py. See README.md.
#
#   benches/loadtest/run.sh                  # full: N=100000, 3 x 15 s, overload, 1M memory (~35 min)
#   QUICK=1 benches/loadtest/run.sh          # quick: 1 x 5 s, short overload, no 1M phase (~5 min)
#   N=100000 DURATION=8 REPS=3 benches/loadtest/run.sh
#   SERVERS="ref cellns knot" OVERLOAD=0 RSS_N2=0 benches/loadtest/run.sh
#
# Knobs (environment; full list at the top of bench.py):
#   N DURATION REPS CLIENTS OUTST SERVERS SERVER_CPU CLIENT_CPU BASE_PORT RSS_N2 CELLS
#   CELLNS_BIN (default: target/release/cellns, built if missing; BUILD=1 rebuilds)
#   QUIET_WAIT QUIET_CPU   wait for a quiet machine before each run
#   OVERLOAD OVERLOAD_SERVERS OVERLOAD_DURATION OVERLOAD_STEPS OVERLOAD_REPS FLOOD_MODE
#   WORK (scratch, default /tmp/cellns-loadtest)  RESULTS (default $WORK/results)
#   PLOT=1 also renders $RESULTS/loadtest.png (needs matplotlib; PYTHON picks the interpreter)
#   INSTALL=1        apt-get install missing Debian packages (services not started)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export WORK=${WORK:-/tmp/cellns-loadtest}
export RESULTS=${RESULTS:-$WORK/results}
export HICKORY_BIN=${HICKORY_BIN:-/tmp/hickory/bin/hickory-dns}
mkdir -p "$WORK" "$RESULTS"

if [[ "${QUICK:-0}" == 1 ]]; then
  export DURATION=${DURATION:-5} REPS=${REPS:-1} RSS_N2=${RSS_N2:-0}
  export OVERLOAD_DURATION=${OVERLOAD_DURATION:-3} OVERLOAD_REPS=${OVERLOAD_REPS:-1}
  export OVERLOAD_STEPS=${OVERLOAD_STEPS:-"2"} QUIET_WAIT=${QUIET_WAIT:-60}
fi

missing=()
for b in knotd nsd dnsperf gcc python3 taskset; do command -v "$b" >/dev/null || missing+=("$b"); done
if ((${#missing[@]})); then
  if [[ "${INSTALL:-0}" == 1 ]]; then
    # keep packaged services from auto-starting
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq knot nsd dnsperf knot-dnsutils dnsutils gcc util-linux
    rm -f /usr/sbin/policy-rc.d
  else
    echo "missing: ${missing[*]} (re-run with INSTALL=1)" >&2; exit 1
  fi
fi

# cellns: release build. Benchmark a private copy, so a concurrent rebuild of
# the shared target dir cannot swap the binary in the middle of a run, named
# so that someone's `killall cellns` on a shared machine does not stop it.
if [[ "${BUILD:-0}" == 1 || ( -z "${CELLNS_BIN:-}" && ! -x "$REPO/target/release/cellns" ) ]]; then
  (cd "$REPO" && cargo build --release --bin cellns)
fi
cp "${CELLNS_BIN:-$REPO/target/release/cellns}" "$WORK/cellns-bench"
export CELLNS_BIN="$WORK/cellns-bench"

gcc -O2 -Wall -o "$WORK/refresp" "$HERE/refresp.c"
gcc -O2 -Wall -o "$WORK/flood" "$HERE/flood.c"

rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$REPO" status --porcelain -- src crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
{
  echo "date: $(date -u +%FT%TZ)  host: $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
  echo "versions: cellns $("$CELLNS_BIN" --version 2>&1 | head -1 | awk '{print $NF}') (git $rev$( ((dirty)) && echo ", $dirty uncommitted file(s) under src/ crates/ Cargo.*"), sha256 $(sha256sum "$CELLNS_BIN" | cut -c1-12)); $(knotd --version 2>&1 | head -1); $(nsd -v 2>&1 | head -1); dnsperf $(dnsperf -h 2>&1 | awk '/^Version/{print $2}')$( [[ -x $HICKORY_BIN ]] && echo "; $($HICKORY_BIN --version 2>&1 | head -1)")${EXTRA_NAME:+; extra: $EXTRA_NAME}"
} | tee "$RESULTS/table.md"
python3 "$HERE/bench.py" | tee -a "$RESULTS/table.md"
echo "raw per-run data: $(ls -t "$RESULTS"/results*.json | head -1)" >&2

if [[ "${PLOT:-0}" == 1 ]]; then
  PY=${PYTHON:-$REPO/.venv-test/bin/python}
  "$PY" "$HERE/plot.py" "$RESULTS/results.json" "$RESULTS/loadtest.png"
fi
