#!/usr/bin/env bash
# bench/tunnel_compare.sh: HTTP through ringress's tunnel (edge + agent) against rathole
# (a TCP tunnel) and against the ringress edge proxying directly, in one run, on one
# machine. The method (pinning, CPU per request, rounds, noise control) is compare.sh's,
# see docs/performance.md.
#
# What it does:
#   * builds ringress (cargo build --release); installs rathole with
#     `cargo install rathole --locked` (without --locked if that fails to compile) when it
#     is not on PATH (or ~/.cargo/bin) and RATHOLE does not name a binary (minutes, once);
#   * starts one shared upstream (nginx, fixed 100-byte 200, keep-alive, 1 worker) and, in
#     front of it, the systems of SYSTEMS, all pinned to SERVER_CPU; wrk runs on
#     CLIENT_CPU and every request carries `Host: bench.ringress.localhost`:
#       direct        `ringress edge --config` with an endpoint whose upstream is the
#                     nginx upstream (no tunnel: the baseline);
#       tunnel        `ringress edge --dev` (WORKERS workers) + `ringress http` agent with
#                     its default of one session per edge worker; the tunnel is TLS;
#       tunnel-relay  the same with `ringress http --sessions 1`: with WORKERS=2 the
#                     connections accepted by the worker without a session are relayed to
#                     the worker that has it (needs WORKERS >= 2);
#       tunnel-inspect  the tunnel with the agent's local inspector capturing every request
#                     (`--web-addr` on a fresh port, the default `--inspect`); `tunnel` and
#                     `tunnel-relay` run with `--inspect=false --web-addr false`, the pure
#                     byte copy, so tunnel-inspect/tunnel is the cost of inspection;
#       rathole       rathole server + rathole client, `tcp` transport (no noise, no TLS),
#                     TCP_NODELAY on; wrk hits the server's service port; the rathole
#                     processes get TOKIO_WORKER_THREADS=WORKERS;
#   * ROUNDS rounds; in each round every connection count of CONNS_LIST runs every system
#     back to back, rotating which system goes first, so drift hits all alike;
#   * per run: req/s, p99 latency, and the CPU time of the system (utime+stime from
#     /proc/PID/stat summed over all its processes: edge + agent for the tunnels, server +
#     client for rathole) divided by completed requests = CPU µs per request, also split
#     into its two sides;
#   * prints medians and the ratios tunnel/rathole, tunnel/direct and tunnel-relay/tunnel
#     as Markdown, and writes everything to bench/results/tunnel-<UTC time>.txt (and
#     bench/results/tunnel-latest.txt).
#
# Environment:
#   ROUNDS=3 DURATION=10 (seconds per wrk run) WORKERS=1 CONNS_LIST="64 256" WARMUP=2
#   SERVER_CPU=1 CLIENT_CPU=0   CPUs for the systems (and upstream) and for wrk
#   SYSTEMS="direct tunnel rathole"   subset and order; the relay comparison is a separate
#                               invocation: WORKERS=2 SYSTEMS="tunnel tunnel-relay"; the
#                               inspector's cost: SYSTEMS="tunnel tunnel-inspect"
#   RATHOLE=                    rathole binary (default: PATH, then ~/.cargo/bin/rathole)
#   UPSTREAM_IDLE_PER_HOST=1024 [limits] upstream_idle_per_host of the ringress edges (the
#                               default): idle upstream connections (direct) or idle tunnel
#                               streams (tunnel) kept per worker; with more client
#                               connections than this, the surplus is closed after each
#                               request (see the "TCP connects/req" column)
#   RINGRESS_LOG_LEVEL=info     --log-level for the edge and the agent (nothing per request;
#                               readiness is read from the info lines, so info or finer)
#   RATHOLE_LOG_LEVEL=info      RUST_LOG for rathole (nothing per connection at info)
#   KEEP_WORK=1                 keep the temporary directory (configs, logs, raw output)
#   QUIET_WAIT=120              seconds to wait for an idle machine before starting
#   MAX_OTHER=10 NOISE_RETRIES=2  repeat a run when other processes took more than
#                               MAX_OTHER % of the CPU time during it (at most N times)
set -Eeuo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-1}
CONNS_LIST=${CONNS_LIST:-64 256}
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
SYSTEMS=${SYSTEMS:-direct tunnel rathole}
RATHOLE=${RATHOLE:-}
RINGRESS_LOG_LEVEL=${RINGRESS_LOG_LEVEL:-info}
RATHOLE_LOG_LEVEL=${RATHOLE_LOG_LEVEL:-info}
KEEP_WORK=${KEEP_WORK:-0}
QUIET_WAIT=${QUIET_WAIT:-120}
MAX_OTHER=${MAX_OTHER:-10}
NOISE_RETRIES=${NOISE_RETRIES:-2}
UPSTREAM_IDLE_PER_HOST=${UPSTREAM_IDLE_PER_HOST:-1024}
NOISY_RETRIES=0
HOST_HEADER=bench.ringress.localhost

die() { echo "tunnel_compare.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in ROUNDS DURATION WORKERS WARMUP SERVER_CPU CLIENT_CPU QUIET_WAIT MAX_OTHER NOISE_RETRIES UPSTREAM_IDLE_PER_HOST; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS must be 1..20"
((DURATION >= 1 && DURATION <= 120)) || die "DURATION must be 1..120 seconds"
((WORKERS >= 1 && WORKERS <= 64)) || die "WORKERS must be 1..64"
[[ -n ${CONNS_LIST// /} ]] || die "CONNS_LIST is empty"
for c in $CONNS_LIST; do
    [[ $c =~ ^[0-9]+$ ]] && ((c >= 1 && c <= 10000)) || die "CONNS_LIST entries must be 1..10000 (got '$c')"
done
read -ra SYS <<<"$SYSTEMS"
((${#SYS[@]} >= 1)) || die "SYSTEMS is empty"
declare -A SEEN=()
for s in "${SYS[@]}"; do
    [[ $s =~ ^(direct|tunnel|tunnel-relay|tunnel-inspect|rathole)$ ]] || die "unknown system '$s' in SYSTEMS"
    [[ -z ${SEEN[$s]:-} ]] || die "system '$s' listed twice in SYSTEMS"
    SEEN[$s]=1
done
[[ -z ${SEEN[tunnel-relay]:-} ]] || ((WORKERS >= 2)) ||
    die "tunnel-relay needs WORKERS >= 2 (with one worker there is nothing to relay): WORKERS=2 SYSTEMS=\"tunnel tunnel-relay\""
has() { [[ -n ${SEEN[$1]:-} ]]; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$ROOT/bench/results
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGRESS_BIN=$TARGET_DIR/release/ringress
CLK_TCK=$(getconf CLK_TCK)

for cmd in nginx wrk taskset ss curl timeout getconf cargo; do
    command -v "$cmd" >/dev/null || die "missing '$cmd' (apt-get install nginx-light wrk util-linux iproute2 curl)"
done
bench_prepare tunnel_compare.sh

# ---------------------------------------------------------------------------------------
# Ports: fresh ones each run, below the ephemeral range, not used by any socket.
# ---------------------------------------------------------------------------------------
declare -A TAKEN=()
init_port_range
UP_PORT=$(pick_port)
declare -A PORT=() # system -> the port wrk hits
declare -A AUX=()  # system.role -> other ports (https and tunnel listeners, rathole control)
for s in "${SYS[@]}"; do PORT[$s]=$(pick_port); done
for s in tunnel tunnel-relay tunnel-inspect; do
    has "$s" || continue
    AUX[$s.https]=$(pick_port)
    AUX[$s.tunnel]=$(pick_port)
done
has tunnel-inspect && AUX[tunnel-inspect.web]=$(pick_port)
has rathole && AUX[rathole.control]=$(pick_port)

# The upstream's 100-byte body, checked through every system before the load starts.
FILL=$(printf 'x%.0s' $(seq 94))
UP_BODY="upstr:$FILL"

# ---------------------------------------------------------------------------------------
# Build and install
# ---------------------------------------------------------------------------------------
log "cargo build --release"
(cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
[[ -x $RINGRESS_BIN ]] || die "no binary at $RINGRESS_BIN"

if has rathole; then
    if [[ -z $RATHOLE ]]; then
        RATHOLE=$(command -v rathole || true)
        [[ -n $RATHOLE ]] || RATHOLE=$HOME/.cargo/bin/rathole
    fi
    if [[ ! -x $RATHOLE ]]; then
        [[ $RATHOLE == "$HOME/.cargo/bin/rathole" ]] || die "RATHOLE=$RATHOLE is not an executable"
        # rathole 0.5.0's lock file pins time 0.3.29, which newer compilers reject (type
        # inference, E0282): fall back to the newest semver-compatible dependencies.
        log "rathole not found: cargo install rathole --locked (into ~/.cargo/bin; a few minutes, once)"
        cargo install rathole --locked >&2 || {
            log "cargo install rathole --locked failed; retrying without --locked"
            cargo install rathole >&2 || die "cargo install rathole failed"
        }
        [[ -x $RATHOLE ]] || die "no rathole at $RATHOLE after cargo install"
    fi
fi

# Provenance, taken now: the tree may change while the benchmark runs.
GIT_STATE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit') ($(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified tracked files: $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | awk '{ print $2 }' | tr '\n' ' '))"
BIN_STATE="$(sha256sum "$RINGRESS_BIN" | cut -c1-16) built $(date -u -r "$RINGRESS_BIN" '+%Y-%m-%dT%H:%M:%SZ')"
RATHOLE_STATE=-
has rathole && RATHOLE_STATE="$("$RATHOLE" --version 2>&1 | awk -F': *' '/^Build Version/ { v = $2 } /^cargo Features/ { f = $2 } END { printf "%s (features %s)", v, f }') at $RATHOLE"

# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------
mkdir -p "$WORK/upstream"
nginx_fixed_upstream_conf "$WORK/upstream" "$UP_PORT" "$UP_BODY" >"$WORK/upstream/nginx.conf"

# The ringress edges: compare.sh's ringress proxy config (same timeouts and limits). The
# direct edge gets the endpoint; the tunnel edges get the same settings without endpoints
# (the agent binds its endpoint) and run with --dev for the tunnel listener and dev CA.
ringress_settings() {
    cat <<EOF
workers = $WORKERS
[timeouts]
client_idle = "5m"
upstream_idle = "5m"
header_read = "30s"
upstream_connect = "10s"
shutdown_grace = "5s"
[limits]
max_connections_per_worker = 65536
max_head_bytes = 1048576
upstream_idle_per_host = $UPSTREAM_IDLE_PER_HOST
EOF
}
check_config() { # $1 = name, then the edge's arguments
    local name=$1
    shift
    "$RINGRESS_BIN" edge "$@" --check >"$WORK/check-$name.log" 2>&1 ||
        { cat "$WORK/check-$name.log" >&2; die "ringress rejected the $name config ($*)"; }
}
if has direct; then
    {
        ringress_settings
        cat <<EOF
[listen]
http = "127.0.0.1:${PORT[direct]}"
[[endpoints]]
url = "http://$HOST_HEADER"
upstream = "http://127.0.0.1:$UP_PORT"
EOF
    } >"$WORK/ringress-direct.toml"
    check_config direct --config "$WORK/ringress-direct.toml"
fi
for s in tunnel tunnel-relay tunnel-inspect; do
    has "$s" || continue
    ringress_settings >"$WORK/ringress-$s.toml"
    check_config "$s" --dev --data-dir "$WORK/$s-edge" --config "$WORK/ringress-$s.toml"
done

if has rathole; then
    TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    cat >"$WORK/rathole-server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:${AUX[rathole.control]}"
[server.transport]
type = "tcp"
[server.transport.tcp]
nodelay = true
[server.services.bench]
type = "tcp"
token = "$TOKEN"
bind_addr = "127.0.0.1:${PORT[rathole]}"
EOF
    cat >"$WORK/rathole-client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:${AUX[rathole.control]}"
[client.transport]
type = "tcp"
[client.transport.tcp]
nodelay = true
[client.services.bench]
type = "tcp"
token = "$TOKEN"
local_addr = "127.0.0.1:$UP_PORT"
EOF
fi

# ---------------------------------------------------------------------------------------
# Start the systems
# ---------------------------------------------------------------------------------------
declare -A SIDE_A=() SIDE_B=() # system -> root pid of each side ("" when there is one)
declare -A LISTENER=()         # system -> root pid that must own PORT[system]
log "starting the systems on CPU $SERVER_CPU (workers=$WORKERS), wrk on CPU $CLIENT_CPU"

start upstream nginx -e "$WORK/upstream/error.log" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf"
UP_PID=$STARTED_PID
wait_listening "$UP_PORT" "$UP_PID" upstream

if has direct; then
    start direct env -u RUST_LOG "$RINGRESS_BIN" edge --config "$WORK/ringress-direct.toml" --log-level "$RINGRESS_LOG_LEVEL"
    SIDE_A[direct]=$STARTED_PID SIDE_B[direct]="" LISTENER[direct]=$STARTED_PID
fi

for s in tunnel tunnel-relay tunnel-inspect; do
    has "$s" || continue
    start "$s-edge" env -u RUST_LOG "$RINGRESS_BIN" edge --dev --data-dir "$WORK/$s-edge" --config "$WORK/ringress-$s.toml" --workers "$WORKERS" \
        --listen-http "127.0.0.1:${PORT[$s]}" --listen-https "127.0.0.1:${AUX[$s.https]}" \
        --listen-tunnel "127.0.0.1:${AUX[$s.tunnel]}" --log-level "$RINGRESS_LOG_LEVEL"
    SIDE_A[$s]=$STARTED_PID LISTENER[$s]=$STARTED_PID
done
for s in tunnel tunnel-relay tunnel-inspect; do
    has "$s" || continue
    wait_listening "${AUX[$s.tunnel]}" "${SIDE_A[$s]}" "$s-edge"
    wait_for_line "$WORK/$s-edge.err" 'ringress edge ready' 1 "${SIDE_A[$s]}" "$s-edge"
    [[ -s $WORK/$s-edge/ca.pem ]] || die "$s-edge: no dev CA at $WORK/$s-edge/ca.pem"
    sessions=()
    want=$WORKERS
    [[ $s == tunnel-relay ]] && sessions=(--sessions 1) want=1
    inspect=(--inspect=false --web-addr false)
    [[ $s == tunnel-inspect ]] && inspect=(--web-addr "127.0.0.1:${AUX[tunnel-inspect.web]}")
    start "$s-agent" env -u RUST_LOG "$RINGRESS_BIN" http "http://127.0.0.1:$UP_PORT" \
        --server-addr "127.0.0.1:${AUX[$s.tunnel]}" --root-cas "$WORK/$s-edge/ca.pem" \
        --url "http://$HOST_HEADER" "${sessions[@]}" "${inspect[@]}" --log-level "$RINGRESS_LOG_LEVEL"
    SIDE_B[$s]=$STARTED_PID
    # Online: the URL on stdout, then one "session online" log line per session.
    wait_for_line "$WORK/$s-agent.out" '://' 1 "${SIDE_B[$s]}" "$s-agent"
    wait_for_line "$WORK/$s-agent.err" 'session online' "$want" "${SIDE_B[$s]}" "$s-agent"
done

if has rathole; then
    start rathole-server env RUST_LOG="$RATHOLE_LOG_LEVEL" TOKIO_WORKER_THREADS="$WORKERS" "$RATHOLE" --server "$WORK/rathole-server.toml"
    SIDE_A[rathole]=$STARTED_PID LISTENER[rathole]=$STARTED_PID
    wait_listening "${AUX[rathole.control]}" "${SIDE_A[rathole]}" rathole-server
    start rathole-client env RUST_LOG="$RATHOLE_LOG_LEVEL" TOKIO_WORKER_THREADS="$WORKERS" "$RATHOLE" --client "$WORK/rathole-client.toml"
    SIDE_B[rathole]=$STARTED_PID
    # The server opens the service port once the client's control channel is up.
    wait_listening "${PORT[rathole]}" "${SIDE_A[rathole]}" rathole-server
fi
if has direct; then
    wait_listening "${PORT[direct]}" "${SIDE_A[direct]}" direct
    # Every worker binds its own SO_REUSEPORT socket: wait for the ready line.
    wait_for_line "$WORK/direct.err" 'ringress edge ready' 1 "${SIDE_A[direct]}" direct
fi
READY_LINES=$(grep -h 'ringress edge ready' "$WORK"/*.err 2>/dev/null | sed 's/.*ringress edge ready/ringress edge ready/' | sort -u | tr '\n' ';' || true)
PLACEMENT=$(grep -H 'session online' "$WORK"/*-agent.err 2>/dev/null | sed "s|$WORK/||" || true)

# Sanity: status 200 with the upstream's body through every system, no stranger on our ports.
check_listener_owner "$UP_PORT" "$UP_PID"
HEADERS_LOG=$WORK/response-heads.txt
: >"$HEADERS_LOG"
for s in "${SYS[@]}"; do
    check_listener_owner "${PORT[$s]}" "${LISTENER[$s]}"
    [[ -n ${AUX[$s.tunnel]:-} ]] && check_listener_owner "${AUX[$s.tunnel]}" "${LISTENER[$s]}"
    [[ $s == rathole ]] && check_listener_owner "${AUX[rathole.control]}" "${LISTENER[$s]}"
    body=$(curl -sS --max-time 5 -D "$WORK/h.tmp" -H "Host: $HOST_HEADER" "http://127.0.0.1:${PORT[$s]}/") ||
        die "$s: request failed"
    { echo "--- $s (response head, body ${#body} bytes)"; tr -d '\r' <"$WORK/h.tmp"; } >>"$HEADERS_LOG"
    head -1 "$WORK/h.tmp" | grep -q ' 200' || die "$s: not 200: $(head -1 "$WORK/h.tmp")"
    [[ $body == "$UP_BODY" ]] || die "$s: unexpected body '$body'"
done

# ---------------------------------------------------------------------------------------
# Load runs
# ---------------------------------------------------------------------------------------
RAW=$WORK/raw.tsv
printf 'round\tsystem\tconns\treq_s\tp99_us\trequests\terrors\tsystem_ticks\tcpu_us_per_req\tside_a_cpu_us_per_req\tside_b_cpu_us_per_req\tupstream_cpu_us_per_req\tclient_cpu_pct\tother_load_pct\ttcp_connects_per_req\n' >"$RAW"
: >"$WORK/tool-output.txt"

# run_once ROUND SYSTEM CONNS [discard]: one measured run; sets ROW (TSV line), LINE
# (progress line) and OTHER (foreign load %).
run_once() {
    local round=$1 s=$2 conns=$3 discard=${4:-}
    local url=http://127.0.0.1:${PORT[$s]}/ out=$WORK/out.txt tfile=$WORK/time.txt d=$DURATION
    local a0 a1 b0 b1 u0 u1 ss0 ss1 cs0 cs1 ao0 ao1 rps p99 reqs errs
    [[ -n $discard ]] && d=$WARMUP
    # shellcheck disable=SC2086 # SIDE_B is empty for direct: cpu_ticks then prints 0
    {
        a0=$(cpu_ticks "${SIDE_A[$s]}")
        b0=$(cpu_ticks ${SIDE_B[$s]})
    }
    u0=$(cpu_ticks "$UP_PID")
    ss0=$(cpu_stat "$SERVER_CPU")
    cs0=$(cpu_stat "$CLIENT_CPU")
    ao0=$(active_opens)
    local TIMEFORMAT='%R %U %S'
    { time taskset -c "$CLIENT_CPU" timeout $((d + 30)) \
        wrk -t1 -c"$conns" -d"${d}s" --latency -H "Host: $HOST_HEADER" "$url" >"$out" 2>&1; } 2>"$tfile" ||
        die "wrk failed against $s (-c$conns): $(cat "$out")"
    # shellcheck disable=SC2086
    {
        a1=$(cpu_ticks "${SIDE_A[$s]}")
        b1=$(cpu_ticks ${SIDE_B[$s]})
    }
    u1=$(cpu_ticks "$UP_PID")
    ss1=$(cpu_stat "$SERVER_CPU")
    cs1=$(cpu_stat "$CLIENT_CPU")
    ao1=$(active_opens)
    [[ -n $discard ]] && return 0

    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
    errs=$(wrk_errors "$out")
    [[ $reqs =~ ^[0-9]+$ && $reqs -gt 0 ]] || die "wrk against $s (-c$conns): could not parse request count: $(cat "$out")"
    local ticks=$((a1 - a0 + b1 - b0)) cpu cpu_a cpu_b=- up client opens
    cpu=$(per_req "$ticks" "$reqs")
    cpu_a=$(per_req $((a1 - a0)) "$reqs")
    [[ -n ${SIDE_B[$s]} ]] && cpu_b=$(per_req $((b1 - b0)) "$reqs")
    up=$(per_req $((u1 - u0)) "$reqs")
    opens=$(awk -v o=$((ao1 - ao0)) -v n="$reqs" 'BEGIN { printf "%.3f", o / n }')
    client=$(awk '{ if ($1 > 0) printf "%.0f", ($2 + $3) / $1 * 100; else print "nan" }' "$tfile")
    # "other": busy time on both CPUs not charged to the measured processes, the upstream
    # or wrk (other processes, hypervisor steal, softirq run from idle), as a share of the
    # run's CPU time. Above a few percent, distrust the run.
    OTHER=$(awk -v a="$ss0" -v b="$ss1" -v c="$cs0" -v d="$cs1" -v mine=$((ticks + u1 - u0)) \
        -v hz="$CLK_TCK" -v tf="$(cat "$tfile")" 'BEGIN {
            split(a, s0, " "); split(b, s1, " "); split(c, c0, " "); split(d, c1, " "); split(tf, t, " ")
            busy = (s1[1] - s0[1]) + (c1[1] - c0[1])
            total = (s1[3] - s0[3]) + (c1[3] - c0[3])
            other = busy - mine - (t[2] + t[3]) * hz
            if (other < 0) other = 0
            printf "%.1f\n", (total > 0 ? other / total * 100 : 0) }')
    ROW=$(printf '%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$s" "$conns" "$rps" "$p99" \
        "$reqs" "$errs" "$ticks" "$cpu" "$cpu_a" "$cpu_b" "$up" "$client" "$OTHER" "$opens")
    LINE=$(printf '  round %s  %-12s -c%-4s %7.0f req/s  p99 %8s µs  cpu %6s µs/req (%s + %s)  upstream %5s  connects/req %s  wrk %3s%%  other %4s%%  errors %s' \
        "$round" "$s" "$conns" "$rps" "$p99" "$cpu" "$cpu_a" "$cpu_b" "$up" "$opens" "$client" "$OTHER" "$errs")
    { echo "### round $round $s -c$conns (other load $OTHER%)"; cat "$out"; } >>"$WORK/tool-output.txt"
}

# run_load ROUND SYSTEM CONNS [discard]: a run whose foreign load exceeds MAX_OTHER % is
# repeated (after waiting for quiet) up to NOISE_RETRIES times; the last attempt is kept
# either way, with its foreign load in the table.
run_load() { run_with_retries "${4:-}" run_once "$@"; }

nsys=${#SYS[@]}
nconns=$(wc -w <<<"$CONNS_LIST")
max_conns=$(tr ' ' '\n' <<<"$CONNS_LIST" | sort -n | tail -1)
est=$((ROUNDS * nconns * nsys * (DURATION + 1) + nsys * (WARMUP + 1)))
log "ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS_LIST='$CONNS_LIST' WORKERS=$WORKERS systems: ${SYS[*]}; about $((est / 60 + 1)) min"

log "waiting for an idle machine (up to ${QUIET_WAIT}s)"
wait_quiet "$QUIET_WAIT"

log "warm-up (${WARMUP}s per system at -c$max_conns)"
for s in "${SYS[@]}"; do run_load 0 "$s" "$max_conns" discard; done

for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS"
    order=() # rotate the system order each round
    for i in $(seq 0 $((nsys - 1))); do order+=("${SYS[$(((i + round - 1) % nsys))]}"); done
    for conns in $CONNS_LIST; do
        for s in "${order[@]}"; do run_load "$round" "$s" "$conns"; done
    done
done

# Every process must still be the one we started (nothing crashed mid-run).
for s in "${SYS[@]}"; do
    for pid in ${SIDE_A[$s]} ${SIDE_B[$s]}; do
        kill -0 "$pid" 2>/dev/null || die "$s (pid $pid) died during the run"
    done
done
kill -0 "$UP_PID" 2>/dev/null || die "the upstream died during the run"

# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
rows() { awk -F'\t' -v s="$1" -v c="$2" 'NR > 1 && $2 == s && $3 == c' "$RAW"; }
fmt0() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.0f", v }'; }
fmt1() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.1f", v }'; }

declare -A MED=()
for conns in $CONNS_LIST; do
    for s in "${SYS[@]}"; do
        k=$s.$conns
        MED[$k.rps]=$(rows "$s" "$conns" | median 4)
        MED[$k.p99]=$(rows "$s" "$conns" | median 5)
        MED[$k.cpu]=$(rows "$s" "$conns" | median 9)
        MED[$k.a]=$(rows "$s" "$conns" | median 10)
        MED[$k.b]=$(rows "$s" "$conns" | median 11)
        MED[$k.up]=$(rows "$s" "$conns" | median 12)
        MED[$k.client]=$(rows "$s" "$conns" | median 13)
        MED[$k.other]=$(rows "$s" "$conns" | awk -F'\t' '$14 > m { m = $14 } END { print m + 0 }')
        MED[$k.err]=$(rows "$s" "$conns" | awk -F'\t' '{ e += $7 } END { print e + 0 }')
        MED[$k.opens]=$(rows "$s" "$conns" | median 15)
    done
done

# Ratio columns for the pairs whose both systems ran: "numerator denominator".
PAIRS=()
for p in "tunnel rathole" "tunnel direct" "tunnel-relay tunnel" "tunnel-relay rathole" "tunnel-inspect tunnel"; do
    read -r x y <<<"$p"
    has "$x" && has "$y" && PAIRS+=("$p")
done
side_names() {
    case $1 in
    direct) echo "edge|-" ;;
    tunnel | tunnel-relay | tunnel-inspect) echo "edge|agent" ;;
    rathole) echo "server|client" ;;
    esac
}

SUMMARY=$WORK/summary.md
{
    extra=""
    ((UPSTREAM_IDLE_PER_HOST == 1024)) || extra=" UPSTREAM_IDLE_PER_HOST=$UPSTREAM_IDLE_PER_HOST"
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS_LIST=\"$CONNS_LIST\" SYSTEMS=\"$SYSTEMS\"$extra bench/tunnel_compare.sh\`"
    echo
    echo "Medians of $ROUNDS round(s). All systems and the upstream pinned to CPU $SERVER_CPU, wrk (-t1) to CPU $CLIENT_CPU; $WORKERS worker(s) per ringress edge (rathole: TOKIO_WORKER_THREADS=$WORKERS); ${DURATION}s per run. CPU µs/req is the whole system: edge + agent for the tunnels, server + client for rathole (split in the next two columns). TCP connects/req: every TCP connect on the machine during the run (wrk's connections at its start, rathole's data channels, connections to the upstream) per request; well above 0 it means connection churn. $NOISY_RETRIES run(s) repeated because other processes took more than $MAX_OTHER% of the CPU."
    echo
    echo "| conns | system | req/s | p99 (ms) | CPU µs/req | of which edge/server | of which agent/client | upstream CPU µs/req | TCP connects/req | wrk CPU % | other load % (max) | errors |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for conns in $CONNS_LIST; do
        for s in "${SYS[@]}"; do
            k=$s.$conns
            IFS='|' read -r na nb <<<"$(side_names "$s")"
            b=$(fmt1 "${MED[$k.b]}")
            [[ $nb == - ]] || b="$b ($nb)"
            echo "| $conns | $s | $(fmt0 "${MED[$k.rps]}") | $(fmt_ms "${MED[$k.p99]}") | $(fmt1 "${MED[$k.cpu]}") | $(fmt1 "${MED[$k.a]}") ($na) | $b | $(fmt1 "${MED[$k.up]}") | ${MED[$k.opens]} | $(fmt0 "${MED[$k.client]}") | ${MED[$k.other]} | ${MED[$k.err]} |"
        done
    done
    if ((${#PAIRS[@]})); then
        echo
        echo "| conns | ratio | req/s | p99 | CPU/req |"
        echo "|---:|---|---:|---:|---:|"
        for conns in $CONNS_LIST; do
            for p in "${PAIRS[@]}"; do
                read -r x y <<<"$p"
                echo "| $conns | $x/$y | $(ratio "${MED[$x.$conns.rps]}" "${MED[$y.$conns.rps]}") | $(ratio "${MED[$x.$conns.p99]}" "${MED[$y.$conns.p99]}") | $(ratio "${MED[$x.$conns.cpu]}" "${MED[$y.$conns.cpu]}") |"
            done
        done
    fi
    if has tunnel && has rathole; then
        echo
        for conns in $CONNS_LIST; do
            r=$(ratio "${MED[tunnel.$conns.rps]}" "${MED[rathole.$conns.rps]}")
            verdict=missed
            awk -v r="$r" 'BEGIN { exit !(r != "-" && r >= 1.0) }' && verdict=met
            echo "Target tunnel >= 1.0x rathole req/s at $conns connections: ${r}x, $verdict."
        done
    fi
} >"$SUMMARY"

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/tunnel-$(date -u +%Y%m%d-%H%M%S).txt
{
    echo "# bench/tunnel_compare.sh results"
    echo "date:     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "command:  ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS_LIST='$CONNS_LIST' WARMUP=$WARMUP SYSTEMS='$SYSTEMS' UPSTREAM_IDLE_PER_HOST=$UPSTREAM_IDLE_PER_HOST MAX_OTHER=$MAX_OTHER NOISE_RETRIES=$NOISE_RETRIES bench/tunnel_compare.sh"
    echo "git:      $GIT_STATE (at start)"
    echo "binary:   $BIN_STATE"
    echo "rathole:  $RATHOLE_STATE"
    echo "kernel:   $(uname -srm)"
    echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) x $NCPU; server CPU $SERVER_CPU, client CPU $CLIENT_CPU; CLK_TCK $CLK_TCK"
    echo "ringress: ${READY_LINES:-no ready line seen} (workers=$WORKERS, log level $RINGRESS_LOG_LEVEL)"
    echo "versions: $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 || true)"
    echo
    echo "## summary (medians)"
    cat "$SUMMARY"
    echo
    echo "## raw runs"
    column -t -s $'\t' "$RAW"
    echo
    echo "## agent sessions (slot -> edge worker)"
    echo "${PLACEMENT:-none}"
    echo
    echo "## response heads seen by curl"
    cat "$HEADERS_LOG"
    echo
    echo "## configs"
    for f in "$WORK/upstream/nginx.conf" "$WORK"/ringress-*.toml "$WORK/rathole-server.toml" "$WORK/rathole-client.toml"; do
        [[ -f $f ]] || continue
        echo "--- ${f#"$WORK"/}"
        sed 's/^token = .*/token = "<random>"/' "$f"
    done
    echo
    echo "## process logs (stderr and stdout, last 20 lines each; rathole logs to stdout)"
    for f in "$WORK"/*.err "$WORK"/*.out; do
        [[ -s $f ]] || continue
        echo "--- ${f#"$WORK"/}"
        tail -20 "$f"
    done
    echo
    echo "## tool output"
    cat "$WORK/tool-output.txt"
} >"$OUT"

cp "$OUT" "$RESULTS_DIR/tunnel-latest.txt"

echo
cat "$SUMMARY"
echo
echo "raw results: $OUT (also bench/results/tunnel-latest.txt)"
