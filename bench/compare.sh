#!/usr/bin/env bash
# bench/compare.sh: ringress against nginx and haproxy, in one run, on one machine.
#
# What it does (see docs/performance.md for the method and how to read the numbers):
#   * builds ringress (cargo build --release);
#   * starts one shared upstream (nginx, fixed ~100-byte 200 reply, keep-alive, 1 worker)
#     and three front proxies with the same worker count (nginx, haproxy, ringress), all
#     pinned to SERVER_CPU; the load generators (wrk, h2load --h1) run on CLIENT_CPU;
#   * scenario "fixed": the front answers by itself; scenario "proxy": the front proxies to
#     the shared upstream over keep-alive upstream connections;
#   * ROUNDS rounds; in each round every (scenario, tool) runs every server back to back,
#     rotating which server goes first, so drift hits all servers alike;
#   * per run: req/s, p99 latency, and the server's CPU time (utime+stime from /proc/PID/stat
#     summed over all its processes) divided by completed requests = CPU µs per request;
#   * prints medians and ringress/nginx, ringress/haproxy ratios, as text and Markdown, and
#     writes everything to bench/results/run-<UTC time>.txt and bench/results/latest.txt.
#
# Environment:
#   ROUNDS=3 DURATION=10 (seconds per wrk run) WORKERS=1 CONNS=64 WARMUP=2 (seconds)
#   SERVER_CPU=1 CLIENT_CPU=0   CPUs for servers and for the load generator
#   SKIP_RINGRESS=1             compare nginx and haproxy only (no cargo build)
#   SCENARIOS="fixed proxy" TOOLS="wrk h2load"   subsets; add "loadtest" to TOOLS for an
#                               open-loop run at LOADTEST_RATE req/s (default 20000) with
#                               ringress-loadtest (latency and CPU/request at equal load)
#   H2LOAD_N=                   h2load -n (default: the same server's wrk req/s x DURATION)
#   H2LOAD_P99=1                h2load p99 from --log-file (one extra write per request on
#                               the client; set 0 to skip and report p99 as "-")
#   RINGRESS_LOG_LEVEL=info     --log-level for ringress (it logs nothing per request at info)
#   KEEP_WORK=1                 keep the temporary directory (configs, logs, raw output)
#   QUIET_WAIT=120              seconds to wait for an idle machine before starting
#   MAX_OTHER=10 NOISE_RETRIES=2  repeat a run when other processes took more than
#                               MAX_OTHER % of the CPU time during it (at most N times)
set -Eeuo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-1}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
SKIP_RINGRESS=${SKIP_RINGRESS:-0}
SCENARIOS=${SCENARIOS:-fixed proxy}
TOOLS=${TOOLS:-wrk h2load}
H2LOAD_N=${H2LOAD_N:-}
H2LOAD_P99=${H2LOAD_P99:-1}
LOADTEST_RATE=${LOADTEST_RATE:-20000}
RINGRESS_LOG_LEVEL=${RINGRESS_LOG_LEVEL:-info}
KEEP_WORK=${KEEP_WORK:-0}
QUIET_WAIT=${QUIET_WAIT:-120}
MAX_OTHER=${MAX_OTHER:-10}
NOISE_RETRIES=${NOISE_RETRIES:-2}
NOISY_RETRIES=0
HOST_HEADER=bench.local

die() { echo "compare.sh: $*" >&2; exit 1; }
# Helpers shared with the other side-by-side script.
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in ROUNDS DURATION WORKERS CONNS WARMUP SERVER_CPU CLIENT_CPU QUIET_WAIT MAX_OTHER NOISE_RETRIES LOADTEST_RATE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS must be 1..20"
((DURATION >= 1 && DURATION <= 120)) || die "DURATION must be 1..120 seconds"
((WORKERS >= 1 && WORKERS <= 64)) || die "WORKERS must be 1..64"
[[ -z $H2LOAD_N || $H2LOAD_N =~ ^[0-9]+$ ]] || die "H2LOAD_N must be an integer"
for t in $TOOLS; do [[ $t =~ ^(wrk|h2load|loadtest)$ ]] || die "unknown tool '$t' in TOOLS"; done
for sc in $SCENARIOS; do [[ $sc =~ ^(fixed|proxy)$ ]] || die "unknown scenario '$sc' in SCENARIOS"; done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$ROOT/bench/results
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGRESS_BIN=$TARGET_DIR/release/ringress
CLK_TCK=$(getconf CLK_TCK)

for cmd in nginx haproxy wrk h2load taskset ss curl timeout getconf; do
    command -v "$cmd" >/dev/null || die "missing '$cmd' (apt-get install nginx-light haproxy wrk nghttp2-client util-linux iproute2 curl)"
done
bench_prepare compare.sh

SERVERS=(nginx haproxy)
((SKIP_RINGRESS)) || SERVERS+=(ringress)

# ---------------------------------------------------------------------------------------
# Ports: fresh ones each run, below the ephemeral range so client sockets never take them,
# and not used by any socket at all (listening, established or TIME-WAIT).
# ---------------------------------------------------------------------------------------
declare -A TAKEN=()
init_port_range
UP_PORT=$(pick_port)
declare -A PORT=()
for s in "${SERVERS[@]}"; do
    PORT[$s.fixed]=$(pick_port)
    PORT[$s.proxy]=$(pick_port)
done

# Bodies: 100 bytes each, distinct so the proxy scenario can be checked to go upstream.
FILL=$(printf 'x%.0s' $(seq 94))
FIXED_BODY="front:$FILL"
UP_BODY="upstr:$FILL"

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
if ((!SKIP_RINGRESS)); then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    [[ -x $RINGRESS_BIN ]] || die "no binary at $RINGRESS_BIN"
fi
LOADTEST_BIN=$TARGET_DIR/release/ringress-loadtest
if [[ " $TOOLS " == *" loadtest "* ]]; then
    log "cargo build --release -p ringress-loadtest"
    (cd "$ROOT" && cargo build --release -p ringress-loadtest) >&2 || die "building ringress-loadtest failed"
fi

# Provenance, taken now: the tree may change while the benchmark runs.
GIT_STATE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit') ($(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified tracked files: $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | awk '{ print $2 }' | tr '\n' ' '))"
BIN_STATE=-
((SKIP_RINGRESS)) || BIN_STATE="$(sha256sum "$RINGRESS_BIN" | cut -c1-16) built $(date -u -r "$RINGRESS_BIN" '+%Y-%m-%dT%H:%M:%SZ')"

mkdir -p "$WORK/upstream"
{
    nginx_common "$WORK/upstream"
    echo "worker_processes 1;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    nginx_http_common "$WORK/upstream"
    echo "    server { listen 127.0.0.1:$UP_PORT; return 200 \"$UP_BODY\"; }"
    echo "}"
} >"$WORK/upstream/nginx.conf"

mkdir -p "$WORK/nginx"
{
    nginx_common "$WORK/nginx"
    echo "worker_processes $WORKERS;"
    echo "events { worker_connections 8192; }"
    echo "http {"
    nginx_http_common "$WORK/nginx"
    cat <<EOF
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:${PORT[nginx.fixed]} reuseport;
        return 200 "$FIXED_BODY";
    }
    server {
        listen 127.0.0.1:${PORT[nginx.proxy]} reuseport;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend fixed
    bind 127.0.0.1:${PORT[haproxy.fixed]}
    http-request return status 200 content-type "text/plain" string "$FIXED_BODY"
frontend proxy
    bind 127.0.0.1:${PORT[haproxy.proxy]}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend bench_upstream
backend bench_upstream
    http-reuse always
    server up1 127.0.0.1:$UP_PORT
EOF

ringress_config() { # $1 = port, $2 = endpoint lines
    cat <<EOF
workers = $WORKERS
[listen]
http = "127.0.0.1:$1"
[timeouts]
client_idle = "5m"
upstream_idle = "5m"
header_read = "30s"
upstream_connect = "10s"
shutdown_grace = "5s"
[limits]
max_connections_per_worker = 65536
max_head_bytes = 1048576
upstream_idle_per_host = 64
[[endpoints]]
url = "http://$HOST_HEADER"
$2
EOF
}
if ((!SKIP_RINGRESS)); then
    # ringress has one HTTP listener per process, so each scenario gets its own process.
    ringress_config "${PORT[ringress.fixed]}" \
        "traffic_policy = { on_http_request = [ { actions = [ { type = \"custom-response\", config = { status_code = 200, body = \"$FIXED_BODY\", headers = { content-type = \"text/plain\" } } } ] } ] }" \
        >"$WORK/ringress-fixed.toml"
    ringress_config "${PORT[ringress.proxy]}" "upstream = \"http://127.0.0.1:$UP_PORT\"" \
        >"$WORK/ringress-proxy.toml"
    for sc in fixed proxy; do
        "$RINGRESS_BIN" edge --config "$WORK/ringress-$sc.toml" --check >"$WORK/check-$sc.log" 2>&1 ||
            { cat "$WORK/check-$sc.log" >&2; die "ringress rejected $WORK/ringress-$sc.toml"; }
    done
fi

# ---------------------------------------------------------------------------------------
# Start servers
# ---------------------------------------------------------------------------------------
declare -A PID_OF=() # "server.scenario" -> root pid whose tree is measured
log "starting servers on CPU $SERVER_CPU (workers=$WORKERS), load generator on CPU $CLIENT_CPU"

start upstream nginx -e "$WORK/upstream/error.log" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf"
UP_PID=$STARTED_PID
wait_listening "$UP_PORT" "$UP_PID" upstream

start nginx nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
PID_OF[nginx.fixed]=$STARTED_PID
PID_OF[nginx.proxy]=$STARTED_PID

start haproxy haproxy -db -f "$WORK/haproxy.cfg"
PID_OF[haproxy.fixed]=$STARTED_PID
PID_OF[haproxy.proxy]=$STARTED_PID

if ((!SKIP_RINGRESS)); then
    for sc in fixed proxy; do
        start "ringress-$sc" env -u RUST_LOG "$RINGRESS_BIN" edge --config "$WORK/ringress-$sc.toml" --log-level "$RINGRESS_LOG_LEVEL"
        PID_OF[ringress.$sc]=$STARTED_PID
    done
fi

for s in "${SERVERS[@]}"; do
    for sc in fixed proxy; do
        name=$s
        [[ $s == ringress ]] && name=ringress-$sc
        wait_listening "${PORT[$s.$sc]}" "${PID_OF[$s.$sc]}" "$name"
    done
done
if ((!SKIP_RINGRESS)); then
    # Every worker binds its own SO_REUSEPORT socket: wait for the ready line when the
    # log level shows it, else give the other workers a moment after the first one.
    for sc in fixed proxy; do
        for _ in $(seq 100); do
            grep -q 'ringress edge ready' "$WORK/ringress-$sc.err" && break
            sleep 0.05
        done
    done
    RINGRESS_READY=$(grep -h 'ringress edge ready' "$WORK"/ringress-*.err | sed 's/.*ringress edge ready/ringress edge ready/' | sort -u | tr '\n' ';' || true)
fi

# Sanity: status 200, the right body, and no stranger on our ports.
check_listener_owner "$UP_PORT" "$UP_PID"
HEADERS_LOG=$WORK/response-heads.txt
: >"$HEADERS_LOG"
for s in "${SERVERS[@]}"; do
    for sc in fixed proxy; do
        check_listener_owner "${PORT[$s.$sc]}" "${PID_OF[$s.$sc]}"
        want=$FIXED_BODY
        [[ $sc == proxy ]] && want=$UP_BODY
        body=$(curl -sS --max-time 5 -D "$WORK/h.tmp" -H "Host: $HOST_HEADER" "http://127.0.0.1:${PORT[$s.$sc]}/") ||
            die "$s/$sc: request failed"
        { echo "--- $s $sc (response head, body ${#body} bytes)"; tr -d '\r' <"$WORK/h.tmp"; } >>"$HEADERS_LOG"
        head -1 "$WORK/h.tmp" | grep -q ' 200' || die "$s/$sc: not 200: $(head -1 "$WORK/h.tmp")"
        [[ $body == "$want" ]] || die "$s/$sc: unexpected body '$body'"
    done
done

RAW=$WORK/raw.tsv
printf 'round\tserver\tscenario\ttool\treq_s\tp99_us\trequests\terrors\tserver_ticks\tcpu_us_per_req\tupstream_cpu_us_per_req\tclient_cpu_pct\tsoftirq_us_per_req_overlaps\tother_load_pct\n' >"$RAW"
declare -A LAST_WRK_RPS=()

# run_once ROUND SERVER SCENARIO TOOL [discard]: one measured run; sets ROW (TSV line),
# LINE (progress line) and OTHER (foreign load %, see below).
run_once() {
    local round=$1 s=$2 sc=$3 tool=$4 discard=${5:-}
    local port=${PORT[$s.$sc]} url out tfile t0 t1 u0 u1 rps p99 reqs errs n
    url=http://127.0.0.1:$port/
    out=$WORK/out.txt
    tfile=$WORK/time.txt
    rm -f "$WORK/h2load.log"
    t0=$(cpu_ticks "${PID_OF[$s.$sc]}")
    u0=$(cpu_ticks "$UP_PID")
    local ss0 cs0 ss1 cs1
    ss0=$(cpu_stat "$SERVER_CPU")
    cs0=$(cpu_stat "$CLIENT_CPU")
    local TIMEFORMAT='%R %U %S'
    case $tool in
    wrk)
        local d=$DURATION
        [[ -n $discard ]] && d=$WARMUP
        { time taskset -c "$CLIENT_CPU" timeout $((d + 30)) \
            wrk -t1 -c"$CONNS" -d"${d}s" --latency -H "Host: $HOST_HEADER" "$url" >"$out" 2>&1; } 2>"$tfile" ||
            die "wrk failed against $s/$sc: $(cat "$out")"
        ;;
    h2load)
        # ':authority' sets the Host header; '-H "Host: x"' would make h2load send two.
        n=$H2LOAD_N
        if [[ -z $n ]]; then
            n=$(awk -v r="${LAST_WRK_RPS[$s.$sc]:-50000}" -v d="$DURATION" \
                'BEGIN { n = int(r * d); if (n < 20000) n = 20000; if (n > 5000000) n = 5000000; print n }')
        fi
        local logopt=()
        ((H2LOAD_P99)) && logopt=(--log-file="$WORK/h2load.log")
        { time taskset -c "$CLIENT_CPU" timeout $((DURATION * 3 + 30)) \
            h2load --h1 -c"$CONNS" -t1 -n"$n" -H ":authority: $HOST_HEADER" "${logopt[@]}" "$url" >"$out" 2>&1; } 2>"$tfile" ||
            die "h2load failed against $s/$sc: $(tail -20 "$out")"
        ;;
    loadtest)
        # Open loop at a fixed rate below saturation: latency at equal load for every
        # server, and CPU per request when nobody is saturated. Exit 1 = some requests
        # failed (counted below); anything else is fatal.
        local rc=0
        { time taskset -c "$CLIENT_CPU" timeout $((DURATION + 30)) \
            "$LOADTEST_BIN" --url "$url" --host-header "$HOST_HEADER" --rate "$LOADTEST_RATE" \
            --connections "$CONNS" --duration "${DURATION}s" >"$out" 2>&1; } 2>"$tfile" || rc=$?
        ((rc <= 1)) || die "ringress-loadtest failed against $s/$sc: $(cat "$out")"
        ;;
    esac
    t1=$(cpu_ticks "${PID_OF[$s.$sc]}")
    u1=$(cpu_ticks "$UP_PID")
    ss1=$(cpu_stat "$SERVER_CPU")
    cs1=$(cpu_stat "$CLIENT_CPU")
    [[ -n $discard ]] && return 0

    case $tool in
    wrk)
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        reqs=$(awk '/requests in/ { print $1 }' "$out")
        p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
        errs=$(awk '/Non-2xx or 3xx responses:/ { e += $NF }
                    /Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
                    END { print e + 0 }' "$out")
        LAST_WRK_RPS[$s.$sc]=$rps
        ;;
    h2load)
        rps=$(awk '/^finished in/ { print $4 }' "$out")
        reqs=$(awk '/^requests:/ { print $8 }' "$out")           # "succeeded"
        errs=$(awk '/^requests:/ { print $10 + $12 + $14 }' "$out") # failed, errored, timeout
        p99=-
        if ((H2LOAD_P99)) && [[ -s $WORK/h2load.log ]]; then
            # log lines: start time (µs since epoch) <TAB> status <TAB> duration (µs)
            p99=$(cut -f3 "$WORK/h2load.log" | sort -n |
                awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.1f", a[i] }')
        fi
        ;;
    loadtest)
        # requests N sent, M completed (R/s), A 2xx, B non-2xx, C errors, D never sent
        rps=$(awk '/^requests/ { gsub(/[(\/s),]/, "", $6); print $6 }' "$out")
        reqs=$(awk '/^requests/ { print $7 }' "$out")
        errs=$(awk '/^requests/ { print $9 + $11 + $13 }' "$out")
        p99=$(awk '$1 == "latency" && $8 == "p99" { printf "%.1f", $9 }' "$out")
        ;;
    esac
    [[ $reqs =~ ^[0-9]+$ && $reqs -gt 0 ]] || die "$tool against $s/$sc: could not parse request count: $(cat "$out")"
    local cpu up client
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    up=-
    [[ $sc == proxy ]] && up=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    client=$(awk '{ if ($1 > 0) printf "%.0f", ($2 + $3) / $1 * 100; else print "nan" }' "$tfile")
    # softirq/irq time on the server CPU per request, for the raw table only: with tick
    # accounting, a tick that lands in softirq while a server runs is charged to that
    # server's stime too, so this overlaps the server's own CPU time.
    # "other": busy time on both CPUs not charged to the measured processes or the load
    # generator (other processes, hypervisor steal, softirq run from idle), as a share of
    # the run's CPU time. Above a few percent, distrust the run.
    local si other
    read -r si other < <(awk -v a="$ss0" -v b="$ss1" -v c="$cs0" -v d="$cs1" -v mine=$((t1 - t0 + u1 - u0)) \
        -v hz="$CLK_TCK" -v n="$reqs" -v tf="$(cat "$tfile")" 'BEGIN {
            split(a, s0, " "); split(b, s1, " "); split(c, c0, " "); split(d, c1, " "); split(tf, t, " ")
            si = (s1[2] - s0[2]) / hz * 1e6 / n
            busy = (s1[1] - s0[1]) + (c1[1] - c0[1])
            total = (s1[3] - s0[3]) + (c1[3] - c0[3])
            other = busy - mine - (t[2] + t[3]) * hz
            if (other < 0) other = 0
            printf "%.2f %.1f\n", si, (total > 0 ? other / total * 100 : 0) }')
    OTHER=$other
    ROW=$(printf '%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$s" "$sc" "$tool" "$rps" "$p99" \
        "$reqs" "$errs" $((t1 - t0)) "$cpu" "$up" "$client" "$si" "$other")
    LINE=$(printf '  round %s  %-8s %-5s %-6s %7.0f req/s  p99 %7s µs  cpu %5s µs/req  upstream %5s  load-gen %3s%%  other %4s%%  errors %s' \
        "$round" "$s" "$sc" "$tool" "$rps" "$p99" "$cpu" "$up" "$client" "$other" "$errs")
    { echo "### round $round $s $sc $tool (other load $other%)"; cat "$out"; } >>"$WORK/tool-output.txt"
}

# run_load ROUND SERVER SCENARIO TOOL [discard]: a run whose foreign load exceeds
# MAX_OTHER % is repeated (after waiting for quiet) up to NOISE_RETRIES times; the last
# attempt is kept either way, with its foreign load in the table.
run_load() { run_with_retries "${5:-}" run_once "$@"; }

nserv=${#SERVERS[@]}
ntools=$(wc -w <<<"$TOOLS")
nscen=$(wc -w <<<"$SCENARIOS")
est=$((ROUNDS * nscen * ntools * nserv * (DURATION + 2) + nserv * nscen * (WARMUP + 1)))
log "ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS servers: ${SERVERS[*]}; about $((est / 60 + 1)) min"

log "waiting for an idle machine (up to ${QUIET_WAIT}s)"
wait_quiet "$QUIET_WAIT"

log "warm-up (${WARMUP}s per server and scenario; fills upstream keep-alive pools)"
for sc in $SCENARIOS; do
    for s in "${SERVERS[@]}"; do run_load 0 "$s" "$sc" wrk discard; done
done

for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS"
    # rotate the server order each round
    order=()
    for i in $(seq 0 $((nserv - 1))); do order+=("${SERVERS[$(((i + round - 1) % nserv))]}"); done
    for sc in $SCENARIOS; do
        for tool in $TOOLS; do
            for s in "${order[@]}"; do run_load "$round" "$s" "$sc" "$tool"; done
        done
    done
done

# Every server must still be the one we started (nothing crashed mid-run).
for s in "${SERVERS[@]}"; do
    for sc in fixed proxy; do
        kill -0 "${PID_OF[$s.$sc]}" 2>/dev/null || die "$s ($sc) died during the run"
    done
done

rows() { awk -F'\t' -v s="$1" -v sc="$2" -v t="$3" 'NR > 1 && $2 == s && $3 == sc && $4 == t' "$RAW"; }
fmt0() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.0f", v }'; }
fmt2() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.1f", v }'; }

declare -A MED=()
for sc in $SCENARIOS; do
    for tool in $TOOLS; do
        for s in "${SERVERS[@]}"; do
            k=$s.$sc.$tool
            MED[$k.rps]=$(rows "$s" "$sc" "$tool" | median 5)
            MED[$k.p99]=$(rows "$s" "$sc" "$tool" | median 6)
            MED[$k.cpu]=$(rows "$s" "$sc" "$tool" | median 10)
            MED[$k.up]=$(rows "$s" "$sc" "$tool" | median 11)
            MED[$k.client]=$(rows "$s" "$sc" "$tool" | median 12)
            MED[$k.other]=$(rows "$s" "$sc" "$tool" | awk -F'\t' '$14 > m { m = $14 } END { print m + 0 }')
            MED[$k.err]=$(rows "$s" "$sc" "$tool" | awk -F'\t' '{ e += $8 } END { print e + 0 }')
        done
    done
done

SUMMARY=$WORK/summary.md
{
    extra=""
    [[ $TOOLS == "wrk h2load" ]] || extra+=" TOOLS='$TOOLS'"
    [[ " $TOOLS " == *" loadtest "* ]] && extra+=" LOADTEST_RATE=$LOADTEST_RATE"
    ((SKIP_RINGRESS)) && extra+=" SKIP_RINGRESS=1"
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS$extra bench/compare.sh\`"
    echo
    echo "Medians of $ROUNDS rounds. Servers and upstream pinned to CPU $SERVER_CPU, load generator to CPU $CLIENT_CPU; $WORKERS worker(s) each; $CONNS connections; ${DURATION}s per wrk run. $NOISY_RETRIES run(s) repeated because other processes took more than $MAX_OTHER% of the CPU."
    echo
    echo "| scenario | tool | server | req/s | p99 (ms) | server CPU µs/req | upstream CPU µs/req | load-gen CPU % | other load % (max) | errors |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for sc in $SCENARIOS; do
        for tool in $TOOLS; do
            for s in "${SERVERS[@]}"; do
                k=$s.$sc.$tool
                echo "| $sc | $tool | $s | $(fmt0 "${MED[$k.rps]}") | $(fmt_ms "${MED[$k.p99]}") | $(fmt2 "${MED[$k.cpu]}") | $(fmt2 "${MED[$k.up]}") | $(fmt0 "${MED[$k.client]}") | ${MED[$k.other]} | ${MED[$k.err]} |"
            done
        done
    done
    if ((!SKIP_RINGRESS)); then
        echo
        echo "| scenario | tool | req/s ringress/nginx | req/s ringress/haproxy | CPU/req ringress/nginx | CPU/req ringress/haproxy |"
        echo "|---|---|---:|---:|---:|---:|"
        for sc in $SCENARIOS; do
            for tool in $TOOLS; do
                r=ringress.$sc.$tool n=nginx.$sc.$tool h=haproxy.$sc.$tool
                echo "| $sc | $tool | $(ratio "${MED[$r.rps]}" "${MED[$n.rps]}") | $(ratio "${MED[$r.rps]}" "${MED[$h.rps]}") | $(ratio "${MED[$r.cpu]}" "${MED[$n.cpu]}") | $(ratio "${MED[$r.cpu]}" "${MED[$h.cpu]}") |"
            done
        done
    else
        echo
        echo "| scenario | tool | req/s haproxy/nginx | CPU/req haproxy/nginx |"
        echo "|---|---|---:|---:|"
        for sc in $SCENARIOS; do
            for tool in $TOOLS; do
                n=nginx.$sc.$tool h=haproxy.$sc.$tool
                echo "| $sc | $tool | $(ratio "${MED[$h.rps]}" "${MED[$n.rps]}") | $(ratio "${MED[$h.cpu]}" "${MED[$n.cpu]}") |"
            done
        done
    fi
} >"$SUMMARY"

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/run-$(date -u +%Y%m%d-%H%M%S).txt
{
    echo "# bench/compare.sh results"
    echo "date:     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "command:  ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS WARMUP=$WARMUP MAX_OTHER=$MAX_OTHER NOISE_RETRIES=$NOISE_RETRIES SKIP_RINGRESS=$SKIP_RINGRESS SCENARIOS='$SCENARIOS' TOOLS='$TOOLS' H2LOAD_N=${H2LOAD_N:-auto} H2LOAD_P99=$H2LOAD_P99 LOADTEST_RATE=$LOADTEST_RATE bench/compare.sh"
    echo "git:      $GIT_STATE (at start)"
    echo "binary:   $BIN_STATE"
    echo "kernel:   $(uname -srm)"
    echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) x $NCPU; server CPU $SERVER_CPU, client CPU $CLIENT_CPU; CLK_TCK $CLK_TCK"
    ((SKIP_RINGRESS)) || echo "ringress: ${RINGRESS_READY:-no ready line seen} (workers=$WORKERS, log level $RINGRESS_LOG_LEVEL)"
    echo "versions: $(nginx -v 2>&1); $(haproxy -v 2>&1 | head -1 || true); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 || true); $(h2load --version 2>&1 | head -1 || true)"
    echo
    echo "## summary (medians)"
    cat "$SUMMARY"
    echo
    echo "## raw runs"
    column -t -s $'\t' "$RAW"
    echo
    echo "## response heads seen by curl"
    cat "$HEADERS_LOG"
    echo
    echo "## configs"
    for f in "$WORK/upstream/nginx.conf" "$WORK/nginx/nginx.conf" "$WORK/haproxy.cfg" "$WORK"/ringress-*.toml; do
        [[ -f $f ]] || continue
        echo "--- ${f#"$WORK"/}"
        cat "$f"
    done
    echo
    echo "## tool output"
    cat "$WORK/tool-output.txt"
} >"$OUT"

cp "$OUT" "$RESULTS_DIR/latest.txt"

echo
cat "$SUMMARY"
echo
echo "raw results: $OUT (also bench/results/latest.txt)"
