#!/usr/bin/env bash
# bench/policy_compare.sh: the end-to-end cost of Traffic Policy documents on the ringress
# edge, side by side with nginx doing the equivalent work, in one run, on one machine. The
# method (pinning, CPU per request, rounds, noise control) is compare.sh's, see
# docs/performance.md.
#
# What it does:
#   * builds ringress (cargo build --release) and, unless MICRO=0, the policy micro
#     benchmark (bench/micro/policy.rs), which it runs once, pinned to SERVER_CPU, before
#     the servers start (its output goes into the results file);
#   * starts one shared upstream (nginx, fixed 100-byte 200, keep-alive, 1 worker) and, in
#     front of it, one process per system of SYSTEMS, all pinned to SERVER_CPU; wrk runs on
#     CLIENT_CPU. Every request carries `Host: bench.local` and the same
#     `Authorization: Basic ...` header (only ringress-basicauth checks it; sending it to
#     every system keeps the requests byte-identical):
#       ringress-none        endpoint without a policy
#       ringress-3rules      on_http_request: add-headers {x-a: "1"};
#                            if req.method == 'GET' add-headers {x-b: "2"};
#                            remove-headers [x-forwarded-host]
#       ringress-basicauth   basic-auth with one credential (the one wrk sends)
#       ringress-ratelimit   rate-limit, sliding_window, capacity 2e9 per 60s (never
#                            limits: measures the bookkeeping), bucket_key conn.client_ip
#       ringress-ratelimit-base  (not in the default set) the same rate-limit policy on
#                            the binary at RINGRESS_BASE_BIN, e.g. one built from the
#                            commit before issue 11's shared buckets (per-worker buckets):
#                            the cost of exact per-edge counting, old against new
#       ringress-3static     (not in the default set) the 3 rules without rule 2's
#                            expression: x-b is added to every request. Tells the CEL
#                            expression's share of ringress-3rules' cost apart.
#       nginx-none           compare.sh's nginx proxy (X-Forwarded-For/-Proto/-Host set)
#       nginx-3headers       the same plus the 3 rules' equivalents: proxy_set_header X-A 1,
#                            X-B from a map on $request_method (GET -> 2, else not sent),
#                            X-Forwarded-Host "" (not sent, client's dropped too)
#   * before the load, checks through a second endpoint (`Host: check.local`, same policy,
#     routed to an upstream server that echoes the request headers) that every system
#     forwarded exactly what it should, and that ringress-basicauth answers 401 without
#     credentials;
#   * ROUNDS rounds; each round runs every system back to back, rotating which goes first;
#   * per run: req/s, p99 latency, and the front's CPU time (utime+stime from
#     /proc/PID/stat over all its processes) divided by completed requests;
#   * prints medians, the ratios of each ringress policy to ringress-none and of ringress
#     to nginx, and the issue's targets (3-rule policy >= 0.90x req/s and <= 1.10x CPU/req
#     of no policy), as Markdown; everything goes to bench/results/policy-<UTC time>.txt
#     and bench/results/policy-latest.txt.
#
# Environment:
#   ROUNDS=3 DURATION=10 (seconds per wrk run) WORKERS=1 CONNS=64 WARMUP=2 (seconds)
#   SERVER_CPU=1 CLIENT_CPU=0   CPUs for the systems (and upstream) and for wrk
#   SYSTEMS="ringress-none ringress-3rules ringress-basicauth ringress-ratelimit nginx-none nginx-3headers"
#                               subset and order (a ratio needs both of its systems);
#                               add ringress-3static for the expression's share
#   MICRO=1                     build and run `cargo bench --bench policy` (0: skip)
#   RINGRESS_BASE_BIN=path      the binary for ringress-ratelimit-base
#   RINGRESS_LOG_LEVEL=info     --log-level for ringress (nothing per request at info;
#                               readiness is read from the info lines, so info or finer)
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
ALL_SYSTEMS="ringress-none ringress-3rules ringress-basicauth ringress-ratelimit nginx-none nginx-3headers"
SYSTEMS=${SYSTEMS:-$ALL_SYSTEMS}
KNOWN_SYSTEMS="$ALL_SYSTEMS ringress-3static ringress-ratelimit-base"
MICRO=${MICRO:-1}
RINGRESS_LOG_LEVEL=${RINGRESS_LOG_LEVEL:-info}
KEEP_WORK=${KEEP_WORK:-0}
QUIET_WAIT=${QUIET_WAIT:-120}
MAX_OTHER=${MAX_OTHER:-10}
NOISE_RETRIES=${NOISE_RETRIES:-2}
NOISY_RETRIES=0
HOST_HEADER=bench.local
CHECK_HOST=check.local
# The credential of ringress-basicauth (password: 8..128 characters), sent by wrk.
AUTH_USER=bench
AUTH_PASS=bench-password-1
AUTH_HEADER="Authorization: Basic $(printf '%s:%s' "$AUTH_USER" "$AUTH_PASS" | base64 -w0)"
# The issue's targets for the 3-rule policy against no policy.
TARGET_RPS=0.90
TARGET_CPU=1.10

die() { echo "policy_compare.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in ROUNDS DURATION WORKERS CONNS WARMUP SERVER_CPU CLIENT_CPU QUIET_WAIT MAX_OTHER NOISE_RETRIES MICRO; do
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
has_ringress=0
for s in "${SYS[@]}"; do [[ $s == ringress-* ]] && has_ringress=1; done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$ROOT/bench/results
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGRESS_BIN=$TARGET_DIR/release/ringress
RINGRESS_BASE_BIN=${RINGRESS_BASE_BIN:-}
if has ringress-ratelimit-base; then
    [[ -x $RINGRESS_BASE_BIN ]] || die "ringress-ratelimit-base needs RINGRESS_BASE_BIN=<a ringress binary> (got '$RINGRESS_BASE_BIN')"
fi
bin_of() { # SYSTEM: the ringress binary it runs
    if [[ $1 == ringress-ratelimit-base ]]; then echo "$RINGRESS_BASE_BIN"; else echo "$RINGRESS_BIN"; fi
}
CLK_TCK=$(getconf CLK_TCK)

for cmd in nginx wrk taskset ss curl timeout getconf base64 cargo; do
    command -v "$cmd" >/dev/null || die "missing '$cmd' (apt-get install nginx-light wrk util-linux iproute2 curl coreutils)"
done
bench_prepare policy_compare.sh

# ---------------------------------------------------------------------------------------
# Ports: fresh ones each run, below the ephemeral range, not used by any socket.
# ---------------------------------------------------------------------------------------
declare -A TAKEN=()
init_port_range
UP_PORT=$(pick_port)
ECHO_PORT=$(pick_port) # the upstream's header-echo server, for the checks only
declare -A PORT=()
for s in "${SYS[@]}"; do PORT[$s]=$(pick_port); done

# The upstream's 100-byte body, checked through every system before the load starts.
FILL=$(printf 'x%.0s' $(seq 94))
UP_BODY="upstr:$FILL"

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
if ((has_ringress)); then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    [[ -x $RINGRESS_BIN ]] || die "no binary at $RINGRESS_BIN"
fi
if ((MICRO)); then
    log "cargo bench --bench policy --no-run"
    (cd "$ROOT" && cargo bench --bench policy --no-run) >&2 || die "cargo bench --bench policy --no-run failed"
fi

# Provenance, taken now: the tree may change while the benchmark runs.
GIT_STATE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit') ($(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified tracked files: $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | awk '{ print $2 }' | tr '\n' ' '))"
BIN_STATE=-
((has_ringress)) && BIN_STATE="$(sha256sum "$RINGRESS_BIN" | cut -c1-16) built $(date -u -r "$RINGRESS_BIN" '+%Y-%m-%dT%H:%M:%SZ')"
has ringress-ratelimit-base && BIN_STATE="$BIN_STATE; base $RINGRESS_BASE_BIN $(sha256sum "$RINGRESS_BASE_BIN" | cut -c1-16)"

# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------
ECHO_HEADERS=(host x-a x-b x-forwarded-host x-forwarded-for x-forwarded-proto authorization)
mkdir -p "$WORK/upstream"
nginx_fixed_upstream_conf "$WORK/upstream" "$UP_PORT" "$UP_BODY" 4096 \
    "$(nginx_echo_server "$ECHO_PORT" "${ECHO_HEADERS[@]}")" >"$WORK/upstream/nginx.conf"

# The policies (YAML files, attached with traffic_policy_file).
cat >"$WORK/policy-3rules.yml" <<'EOF'
on_http_request:
  - name: add-a
    actions:
      - type: add-headers
        config:
          headers:
            x-a: "1"
  - name: get-b
    expressions:
      - "req.method == 'GET'"
    actions:
      - type: add-headers
        config:
          headers:
            x-b: "2"
  - name: drop-xfh
    actions:
      - type: remove-headers
        config:
          headers: [x-forwarded-host]
EOF
# The same without rule 2's expression (ringress-3static).
sed '/expressions:/,+1d' "$WORK/policy-3rules.yml" >"$WORK/policy-3static.yml"
grep -q expressions "$WORK/policy-3static.yml" && die "policy-3static.yml still has an expression"
cat >"$WORK/policy-basicauth.yml" <<EOF
on_http_request:
  - actions:
      - type: basic-auth
        config:
          credentials: ["$AUTH_USER:$AUTH_PASS"]
EOF
cat >"$WORK/policy-ratelimit.yml" <<'EOF'
on_http_request:
  - actions:
      - type: rate-limit
        config:
          name: bench
          algorithm: sliding_window
          capacity: 2000000000
          rate: 60s
          bucket_key: [conn.client_ip]
EOF

# compare.sh's ringress proxy config (same timeouts and limits), with two endpoints: the
# measured one and the check one, both with the system's policy.
ringress_conf() { # $1 = port, $2 = policy file or ""
    local pol=""
    [[ -n $2 ]] && pol="traffic_policy_file = \"$2\""
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
upstream = "http://127.0.0.1:$UP_PORT"
$pol
[[endpoints]]
url = "http://$CHECK_HOST"
upstream = "http://127.0.0.1:$ECHO_PORT"
$pol
EOF
}

# compare.sh's nginx proxy server; $3 = extra proxy_set_header lines for the 3 rules.
# shellcheck disable=SC2016 # nginx variables, literal on purpose
nginx_front_conf() { # $1 = dir, $2 = port, $3 = "3headers" or ""
    local xfh='proxy_set_header X-Forwarded-Host $host;' rules="" map=""
    if [[ $3 == 3headers ]]; then
        xfh='proxy_set_header X-Forwarded-Host ""; # rule 3: never sent (a client-sent one is dropped too)'
        rules='proxy_set_header X-A 1;                     # rule 1
            proxy_set_header X-B $bench_xb;             # rule 2 (empty: not sent)'
        map='map $request_method $bench_xb { GET 2; default ""; }'
    fi
    nginx_common "$1"
    echo "worker_processes $WORKERS;"
    echo "events { worker_connections 8192; }"
    echo "http {"
    nginx_http_common "$1"
    cat <<EOF
    $map
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    upstream check_upstream {
        server 127.0.0.1:$ECHO_PORT;
    }
    server {
        listen 127.0.0.1:$2 reuseport;
        server_name $HOST_HEADER;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            $xfh
            $rules
        }
    }
    server {
        listen 127.0.0.1:$2;
        server_name $CHECK_HOST;
        location / {
            proxy_pass http://check_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            $xfh
            $rules
        }
    }
}
EOF
}

for s in "${SYS[@]}"; do
    case $s in
    ringress-none) ringress_conf "${PORT[$s]}" "" >"$WORK/$s.toml" ;;
    ringress-ratelimit-base) ringress_conf "${PORT[$s]}" "$WORK/policy-ratelimit.yml" >"$WORK/$s.toml" ;;
    ringress-*) ringress_conf "${PORT[$s]}" "$WORK/policy-${s#ringress-}.yml" >"$WORK/$s.toml" ;;
    nginx-none | nginx-3headers)
        mkdir -p "$WORK/$s"
        nginx_front_conf "$WORK/$s" "${PORT[$s]}" "${s#nginx-}" >"$WORK/$s/nginx.conf"
        ;;
    esac
    if [[ $s == ringress-* ]]; then
        "$(bin_of "$s")" edge --config "$WORK/$s.toml" --check >"$WORK/check-$s.log" 2>&1 ||
            { cat "$WORK/check-$s.log" >&2; die "ringress rejected the $s config ($WORK/$s.toml)"; }
    else
        nginx -t -q -e "$WORK/$s/error.log" -p "$WORK/$s" -c "$WORK/$s/nginx.conf" >"$WORK/check-$s.log" 2>&1 ||
            { cat "$WORK/check-$s.log" >&2; die "nginx rejected the $s config"; }
    fi
done

# ---------------------------------------------------------------------------------------
# Micro benchmark (before any server runs, after waiting for quiet)
# ---------------------------------------------------------------------------------------
MICRO_OUT=$WORK/micro.txt
: >"$MICRO_OUT"
if ((MICRO)); then
    log "waiting for an idle machine (up to ${QUIET_WAIT}s)"
    wait_quiet "$QUIET_WAIT"
    log "cargo bench --bench policy (pinned to CPU $SERVER_CPU)"
    (cd "$ROOT" && timeout 120 taskset -c "$SERVER_CPU" cargo bench --bench policy) >"$MICRO_OUT" 2>"$WORK/micro.err" ||
        { cat "$WORK/micro.err" >&2; die "cargo bench --bench policy failed"; }
    cat "$MICRO_OUT" >&2
fi

# ---------------------------------------------------------------------------------------
# Start the systems
# ---------------------------------------------------------------------------------------
declare -A PID_OF=()
log "starting the systems on CPU $SERVER_CPU (workers=$WORKERS), wrk on CPU $CLIENT_CPU"

start upstream nginx -e "$WORK/upstream/error.log" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf"
UP_PID=$STARTED_PID
wait_listening "$UP_PORT" "$UP_PID" upstream
wait_listening "$ECHO_PORT" "$UP_PID" upstream

for s in "${SYS[@]}"; do
    if [[ $s == ringress-* ]]; then
        start "$s" env -u RUST_LOG "$(bin_of "$s")" edge --config "$WORK/$s.toml" --log-level "$RINGRESS_LOG_LEVEL"
    else
        start "$s" nginx -e "$WORK/$s/error.log" -p "$WORK/$s" -c "$WORK/$s/nginx.conf"
    fi
    PID_OF[$s]=$STARTED_PID
done
for s in "${SYS[@]}"; do
    wait_listening "${PORT[$s]}" "${PID_OF[$s]}" "$s"
    # Every ringress worker binds its own SO_REUSEPORT socket: wait for the ready line.
    [[ $s == ringress-* ]] && wait_for_line "$WORK/$s.err" 'ringress edge ready' 1 "${PID_OF[$s]}" "$s"
done
READY_LINES=$(grep -h 'ringress edge ready' "$WORK"/ringress-*.err 2>/dev/null | sed 's/.*ringress edge ready/ringress edge ready/' | sort -u | tr '\n' ';' || true)

# ---------------------------------------------------------------------------------------
# Checks: no stranger on our ports, the upstream's body through every system, and what
# each system forwarded (through the check endpoint, which echoes the request headers).
# ---------------------------------------------------------------------------------------
check_listener_owner "$UP_PORT" "$UP_PID"
check_listener_owner "$ECHO_PORT" "$UP_PID"
HEADERS_LOG=$WORK/checks.txt
: >"$HEADERS_LOG"

# echo_line SYSTEM HOST METHOD [curl args]: the check upstream's echo line; fails unless 200.
echo_line() {
    local s=$1 host=$2 method=$3 body code
    shift 3
    body=$(curl -sS --max-time 5 -o "$WORK/c.body" -w '%{http_code}' -X "$method" -H "Host: $host" "$@" \
        "http://127.0.0.1:${PORT[$s]}/") || die "$s: $method request with Host: $host failed"
    code=$body
    body=$(cat "$WORK/c.body")
    echo "--- $s: curl -X $method -H 'Host: $host' $(printf "'%s' " "$@")-> $code: $body" >>"$HEADERS_LOG"
    [[ $code == 200 ]] || die "$s: $method Host: $host answered $code, not 200: $body"
    echo "$body"
}
expect_in() { # SYSTEM WHAT TEXT FRAGMENT
    [[ $3 == *"$4"* ]] || die "$1: $2: expected '$4' in: $3"
}

for s in "${SYS[@]}"; do
    check_listener_owner "${PORT[$s]}" "${PID_OF[$s]}"
    code=$(curl -sS --max-time 5 -D "$WORK/h.tmp" -o "$WORK/c.body" -w '%{http_code}' -H "Host: $HOST_HEADER" -H "$AUTH_HEADER" \
        "http://127.0.0.1:${PORT[$s]}/") || die "$s: request failed"
    { echo "--- $s GET Host: $HOST_HEADER (response head, body $(wc -c <"$WORK/c.body") bytes)"; tr -d '\r' <"$WORK/h.tmp"; } >>"$HEADERS_LOG"
    [[ $code == 200 ]] || die "$s: not 200: $(head -1 "$WORK/h.tmp")"
    [[ $(cat "$WORK/c.body") == "$UP_BODY" ]] || die "$s: unexpected body '$(cat "$WORK/c.body")'"

    get=$(echo_line "$s" "$CHECK_HOST" GET -H "$AUTH_HEADER")
    expect_in "$s" "GET" "$get" "host=[$CHECK_HOST]"
    expect_in "$s" "GET" "$get" "x-forwarded-for=[127.0.0.1]"
    expect_in "$s" "GET" "$get" "x-forwarded-proto=[http]"
    expect_in "$s" "GET" "$get" "authorization=[${AUTH_HEADER#Authorization: }]"
    case $s in
    ringress-3rules | nginx-3headers)
        expect_in "$s" "GET (3 rules)" "$get" "x-a=[1]"
        expect_in "$s" "GET (3 rules)" "$get" "x-b=[2]"
        expect_in "$s" "GET (3 rules)" "$get" "x-forwarded-host=[]"
        post=$(echo_line "$s" "$CHECK_HOST" POST -H "$AUTH_HEADER" --data '')
        expect_in "$s" "POST (3 rules)" "$post" "x-a=[1]"
        expect_in "$s" "POST (3 rules)" "$post" "x-b=[]"
        # A client-sent X-Forwarded-Host must not reach the upstream either.
        spoof=$(echo_line "$s" "$CHECK_HOST" GET -H "$AUTH_HEADER" -H "X-Forwarded-Host: spoofed.example")
        expect_in "$s" "GET with X-Forwarded-Host (3 rules)" "$spoof" "x-forwarded-host=[]"
        ;;
    ringress-3static)
        expect_in "$s" "GET (3 static rules)" "$get" "x-a=[1]"
        expect_in "$s" "GET (3 static rules)" "$get" "x-b=[2]"
        expect_in "$s" "GET (3 static rules)" "$get" "x-forwarded-host=[]"
        post=$(echo_line "$s" "$CHECK_HOST" POST -H "$AUTH_HEADER" --data '')
        expect_in "$s" "POST (3 static rules)" "$post" "x-b=[2]"
        ;;
    *)
        expect_in "$s" "GET (no header rules)" "$get" "x-a=[]"
        expect_in "$s" "GET (no header rules)" "$get" "x-b=[]"
        expect_in "$s" "GET (no header rules)" "$get" "x-forwarded-host=[$CHECK_HOST]"
        ;;
    esac
    if [[ $s == ringress-basicauth ]]; then
        code=$(curl -sS --max-time 5 -D "$WORK/h.tmp" -o /dev/null -w '%{http_code}' -H "Host: $HOST_HEADER" \
            "http://127.0.0.1:${PORT[$s]}/") || die "$s: request without credentials failed"
        { echo "--- $s GET Host: $HOST_HEADER without credentials (response head)"; tr -d '\r' <"$WORK/h.tmp"; } >>"$HEADERS_LOG"
        [[ $code == 401 ]] || die "$s: without credentials: $code, expected 401"
        code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "Host: $HOST_HEADER" -u "$AUTH_USER:wrong-password" \
            "http://127.0.0.1:${PORT[$s]}/") || die "$s: request with a wrong password failed"
        [[ $code == 401 ]] || die "$s: with a wrong password: $code, expected 401"
        echo "--- $s GET with a wrong password -> $code" >>"$HEADERS_LOG"
    fi
done

# ---------------------------------------------------------------------------------------
# Load runs
# ---------------------------------------------------------------------------------------
RAW=$WORK/raw.tsv
printf 'round\tsystem\treq_s\tp99_us\trequests\terrors\tsystem_ticks\tcpu_us_per_req\tupstream_cpu_us_per_req\twrk_cpu_pct\tother_load_pct\n' >"$RAW"
: >"$WORK/tool-output.txt"

# run_once ROUND SYSTEM [discard]: one measured run; sets ROW (TSV line), LINE (progress
# line) and OTHER (foreign load %).
run_once() {
    local round=$1 s=$2 discard=${3:-}
    local url=http://127.0.0.1:${PORT[$s]}/ out=$WORK/out.txt tfile=$WORK/time.txt d=$DURATION
    local t0 t1 u0 u1 ss0 ss1 cs0 cs1 rps p99 reqs errs
    [[ -n $discard ]] && d=$WARMUP
    t0=$(cpu_ticks "${PID_OF[$s]}")
    u0=$(cpu_ticks "$UP_PID")
    ss0=$(cpu_stat "$SERVER_CPU")
    cs0=$(cpu_stat "$CLIENT_CPU")
    local TIMEFORMAT='%R %U %S'
    { time taskset -c "$CLIENT_CPU" timeout $((d + 30)) \
        wrk -t1 -c"$CONNS" -d"${d}s" --latency -H "Host: $HOST_HEADER" -H "$AUTH_HEADER" "$url" >"$out" 2>&1; } 2>"$tfile" ||
        die "wrk failed against $s: $(cat "$out")"
    t1=$(cpu_ticks "${PID_OF[$s]}")
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
    ROW=$(printf '%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$s" "$rps" "$p99" \
        "$reqs" "$errs" $((t1 - t0)) "$cpu" "$up" "$client" "$OTHER")
    LINE=$(printf '  round %s  %-18s %7.0f req/s  p99 %8s µs  cpu %6s µs/req  upstream %5s  wrk %3s%%  other %4s%%  errors %s' \
        "$round" "$s" "$rps" "$p99" "$cpu" "$up" "$client" "$OTHER" "$errs")
    { echo "### round $round $s (other load $OTHER%)"; cat "$out"; } >>"$WORK/tool-output.txt"
}

# run_load ROUND SYSTEM [discard]: a run whose foreign load exceeds MAX_OTHER % is
# repeated (after waiting for quiet) up to NOISE_RETRIES times; the last attempt is kept
# either way, with its foreign load in the table.
run_load() { run_with_retries "${3:-}" run_once "$@"; }

nsys=${#SYS[@]}
est=$((ROUNDS * nsys * (DURATION + 1) + nsys * (WARMUP + 1)))
log "ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS WORKERS=$WORKERS systems: ${SYS[*]}; about $((est / 60 + 1)) min"

log "waiting for an idle machine (up to ${QUIET_WAIT}s)"
wait_quiet "$QUIET_WAIT"

log "warm-up (${WARMUP}s per system; fills upstream keep-alive pools)"
for s in "${SYS[@]}"; do run_load 0 "$s" discard; done

for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS"
    order=() # rotate the system order each round
    for i in $(seq 0 $((nsys - 1))); do order+=("${SYS[$(((i + round - 1) % nsys))]}"); done
    for s in "${order[@]}"; do run_load "$round" "$s"; done
done

# Every process must still be the one we started (nothing crashed mid-run).
for s in "${SYS[@]}"; do
    kill -0 "${PID_OF[$s]}" 2>/dev/null || die "$s (pid ${PID_OF[$s]}) died during the run"
done
kill -0 "$UP_PID" 2>/dev/null || die "the upstream died during the run"

# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
rows() { awk -F'\t' -v s="$1" 'NR > 1 && $2 == s' "$RAW"; }

declare -A MED=()
for s in "${SYS[@]}"; do
    MED[$s.rps]=$(rows "$s" | median 3)
    MED[$s.p99]=$(rows "$s" | median 4)
    MED[$s.cpu]=$(rows "$s" | median 8)
    MED[$s.up]=$(rows "$s" | median 9)
    MED[$s.client]=$(rows "$s" | median 10)
    MED[$s.other]=$(rows "$s" | awk -F'\t' '$11 > m { m = $11 } END { print m + 0 }')
    MED[$s.err]=$(rows "$s" | awk -F'\t' '{ e += $6 } END { print e + 0 }')
done

# Ratio rows for the pairs whose both systems ran: "numerator denominator".
PAIRS=()
for p in "ringress-3rules ringress-none" "ringress-basicauth ringress-none" "ringress-ratelimit ringress-none" \
    "ringress-ratelimit ringress-ratelimit-base" "ringress-ratelimit-base ringress-none" \
    "ringress-3static ringress-none" "ringress-3rules ringress-3static" "nginx-3headers nginx-none" "ringress-none nginx-none" "ringress-3rules nginx-3headers"; do
    read -r x y <<<"$p"
    has "$x" && has "$y" && PAIRS+=("$p")
done

SUMMARY=$WORK/summary.md
{
    extra=""
    [[ $SYSTEMS == "$ALL_SYSTEMS" ]] || extra=" SYSTEMS=\"$SYSTEMS\""
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS$extra bench/policy_compare.sh\`"
    echo
    echo "Medians of $ROUNDS round(s). Every front and the upstream pinned to CPU $SERVER_CPU, wrk (-t1 -c$CONNS) to CPU $CLIENT_CPU; $WORKERS worker(s) per front; ${DURATION}s per run; every request carries Host and the same Authorization header. $NOISY_RETRIES run(s) repeated because other processes took more than $MAX_OTHER% of the CPU."
    echo
    echo "| system | req/s | p99 (ms) | front CPU µs/req | upstream CPU µs/req | wrk CPU % | other load % (max) | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${SYS[@]}"; do
        echo "| $s | $(fmt0 "${MED[$s.rps]}") | $(fmt_ms "${MED[$s.p99]}") | $(fmt1 "${MED[$s.cpu]}") | $(fmt1 "${MED[$s.up]}") | $(fmt0 "${MED[$s.client]}") | ${MED[$s.other]} | ${MED[$s.err]} |"
    done
    if ((${#PAIRS[@]})); then
        echo
        echo "| ratio | req/s | p99 | CPU/req |"
        echo "|---|---:|---:|---:|"
        for p in "${PAIRS[@]}"; do
            read -r x y <<<"$p"
            echo "| $x / $y | $(ratio "${MED[$x.rps]}" "${MED[$y.rps]}") | $(ratio "${MED[$x.p99]}" "${MED[$y.p99]}") | $(ratio "${MED[$x.cpu]}" "${MED[$y.cpu]}") |"
        done
    fi
    if has ringress-3rules && has ringress-none; then
        echo
        r=$(ratio "${MED[ringress-3rules.rps]}" "${MED[ringress-none.rps]}")
        c=$(ratio "${MED[ringress-3rules.cpu]}" "${MED[ringress-none.cpu]}")
        v=missed
        at_least "$r" "$TARGET_RPS" && v=met
        echo "Target 3-rule policy >= ${TARGET_RPS}x the req/s of no policy: ${r}x, $v."
        v=missed
        at_most "$c" "$TARGET_CPU" && v=met
        echo "Target 3-rule policy <= ${TARGET_CPU}x the CPU/req of no policy: ${c}x, $v."
    fi
} >"$SUMMARY"

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/policy-$(date -u +%Y%m%d-%H%M%S).txt
{
    echo "# bench/policy_compare.sh results"
    echo "date:     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "command:  ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS WARMUP=$WARMUP SYSTEMS='$SYSTEMS' MICRO=$MICRO MAX_OTHER=$MAX_OTHER NOISE_RETRIES=$NOISE_RETRIES bench/policy_compare.sh"
    echo "git:      $GIT_STATE (at start)"
    echo "binary:   $BIN_STATE"
    echo "kernel:   $(uname -srm)"
    echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) x $NCPU; server CPU $SERVER_CPU, client CPU $CLIENT_CPU; CLK_TCK $CLK_TCK"
    echo "ringress: ${READY_LINES:-no ready line seen} (workers=$WORKERS, log level $RINGRESS_LOG_LEVEL)"
    echo "versions: $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 || true)"
    echo
    echo "## summary (medians)"
    cat "$SUMMARY"
    echo
    echo "## micro benchmark (cargo bench --bench policy, pinned to CPU $SERVER_CPU, before the servers started)"
    if [[ -s $MICRO_OUT ]]; then cat "$MICRO_OUT"; else echo "not run (MICRO=0)"; fi
    echo
    echo "## raw runs"
    column -t -s $'\t' "$RAW"
    echo
    echo "## checks (what each system forwarded, seen by the echo upstream)"
    cat "$HEADERS_LOG"
    echo
    echo "## configs"
    for f in "$WORK/upstream/nginx.conf" "$WORK"/policy-*.yml "$WORK"/ringress-*.toml "$WORK"/nginx-*/nginx.conf; do
        [[ -f $f ]] || continue
        echo "--- ${f#"$WORK"/}"
        cat "$f"
    done
    echo
    echo "## process logs (stderr, last 20 lines each)"
    for f in "$WORK"/*.err "$WORK"/*/error.log; do
        [[ -s $f ]] || continue
        echo "--- ${f#"$WORK"/}"
        tail -20 "$f"
    done
    echo
    echo "## tool output"
    cat "$WORK/tool-output.txt"
} >"$OUT"

cp "$OUT" "$RESULTS_DIR/policy-latest.txt"

echo
cat "$SUMMARY"
if [[ -s $MICRO_OUT ]]; then
    echo
    echo "Micro benchmark (cargo bench --bench policy):"
    grep 'ns/iter' "$MICRO_OUT" || cat "$MICRO_OUT"
fi
echo
echo "raw results: $OUT (also bench/results/policy-latest.txt)"
