#!/usr/bin/env bash
# HTTP/2 bridge comparison: h2 on monoio through the poll-io bridge
# (TcpStream::into_poll_io) against monoio-compat's StreamWrapper, on
# cleartext h2c with examples/h2_bridge.rs (fixed 200 response).
#
# Server pinned to CPU 1, h2load to CPU 0; ROUNDS rounds, bridges
# alternating within each round (runs drift ±10% on this VM). Reports
# req/s from h2load and the server's CPU time per request from
# /proc/PID/stat (utime + stime, fields 14 and 15, in CLK_TCK ticks).
#
#   bench/h2_bridge.sh                 # defaults below
#   ROUNDS=3 REQUESTS=2000000 CLIENTS=64 STREAMS=100 bench/h2_bridge.sh
#   BRIDGES="poll compat compat-plain compat:16384,65536" bench/h2_bridge.sh
#     (compat = ringress::h2::serve's bridge; compat-plain = StreamWrapper
#      alone with its 8 KiB buffers; compat:R,W = serve's bridge with
#      R/W-byte buffers)
#   BODY=16384 REQUESTS=500000 bench/h2_bridge.sh   # larger responses
#
# Loopback only; every process it starts is stopped by its own PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-2000000}
CLIENTS=${CLIENTS:-64}
STREAMS=${STREAMS:-100}
BRIDGES=${BRIDGES:-"poll compat"}
BODY=${BODY:-}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
# Below the ephemeral range (32768+), so no client socket holds the port.
PORT_BASE=${PORT_BASE:-$((10000 + RANDOM % 20000))}
OUT=${OUT:-bench/results/h2_bridge-$(date +%Y%m%d-%H%M%S).txt}

command -v h2load >/dev/null || { echo "h2load missing (apt-get install nghttp2-client)" >&2; exit 1; }
cargo build --release --example h2_bridge >&2
BIN=target/release/examples/h2_bridge
TCK=$(getconf CLK_TCK)
mkdir -p "$(dirname "$OUT")"

server_pid=""
SERVER_LOG=$(mktemp)
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    rm -f "$SERVER_LOG"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_one() { # bridge port -> prints "req_s cpu_us_per_req failed"
    local bridge=$1 port=$2 args=(--bridge "${1%%:*}" --port "$2")
    [[ $bridge == *:* ]] && args+=(--buf "${bridge#*:}")
    [ -n "$BODY" ] && args+=(--body "$BODY")
    taskset -c "$SERVER_CPU" "$BIN" "${args[@]}" 2>"$SERVER_LOG" &
    server_pid=$!
    for _ in $(seq 50); do
        ss -ltn "sport = :$port" | grep -q LISTEN && break
        sleep 0.1
    done
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "h2_bridge $bridge did not start on port $port:" >&2
        cat "$SERVER_LOG" >&2
        server_pid=""
        return 1
    fi
    # Warm-up: connections, allocator, page cache.
    taskset -c "$CLIENT_CPU" h2load -c "$CLIENTS" -m "$STREAMS" -n 100000 \
        "http://127.0.0.1:$port/" >/dev/null
    local t0 t1 log
    t0=$(cpu_ticks "$server_pid")
    log=$(taskset -c "$CLIENT_CPU" h2load -c "$CLIENTS" -m "$STREAMS" -n "$REQUESTS" \
        "http://127.0.0.1:$port/")
    t1=$(cpu_ticks "$server_pid")
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    local rps ok failed
    rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$log")
    ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$log")
    failed=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$log")
    awk -v r="$rps" -v d="$((t1 - t0))" -v k="$TCK" -v n="$ok" -v f="$failed" \
        'BEGIN { printf "%.0f %.2f %d\n", r, (d / k) * 1e6 / n, f }'
}

{
    echo "# h2 bridge comparison $(date -u +%FT%TZ), $(nproc) CPUs, kernel $(uname -r)"
    echo "# h2load -c $CLIENTS -m $STREAMS -n $REQUESTS (after -n 100000 warm-up);" \
        "server on CPU $SERVER_CPU, h2load on CPU $CLIENT_CPU; body ${BODY:-21} bytes"
    echo "| round | bridge | req/s | server CPU µs/req | failed |"
    echo "|---|---|---:|---:|---:|"
} | tee "$OUT"
port=$PORT_BASE
for round in $(seq "$ROUNDS"); do
    order=$BRIDGES
    # ABBA: reverse the order every other round so drift favours no one.
    ((round % 2 == 0)) && order=$(tr ' ' '\n' <<<"$BRIDGES" | tac | tr '\n' ' ')
    for bridge in $order; do
        port=$((port + 1))
        read -r rps cpu failed < <(run_one "$bridge" "$port")
        echo "| $round | $bridge | $rps | $cpu | $failed |" | tee -a "$OUT"
    done
done
echo "results in $OUT" >&2
