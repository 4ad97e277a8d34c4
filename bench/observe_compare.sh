#!/usr/bin/env bash
# bench/observe_compare.sh: the cost of edge observability (issue 10) on proxied
# requests: the same ringress proxy with metrics, events and inspector capture off and on,
# side by side in one run, interleaved rounds, ratios. The method (pinning, CPU per
# request from /proc/PID/stat, rounds, noise control) is compare.sh's, see
# docs/performance.md.
#
# What it does:
#   * builds ringress (cargo build --release);
#   * starts one shared upstream (nginx, fixed 100-byte 200, keep-alive, 1 worker) and one
#     ringress process per system of SYSTEMS, all pinned to SERVER_CPU; wrk runs on
#     CLIENT_CPU. Every request carries `Host: bench.local`:
#       ringress-off       [observe] metrics = false, inspect = "off", no sinks
#       ringress-metrics   metrics only (inspect = "off", no sinks)
#       ringress-capture   metrics + metadata capture, no sinks (what the inspector costs)
#       ringress-events    metrics + events to the file sink, no capture (what events cost)
#       ringress-on        metrics + events (JSON-lines file sink in the work dir, rotated
#                          at 64 MiB, 1 old file kept) + metadata capture: the issue's
#                          "metrics + events + metadata capture on"
#       ringress-on-fields as ringress-on, the sink's source listing ten fields (an access
#                          log's: client IP, method, host, path, query, user agent, status,
#                          response bytes, duration, endpoint), as an ngrok event subscription
#                          must (ngrok requires a field list per source, ERR_NGROK_5400)
#       ringress-full      (not in the default set) as ringress-on with inspect = "full"
#       nginx-off          the reference: nginx (1 worker) proxying to the same upstream,
#                          access_log off
#       nginx-log          as nginx-off with a JSON access log of the same ten fields in
#                          the event's shape (log_format escape=json, buffer=64k flush=1s):
#                          what the best-known proxy pays for the same per-request line
#   * checks the upstream's body through every system, and, after the load, that
#     ringress-on's event file got lines;
#   * ROUNDS rounds; each round runs every system back to back, rotating which goes first;
#   * per run: req/s, p99, and the ringress process's CPU time (all threads: workers, the
#     drainer that serialises events, the file sink) divided by completed requests, and the
#     part of it spent in the drainer and sink threads (from /proc/PID/task/*/stat);
#   * prints medians, ratios to ringress-off and the issue's target (ringress-on costs at
#     most 5% more CPU per request than ringress-off), as Markdown; everything goes to
#     bench/results/observe-<UTC time>.txt and bench/results/observe-latest.txt.
#
# Environment:
#   ROUNDS=3 DURATION=10 (seconds per wrk run) WORKERS=1 CONNS=64 WARMUP=2 (seconds)
#   SERVER_CPU=1 CLIENT_CPU=0   CPUs for the systems (and upstream) and for wrk
#   SYSTEMS="ringress-off ... nginx-log" subset and order; add ringress-full
#   RINGRESS_LOG_LEVEL=info KEEP_WORK=0 QUIET_WAIT=120 MAX_OTHER=10 NOISE_RETRIES=2
set -Eeuo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-1}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
ALL_SYSTEMS="ringress-off ringress-metrics ringress-capture ringress-events ringress-on ringress-on-fields nginx-off nginx-log"
KNOWN_SYSTEMS="$ALL_SYSTEMS ringress-full"
SYSTEMS=${SYSTEMS:-$ALL_SYSTEMS}
RINGRESS_LOG_LEVEL=${RINGRESS_LOG_LEVEL:-info}
KEEP_WORK=${KEEP_WORK:-0}
QUIET_WAIT=${QUIET_WAIT:-120}
MAX_OTHER=${MAX_OTHER:-10}
NOISE_RETRIES=${NOISE_RETRIES:-2}
NOISY_RETRIES=0
HOST_HEADER=bench.local
TARGET_CPU=1.05
ACCESS_FIELDS='"conn.client_ip", "http.request.method", "http.request.url.host", "http.request.url.path", "http.request.url.query", "http.request.user_agent", "http.response.status_code", "http.response.body_length", "http.duration_ms", "endpoint.url"'

die() { echo "observe_compare.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in ROUNDS DURATION WORKERS CONNS WARMUP SERVER_CPU CLIENT_CPU QUIET_WAIT MAX_OTHER NOISE_RETRIES; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS must be 1..20"
((DURATION >= 1 && DURATION <= 120)) || die "DURATION must be 1..120 seconds"
((WORKERS >= 1 && WORKERS <= 64)) || die "WORKERS must be 1..64"
((CONNS >= 1 && CONNS <= 10000)) || die "CONNS must be 1..10000"
read -ra SYS <<<"$SYSTEMS"
((${#SYS[@]} >= 1)) || die "SYSTEMS is empty"
declare -A SEEN=()
for s in "${SYS[@]}"; do
    [[ " $KNOWN_SYSTEMS " == *" $s "* ]] || die "unknown system '$s' in SYSTEMS (known: $KNOWN_SYSTEMS)"
    [[ -z ${SEEN[$s]:-} ]] || die "system '$s' listed twice in SYSTEMS"
    SEEN[$s]=1
done
has() { [[ -n ${SEEN[$1]:-} ]]; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$ROOT/bench/results
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGRESS_BIN=$TARGET_DIR/release/ringress
CLK_TCK=$(getconf CLK_TCK)

for cmd in nginx wrk taskset ss curl timeout getconf cargo; do
    command -v "$cmd" >/dev/null || die "missing '$cmd' (apt-get install nginx-light wrk util-linux iproute2 curl coreutils)"
done
bench_prepare observe_compare.sh

declare -A TAKEN=()
init_port_range
UP_PORT=$(pick_port)
declare -A PORT=()
for s in "${SYS[@]}"; do PORT[$s]=$(pick_port); done
FILL=$(printf 'x%.0s' $(seq 94))
UP_BODY="upstr:$FILL"

log "cargo build --release"
(cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
[[ -x $RINGRESS_BIN ]] || die "no binary at $RINGRESS_BIN"
GIT_STATE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit') ($(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified tracked files)"
BIN_STATE="$(sha256sum "$RINGRESS_BIN" | cut -c1-16) built $(date -u -r "$RINGRESS_BIN" '+%Y-%m-%dT%H:%M:%SZ')"

mkdir -p "$WORK/upstream"
nginx_fixed_upstream_conf "$WORK/upstream" "$UP_PORT" "$UP_BODY" 4096 >"$WORK/upstream/nginx.conf"

observe_section() { # $1 = system
    case $1 in
    ringress-off) printf '[observe]\nmetrics = false\ninspect = "off"\n' ;;
    ringress-metrics) printf '[observe]\nmetrics = true\ninspect = "off"\n' ;;
    ringress-capture) printf '[observe]\nmetrics = true\ninspect = "metadata"\n' ;;
    ringress-events)
        printf '[observe]\nmetrics = true\ninspect = "off"\n[[observe.sinks]]\ntype = "file"\npath = "%s"\nmax_bytes = 67108864\nkeep = 1\n' \
            "$WORK/$1-events.jsonl"
        ;;
    ringress-on-fields)
        printf '[observe]\nmetrics = true\ninspect = "metadata"\n[[observe.sinks]]\ntype = "file"\npath = "%s"\nmax_bytes = 67108864\nkeep = 1\n[[observe.sinks.sources]]\ntype = "http_request_complete.v0"\nfields = [%s]\n' \
            "$WORK/$1-events.jsonl" "$ACCESS_FIELDS"
        ;;
    ringress-on | ringress-full)
        local mode=metadata
        [[ $1 == ringress-full ]] && mode=full
        printf '[observe]\nmetrics = true\ninspect = "%s"\n[[observe.sinks]]\ntype = "file"\npath = "%s"\nmax_bytes = 67108864\nkeep = 1\n' \
            "$mode" "$WORK/$1-events.jsonl"
        ;;
    esac
}

# compare.sh's ringress proxy config (same timeouts and limits) plus the [observe] section.
ringress_conf() { # $1 = system
    cat <<EOF
workers = $WORKERS
[listen]
http = "127.0.0.1:${PORT[$1]}"
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
upstream = "http://127.0.0.1:$UP_PORT"
EOF
    observe_section "$1"
}

# The nginx reference: the same proxy job (keep-alive pool of 64 to the upstream, the
# X-Forwarded-* headers ringress adds), access log off or a JSON line per request with
# the ten fields of ringress-on-fields, in the event's shape.
nginx_proxy_conf() { # $1 = system
    local dir=$WORK/$1 log="access_log off;"
    [[ $1 == nginx-log ]] && log="access_log $WORK/$1-events.jsonl events buffer=64k flush=1s;"
    nginx_common "$dir"
    echo "worker_processes 1;"
    echo "events { worker_connections 8192; }"
    echo "http {"
    nginx_http_common "$dir"
    cat <<EOF
    log_format events escape=json '{"event_id":"ev_\$request_id","event_type":"http_request_complete.v0","event_timestamp":"\$time_iso8601","object":{"conn":{"client_ip":"\$remote_addr"},"http":{"request":{"method":"\$request_method","url":{"host":"\$host","path":"\$uri","query":"\$args"},"user_agent":"\$http_user_agent"},"response":{"body_length":\$body_bytes_sent,"status_code":\$status},"duration_ms":\$request_time},"endpoint":{"url":"http://$HOST_HEADER"}}}';
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:${PORT[$1]};
        $log
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
}
is_nginx() { [[ $1 == nginx-* ]]; }

for s in "${SYS[@]}"; do
    if is_nginx "$s"; then
        mkdir -p "$WORK/$s"
        nginx_proxy_conf "$s" >"$WORK/$s/nginx.conf"
        nginx -t -q -p "$WORK/$s" -c "$WORK/$s/nginx.conf" -e "$WORK/$s/error.log" >"$WORK/check-$s.log" 2>&1 ||
            { cat "$WORK/check-$s.log" >&2; die "nginx rejected the $s config ($WORK/$s/nginx.conf)"; }
        continue
    fi
    ringress_conf "$s" >"$WORK/$s.toml"
    "$RINGRESS_BIN" edge --config "$WORK/$s.toml" --check >"$WORK/check-$s.log" 2>&1 ||
        { cat "$WORK/check-$s.log" >&2; die "ringress rejected the $s config ($WORK/$s.toml)"; }
done

declare -A PID_OF=()
log "starting the systems on CPU $SERVER_CPU (workers=$WORKERS), wrk on CPU $CLIENT_CPU"
start upstream nginx -e "$WORK/upstream/error.log" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf"
UP_PID=$STARTED_PID
wait_listening "$UP_PORT" "$UP_PID" upstream
for s in "${SYS[@]}"; do
    if is_nginx "$s"; then
        start "$s" nginx -e "$WORK/$s/error.log" -p "$WORK/$s" -c "$WORK/$s/nginx.conf"
    else
        start "$s" env -u RUST_LOG "$RINGRESS_BIN" edge --config "$WORK/$s.toml" --log-level "$RINGRESS_LOG_LEVEL"
    fi
    PID_OF[$s]=$STARTED_PID
done
for s in "${SYS[@]}"; do
    wait_listening "${PORT[$s]}" "${PID_OF[$s]}" "$s"
    is_nginx "$s" || wait_for_line "$WORK/$s.err" 'ringress edge ready' 1 "${PID_OF[$s]}" "$s"
done
READY_LINES=$(grep -h 'ringress edge ready' "$WORK"/ringress-*.err 2>/dev/null | sed 's/.*ringress edge ready/ringress edge ready/' | sort -u | tr '\n' ';' || true)

check_listener_owner "$UP_PORT" "$UP_PID"
for s in "${SYS[@]}"; do
    check_listener_owner "${PORT[$s]}" "${PID_OF[$s]}"
    body=$(curl -sS --max-time 5 -H "Host: $HOST_HEADER" "http://127.0.0.1:${PORT[$s]}/") || die "$s: request failed"
    [[ $body == "$UP_BODY" ]] || die "$s: unexpected body '$body'"
done

RAW=$WORK/raw.tsv
printf 'round\tsystem\treq_s\tp99_us\trequests\terrors\tsystem_ticks\tcpu_us_per_req\tupstream_cpu_us_per_req\twrk_cpu_pct\tother_load_pct\tobserve_threads_us_per_req\n' >"$RAW"

# CPU ticks of the process's observability threads (the drainer and the sinks).
observe_ticks() { # $1 = pid
    local t total=0 line
    local -a f
    for t in /proc/"$1"/task/*; do
        case $(cat "$t/comm" 2>/dev/null) in
        ringress-observ* | ringress-sink*) ;;
        *) continue ;;
        esac
        line=$(cat "$t/stat" 2>/dev/null) || continue
        read -ra f <<<"${line##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
: >"$WORK/tool-output.txt"

run_once() {
    local round=$1 s=$2 discard=${3:-}
    local url=http://127.0.0.1:${PORT[$s]}/ out=$WORK/out.txt tfile=$WORK/time.txt d=$DURATION
    local t0 t1 o0 o1 u0 u1 ss0 ss1 cs0 cs1 rps p99 reqs errs
    [[ -n $discard ]] && d=$WARMUP
    t0=$(cpu_ticks "${PID_OF[$s]}")
    o0=$(observe_ticks "${PID_OF[$s]}")
    u0=$(cpu_ticks "$UP_PID")
    ss0=$(cpu_stat "$SERVER_CPU")
    cs0=$(cpu_stat "$CLIENT_CPU")
    local TIMEFORMAT='%R %U %S'
    { time taskset -c "$CLIENT_CPU" timeout $((d + 30)) \
        wrk -t1 -c"$CONNS" -d"${d}s" --latency -H "Host: $HOST_HEADER" "$url" >"$out" 2>&1; } 2>"$tfile" ||
        die "wrk failed against $s: $(cat "$out")"
    # The drainer and the sink finish their backlog after the load: count that too.
    sleep 0.3
    t1=$(cpu_ticks "${PID_OF[$s]}")
    o1=$(observe_ticks "${PID_OF[$s]}")
    u1=$(cpu_ticks "$UP_PID")
    ss1=$(cpu_stat "$SERVER_CPU")
    cs1=$(cpu_stat "$CLIENT_CPU")
    [[ -n $discard ]] && return 0
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
    errs=$(wrk_errors "$out")
    [[ $reqs =~ ^[0-9]+$ && $reqs -gt 0 ]] || die "wrk against $s: could not parse request count: $(cat "$out")"
    local cpu up client
    cpu=$(per_req $((t1 - t0)) "$reqs")
    up=$(per_req $((u1 - u0)) "$reqs")
    client=$(awk '{ if ($1 > 0) printf "%.0f", ($2 + $3) / $1 * 100; else print "nan" }' "$tfile")
    OTHER=$(other_load_pct "$ss0" "$ss1" "$cs0" "$cs1" $((t1 - t0 + u1 - u0)) "$tfile")
    ROW=$(printf '%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$s" "$rps" "$p99" \
        "$reqs" "$errs" $((t1 - t0)) "$cpu" "$up" "$client" "$OTHER" "$(per_req $((o1 - o0)) "$reqs")")
    LINE=$(printf '  round %s  %-17s %7.0f req/s  p99 %8s µs  cpu %6s µs/req  upstream %5s  wrk %3s%%  other %4s%%  errors %s' \
        "$round" "$s" "$rps" "$p99" "$cpu" "$up" "$client" "$OTHER" "$errs")
    { echo "### round $round $s (other load $OTHER%)"; cat "$out"; } >>"$WORK/tool-output.txt"
}
run_load() { run_with_retries "${3:-}" run_once "$@"; }

nsys=${#SYS[@]}
est=$((ROUNDS * nsys * (DURATION + 1) + nsys * (WARMUP + 1)))
log "ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS WORKERS=$WORKERS systems: ${SYS[*]}; about $((est / 60 + 1)) min"
log "waiting for an idle machine (up to ${QUIET_WAIT}s)"
wait_quiet "$QUIET_WAIT"
log "warm-up (${WARMUP}s per system)"
for s in "${SYS[@]}"; do run_load 0 "$s" discard; done
for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS"
    order=()
    for i in $(seq 0 $((nsys - 1))); do order+=("${SYS[$(((i + round - 1) % nsys))]}"); done
    for s in "${order[@]}"; do run_load "$round" "$s"; done
done
for s in "${SYS[@]}"; do
    kill -0 "${PID_OF[$s]}" 2>/dev/null || die "$s (pid ${PID_OF[$s]}) died during the run"
done
EVENT_CHECK=""
for s in ringress-events ringress-on ringress-on-fields ringress-full nginx-log; do
    has "$s" || continue
    # nginx flushes its log buffer every second.
    [[ $s == nginx-log ]] && sleep 1.5
    n=$(cat "$WORK/$s-events.jsonl"* 2>/dev/null | grep -c 'http_request_complete.v0' || true)
    ((n > 0)) || die "$s wrote no events to $WORK/$s-events.jsonl"
    EVENT_CHECK+="$s: $n http_request_complete.v0 lines kept (the file rotates at 64 MiB, one old file kept). "
done

rows() { awk -F'\t' -v s="$1" 'NR > 1 && $2 == s' "$RAW"; }
declare -A MED=()
for s in "${SYS[@]}"; do
    MED[$s.rps]=$(rows "$s" | median 3)
    MED[$s.p99]=$(rows "$s" | median 4)
    MED[$s.cpu]=$(rows "$s" | median 8)
    MED[$s.up]=$(rows "$s" | median 9)
    MED[$s.obs]=$(rows "$s" | median 12)
    MED[$s.client]=$(rows "$s" | median 10)
    MED[$s.other]=$(rows "$s" | awk -F'\t' '$11 > m { m = $11 } END { print m + 0 }')
    MED[$s.err]=$(rows "$s" | awk -F'\t' '{ e += $6 } END { print e + 0 }')
done

SUMMARY=$WORK/summary.md
{
    extra=""
    [[ $SYSTEMS == "$ALL_SYSTEMS" ]] || extra=" SYSTEMS=\"$SYSTEMS\""
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS$extra bench/observe_compare.sh\`"
    echo
    echo "Medians of $ROUNDS round(s). ringress and the upstream pinned to CPU $SERVER_CPU, wrk (-t1 -c$CONNS) to CPU $CLIENT_CPU; $WORKERS worker(s); ${DURATION}s per run. $NOISY_RETRIES run(s) repeated because other processes took more than $MAX_OTHER% of the CPU."
    echo
    echo "| system | req/s | p99 (ms) | ringress CPU µs/req | of which drainer + sinks | upstream CPU µs/req | wrk CPU % | other load % (max) | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${SYS[@]}"; do
        echo "| $s | $(fmt0 "${MED[$s.rps]}") | $(fmt_ms "${MED[$s.p99]}") | $(fmt1 "${MED[$s.cpu]}") | $(fmt2 "${MED[$s.obs]}") | $(fmt1 "${MED[$s.up]}") | $(fmt0 "${MED[$s.client]}") | ${MED[$s.other]} | ${MED[$s.err]} |"
    done
    if has ringress-off; then
        echo
        echo "| ratio | req/s | p99 | CPU/req |"
        echo "|---|---:|---:|---:|"
        for s in "${SYS[@]}"; do
            [[ $s == ringress-off ]] && continue
            is_nginx "$s" && continue
            echo "| $s / ringress-off | $(ratio "${MED[$s.rps]}" "${MED[ringress-off.rps]}") | $(ratio "${MED[$s.p99]}" "${MED[ringress-off.p99]}") | $(ratio "${MED[$s.cpu]}" "${MED[ringress-off.cpu]}") |"
        done
        has nginx-off && has nginx-log &&
            echo "| nginx-log / nginx-off | $(ratio "${MED[nginx-log.rps]}" "${MED[nginx-off.rps]}") | $(ratio "${MED[nginx-log.p99]}" "${MED[nginx-off.p99]}") | $(ratio "${MED[nginx-log.cpu]}" "${MED[nginx-off.cpu]}") |"
        has nginx-off &&
            echo "| nginx-off / ringress-off | $(ratio "${MED[nginx-off.rps]}" "${MED[ringress-off.rps]}") | $(ratio "${MED[nginx-off.p99]}" "${MED[ringress-off.p99]}") | $(ratio "${MED[nginx-off.cpu]}" "${MED[ringress-off.cpu]}") |"
        for s in ringress-on ringress-on-fields; do
            has "$s" || continue
            c=$(ratio "${MED[$s.cpu]}" "${MED[ringress-off.cpu]}")
            v=missed
            at_most "$c" "$TARGET_CPU" && v=met
            what="every event field"
            [[ $s == ringress-on-fields ]] && what="ten event fields"
            echo
            echo "Target: metrics + events ($what) + metadata capture cost <= 5% CPU per request ($s / ringress-off <= ${TARGET_CPU}x): ${c}x, $v."
        done
    fi
    if has nginx-off && has nginx-log; then
        echo
        echo "Reference: nginx's JSON access log of the same ten fields costs nginx $(ratio "${MED[nginx-log.cpu]}" "${MED[nginx-off.cpu]}")x CPU per request (nginx-log / nginx-off)."
    fi
    [[ -z $EVENT_CHECK ]] || { echo; echo "$EVENT_CHECK"; }
} >"$SUMMARY"

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/observe-$(date -u +%Y%m%d-%H%M%S).txt
{
    echo "# bench/observe_compare.sh results"
    echo "date:     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "command:  ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS WARMUP=$WARMUP SYSTEMS='$SYSTEMS' MAX_OTHER=$MAX_OTHER NOISE_RETRIES=$NOISE_RETRIES bench/observe_compare.sh"
    echo "git:      $GIT_STATE (at start)"
    echo "binary:   $BIN_STATE"
    echo "kernel:   $(uname -srm)"
    echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) x $NCPU; server CPU $SERVER_CPU, client CPU $CLIENT_CPU; CLK_TCK $CLK_TCK"
    echo "ringress: ${READY_LINES:-no ready line seen}"
    echo
    echo "## summary (medians)"
    cat "$SUMMARY"
    echo
    echo "## raw runs"
    column -t -s $'\t' "$RAW"
    echo
    echo "## configs"
    for f in "$WORK/upstream/nginx.conf" "$WORK"/ringress-*.toml "$WORK"/nginx-*/nginx.conf; do
        [[ -f $f ]] || continue
        echo "--- ${f#"$WORK"/}"
        cat "$f"
    done
    echo
    echo "## process logs (stderr, last 20 lines each)"
    for f in "$WORK"/*.err; do
        [[ -s $f ]] || continue
        echo "--- ${f#"$WORK"/}"
        tail -20 "$f"
    done
    echo
    echo "## tool output"
    cat "$WORK/tool-output.txt"
} >"$OUT"
cp "$OUT" "$RESULTS_DIR/observe-latest.txt"
echo
cat "$SUMMARY"
echo
echo "raw results: $OUT (also bench/results/observe-latest.txt)"
