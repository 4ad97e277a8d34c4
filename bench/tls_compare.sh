#!/usr/bin/env bash
# bench/tls_compare.sh: ringress against nginx over TLS (HTTPS keep-alive, TLS handshakes,
# HTTP/2), in one run, on one machine. The HTTP/1.1 counterpart is bench/compare.sh; the
# method (pinning, CPU per request, rounds, noise control) is the same, see
# docs/performance.md.
#
# What it does:
#   * builds ringress (cargo build --release);
#   * generates one self-signed ECDSA P-256 certificate for bench.ringress.localhost,
#     used by both servers;
#   * starts one shared upstream (nginx, fixed 100-byte 200, keep-alive, 1 worker) and two
#     TLS front proxies with the same worker count in front of it (nginx: `listen ... ssl
#     http2`, session cache and tickets on, keep-alive upstream pool; ringress: an https
#     endpoint with a [[tls.certificates]] entry), all pinned to SERVER_CPU; the load
#     generators (wrk, h2load) run on CLIENT_CPU;
#   * scenarios (SCENARIOS):
#       keepalive  wrk -t1 -cCONNS --latency over HTTPS/1.1, keep-alive;
#       handshake  wrk with `Connection: close` and TLS session resumption disabled in the
#                  client: one request per connection, every connection a full TLS 1.3
#                  handshake (ECDHE + certificate + ECDSA CertificateVerify);
#       resume     the same with resumption allowed: wrk offers the ticket of its last
#                  connection, so almost every handshake is a PSK-DHE resumption;
#       h2         h2load -cCONNS -mH2_STREAMS over TLS with ALPN h2 (the issue's
#                  -c64 -m100: 6400 requests in flight, far more than the 64-connection
#                  upstream keep-alive pools, so both fronts open and close upstream
#                  connections all the time; the "TCP connects/req" column shows it);
#       h2pool     h2load -cH2POOL_CONNS -mH2POOL_STREAMS (8 x 8): multiplexed HTTP/2 with
#                  64 requests in flight, which the upstream pools absorb;
#   * ROUNDS rounds; in each round every scenario runs both servers back to back,
#     alternating which one goes first, so drift hits both alike;
#   * per run: req/s (for handshake/resume: = handshakes/s), p99 (wrk: from writing the
#     request to the response, so it excludes connect and handshake; h2load: from its
#     --log-file), and the server's CPU
#     time (utime+stime from /proc/PID/stat over all its processes) divided by completed
#     requests = CPU µs per request (per handshake);
#   * prints medians and ringress/nginx ratios against the issue's targets, as Markdown,
#     and writes everything to bench/results/tls-<UTC time>.txt (and tls-latest.txt).
#
# Name resolution: ringress picks the certificate by SNI (this config sets no default
# certificate), so the client must send SNI bench.ringress.localhost. glibc here does not
# resolve *.localhost (nsswitch "files dns"), and this script does not touch /etc/hosts:
#   wrk     a Lua script replaces wrk.resolve so it connects to 127.0.0.1 while the URL
#           host still goes out as SNI (wrk sets SNI from the URL host);
#   h2load  --connect-to=127.0.0.1:PORT (SNI and :authority from the URL host);
#   curl    --resolve.
#
# Full handshakes: wrk keeps one SSL object per connection slot and, on reconnect,
# SSL_clear() keeps the session, so it resumes with the server's ticket; h2load resumes
# too (both measured: >99% resumed against nginx). The script LD_PRELOADs a small shim
# (compiled here with cc) into wrk that makes SSL_set_session() ignore sessions and clears
# the session after SSL_clear() when TLS_SHIM_NO_RESUME=1, and in every wrk run counts
# completed client handshakes as full or resumed (SSL_session_reused). The handshake
# scenario fails if any handshake was resumed.
#
# Environment:
#   ROUNDS=3 DURATION=10 (seconds per run) WORKERS=1 CONNS=64 WARMUP=2 (seconds)
#   SERVER_CPU=1 CLIENT_CPU=0   CPUs for servers (and upstream) and for the load generator
#   SCENARIOS="keepalive handshake resume h2 h2pool"   subset and order
#   H2_STREAMS=100              h2load -m (concurrent streams per connection), scenario h2
#   H2POOL_CONNS=8 H2POOL_STREAMS=8   h2load -c and -m for scenario h2pool
#   UPSTREAM_KEEPALIVE=1024      idle upstream connections kept per worker: nginx `keepalive`,
#                               ringress `upstream_idle_per_host` (the same number)
#   H2LOAD_N=                   h2load -n (default: that server's last h2 req/s x DURATION)
#   H2LOAD_P99=1                h2load p99 from --log-file (0: report "-")
#   RINGRESS_LOG_LEVEL=info     --log-level for ringress
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
SCENARIOS=${SCENARIOS:-keepalive handshake resume h2 h2pool}
H2_STREAMS=${H2_STREAMS:-100}
H2POOL_CONNS=${H2POOL_CONNS:-8}
H2POOL_STREAMS=${H2POOL_STREAMS:-8}
UPSTREAM_KEEPALIVE=${UPSTREAM_KEEPALIVE:-1024}
H2LOAD_N=${H2LOAD_N:-}
H2LOAD_P99=${H2LOAD_P99:-1}
RINGRESS_LOG_LEVEL=${RINGRESS_LOG_LEVEL:-info}
KEEP_WORK=${KEEP_WORK:-0}
QUIET_WAIT=${QUIET_WAIT:-120}
MAX_OTHER=${MAX_OTHER:-10}
NOISE_RETRIES=${NOISE_RETRIES:-2}
NOISY_RETRIES=0
HOST=bench.ringress.localhost
# h2load offers TLS_AES_128_GCM_SHA256 first, OpenSSL (wrk, nginx's choice follows the
# client) TLS_AES_256_GCM_SHA384; rustls (ignore_client_order) picks AES-256. Give h2load
# OpenSSL's default order so both servers run AES-256-GCM in every scenario.
H2LOAD_TLS13=TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256

die() { echo "tls_compare.sh: $*" >&2; exit 1; }
# Helpers shared with the other side-by-side script.
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NGINX_RLIMIT_NOFILE=20000 # h2 -c64 -m100 opens thousands of upstream connections

for v in ROUNDS DURATION WORKERS CONNS WARMUP SERVER_CPU CLIENT_CPU QUIET_WAIT MAX_OTHER NOISE_RETRIES H2_STREAMS H2POOL_CONNS H2POOL_STREAMS UPSTREAM_KEEPALIVE H2LOAD_P99; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS must be 1..20"
((DURATION >= 1 && DURATION <= 120)) || die "DURATION must be 1..120 seconds"
((WORKERS >= 1 && WORKERS <= 64)) || die "WORKERS must be 1..64"
((CONNS >= 1)) || die "CONNS must be >= 1"
((H2_STREAMS >= 1 && H2POOL_CONNS >= 1 && H2POOL_STREAMS >= 1 && UPSTREAM_KEEPALIVE >= 1)) || die "H2_STREAMS, H2POOL_CONNS, H2POOL_STREAMS and UPSTREAM_KEEPALIVE must be >= 1"
[[ -z $H2LOAD_N || $H2LOAD_N =~ ^[0-9]+$ ]] || die "H2LOAD_N must be an integer"
[[ -n ${SCENARIOS// /} ]] || die "SCENARIOS is empty"
for sc in $SCENARIOS; do [[ $sc =~ ^(keepalive|handshake|resume|h2|h2pool)$ ]] || die "unknown scenario '$sc' in SCENARIOS"; done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$ROOT/bench/results
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGRESS_BIN=$TARGET_DIR/release/ringress
CLK_TCK=$(getconf CLK_TCK)

for cmd in nginx wrk h2load openssl cc taskset ss curl timeout getconf; do
    command -v "$cmd" >/dev/null || die "missing '$cmd' (apt-get install nginx-light wrk nghttp2-client openssl gcc util-linux iproute2 curl)"
done
bench_prepare tls_compare.sh
nginx -V 2>&1 | grep -q -- '--with-http_v2_module' || die "this nginx has no HTTP/2 module"
nginx -V 2>&1 | grep -q -- '--with-http_ssl_module' || die "this nginx has no SSL module"

SERVERS=(nginx ringress)

# ---------------------------------------------------------------------------------------
# Ports: fresh ones each run, below the ephemeral port range, not used by any socket.
# ---------------------------------------------------------------------------------------
declare -A TAKEN=()
init_port_range
UP_PORT=$(pick_port)
declare -A PORT=()
PORT[nginx]=$(pick_port)
PORT[ringress]=$(pick_port)
RINGRESS_HTTP_PORT=$(pick_port) # ringress's plain listener (unused by the load)

FILL=$(printf 'x%.0s' $(seq 94))
UP_BODY="upstr:$FILL"

# ---------------------------------------------------------------------------------------
# Build, certificate, client helpers
# ---------------------------------------------------------------------------------------
log "cargo build --release"
(cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
[[ -x $RINGRESS_BIN ]] || die "no binary at $RINGRESS_BIN"
GIT_STATE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit') ($(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified tracked files: $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | awk '{ print $2 }' | tr '\n' ' '))"
GIT_SHORT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')
BIN_STATE="$(sha256sum "$RINGRESS_BIN" | cut -c1-16) built $(date -u -r "$RINGRESS_BIN" '+%Y-%m-%dT%H:%M:%SZ')"

CERT=$WORK/cert.pem
KEY=$WORK/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$KEY" -out "$CERT" \
    -days 7 -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" >"$WORK/openssl.log" 2>&1 ||
    { cat "$WORK/openssl.log" >&2; die "openssl could not make the certificate"; }
chmod 644 "$CERT" "$KEY" # read by nginx's master (root) and ringress; a throwaway key

# wrk: connect to 127.0.0.1 whatever the URL host is (the URL host stays the SNI).
cat >"$WORK/resolve.lua" <<'EOF'
wrk.resolve = function(host, service)
   wrk.addrs = wrk.lookup("127.0.0.1", service)
end
EOF

# LD_PRELOAD shim for wrk: counts client handshakes (full / resumed); with
# TLS_SHIM_NO_RESUME=1 the client never offers a session, so every handshake is full.
cat >"$WORK/tls_shim.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_session_reused(const SSL *s);
static long full, resumed;
static int no_resume(void) { const char *v = getenv("TLS_SHIM_NO_RESUME"); return v && *v == '1'; }
static int real_set_session(SSL *s, SSL_SESSION *sess) {
    static int (*real)(SSL *, SSL_SESSION *);
    if (!real) real = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    return real(s, sess);
}
int SSL_set_session(SSL *s, SSL_SESSION *sess) {
    if (sess && no_resume()) return 1;
    return real_set_session(s, sess);
}
int SSL_clear(SSL *s) { /* SSL_clear keeps the last session: drop it */
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    int r = real(s);
    if (no_resume()) real_set_session(s, NULL);
    return r;
}
int SSL_connect(SSL *s) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    int r = real(s);
    if (r == 1) __atomic_fetch_add(SSL_session_reused(s) ? &resumed : &full, 1, __ATOMIC_RELAXED);
    return r;
}
__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "tls-shim: handshakes full=%ld resumed=%ld\n", full, resumed);
}
EOF
cc -O2 -shared -fPIC -o "$WORK/tls_shim.so" "$WORK/tls_shim.c" -ldl 2>"$WORK/cc.log" ||
    { cat "$WORK/cc.log" >&2; die "could not compile the TLS client shim"; }
ldd "$(command -v wrk)" | grep 'libssl\.so' >/dev/null || die "wrk is not linked to a shared libssl: the shim cannot work"

mkdir -p "$WORK/upstream"
{
    nginx_common "$WORK/upstream"
    echo "worker_processes 1;"
    # h2 with CONNS x H2_STREAMS requests in flight makes each front open that many
    # upstream connections: 4096 was not enough (502s from both fronts).
    echo "events { worker_connections 16384; }"
    echo "http {"
    nginx_http_common "$WORK/upstream"
    echo "    server { listen 127.0.0.1:$UP_PORT; return 200 \"$UP_BODY\"; }"
    echo "}"
} >"$WORK/upstream/nginx.conf"

mkdir -p "$WORK/nginx"
{
    nginx_common "$WORK/nginx"
    echo "worker_processes $WORKERS;"
    echo "events { worker_connections 16384; }"
    echo "http {"
    nginx_http_common "$WORK/nginx"
    cat <<EOF
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive $UPSTREAM_KEEPALIVE;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl http2 reuseport;
        server_name $HOST;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1h;
        ssl_session_tickets on;
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

cat >"$WORK/ringress.toml" <<EOF
workers = $WORKERS
[listen]
http = "127.0.0.1:$RINGRESS_HTTP_PORT"
https = "127.0.0.1:${PORT[ringress]}"
[timeouts]
client_idle = "5m"
upstream_idle = "5m"
header_read = "30s"
upstream_connect = "10s"
shutdown_grace = "5s"
[limits]
max_connections_per_worker = 65536
max_head_bytes = 1048576
upstream_idle_per_host = $UPSTREAM_KEEPALIVE
[[tls.certificates]]
domains = ["$HOST"]
cert = "$CERT"
key = "$KEY"
[[endpoints]]
url = "https://$HOST"
upstream = "http://127.0.0.1:$UP_PORT"
EOF
"$RINGRESS_BIN" edge --config "$WORK/ringress.toml" --check >"$WORK/check.log" 2>&1 ||
    { cat "$WORK/check.log" >&2; die "ringress rejected $WORK/ringress.toml"; }

# ---------------------------------------------------------------------------------------
# Start servers
# ---------------------------------------------------------------------------------------
declare -A PID_OF=()
log "starting servers on CPU $SERVER_CPU (workers=$WORKERS), load generator on CPU $CLIENT_CPU"
start upstream nginx -e "$WORK/upstream/error.log" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf"
UP_PID=$STARTED_PID
wait_listening "$UP_PORT" "$UP_PID" upstream

start nginx nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
PID_OF[nginx]=$STARTED_PID
start ringress env -u RUST_LOG "$RINGRESS_BIN" edge --config "$WORK/ringress.toml" --log-level "$RINGRESS_LOG_LEVEL"
PID_OF[ringress]=$STARTED_PID
for s in "${SERVERS[@]}"; do wait_listening "${PORT[$s]}" "${PID_OF[$s]}" "$s"; done
for _ in $(seq 100); do
    grep -q 'ringress edge ready' "$WORK/ringress.err" && break
    sleep 0.05
done
RINGRESS_READY=$(grep -h 'ringress edge ready' "$WORK/ringress.err" | sed 's/.*ringress edge ready/ringress edge ready/' | head -1 || true)

# Sanity: no stranger on our ports; 200 with the upstream's body over HTTP/1.1 and over
# HTTP/2 (ALPN), SNI bench.ringress.localhost; the negotiated TLS parameters.
check_listener_owner "$UP_PORT" "$UP_PID"
HEADERS_LOG=$WORK/response-heads.txt
TLS_LOG=$WORK/tls-params.txt
: >"$HEADERS_LOG"
: >"$TLS_LOG"
declare -A TLS_PARAMS=()
check_listener_owner "$RINGRESS_HTTP_PORT" "${PID_OF[ringress]}"
for s in "${SERVERS[@]}"; do
    port=${PORT[$s]}
    check_listener_owner "$port" "${PID_OF[$s]}"
    for v in http1.1 http2; do
        body=$(curl -sS -k --max-time 5 "--$v" --resolve "$HOST:$port:127.0.0.1" -D "$WORK/h.tmp" \
            -w '\n%{http_version}' "https://$HOST:$port/") || die "$s: $v request failed"
        ver=${body##*$'\n'}
        body=${body%$'\n'*}
        { echo "--- $s $v (response head, body ${#body} bytes)"; tr -d '\r' <"$WORK/h.tmp"; } >>"$HEADERS_LOG"
        head -1 "$WORK/h.tmp" | grep -q ' 200' || die "$s/$v: not 200: $(head -1 "$WORK/h.tmp")"
        [[ $body == "$UP_BODY" ]] || die "$s/$v: unexpected body '$body'"
        [[ $v == http2 && $ver != 2 ]] && die "$s: ALPN h2 not negotiated (HTTP version $ver)"
    done
    for alpn in http/1.1 h2; do
        echo "--- $s, ALPN offer $alpn" >>"$TLS_LOG"
        timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername "$HOST" -alpn "$alpn" </dev/null 2>&1 |
            grep -a -E 'Cipher is|Server Temp Key|Peer signature type|ALPN protocol' >>"$TLS_LOG" || true
    done
    TLS_PARAMS[$s]=$(awk -v s="--- $s, ALPN offer http/1.1" '$0 == s { on = 1; next } /^---/ { on = 0 }
        on && /Cipher is/ { sub(/.*New, /, ""); sub(/, Cipher is /, " "); c = $0 }
        on && /Server Temp Key/ { sub(/.*Key: /, ""); sub(/,.*/, ""); k = $0 }
        on && /Peer signature type/ { sub(/.*type: /, ""); p = $0 }
        END { print c ", " k ", " p }' "$TLS_LOG")
done

RAW=$WORK/raw.tsv
printf 'round\tserver\tscenario\ttool\treq_s\tp99_us\trequests\terrors\tserver_ticks\tcpu_us_per_req\tupstream_cpu_us_per_req\tclient_cpu_pct\tserver_cpu_busy_pct\tother_load_pct\tfull_hs\tresumed_hs\ttcp_connects_per_req\n' >"$RAW"
declare -A LAST_H2_RPS=() H2_CIPHER=()

# run_once ROUND SERVER SCENARIO [discard]: one measured run; sets ROW, LINE and OTHER.
run_once() {
    local round=$1 s=$2 sc=$3 discard=${4:-}
    local port=${PORT[$s]} url out tfile t0 t1 u0 u1 rps p99 reqs errs n tool d
    url=https://$HOST:$port/
    out=$WORK/out.txt
    tfile=$WORK/time.txt
    d=$DURATION
    [[ -n $discard ]] && d=$WARMUP
    rm -f "$WORK/h2load.log"
    t0=$(cpu_ticks "${PID_OF[$s]}")
    u0=$(cpu_ticks "$UP_PID")
    local ss0 cs0 ss1 cs1
    ss0=$(cpu_stat "$SERVER_CPU")
    cs0=$(cpu_stat "$CLIENT_CPU")
    local ao0 ao1
    ao0=$(active_opens)
    local TIMEFORMAT='%R %U %S'
    case $sc in
    keepalive | handshake | resume)
        tool=wrk
        local extra=() noresume=0
        [[ $sc != keepalive ]] && extra=(-H "Connection: close")
        [[ $sc == handshake ]] && noresume=1
        # The shim goes into wrk only (env execs it), not into taskset or timeout.
        { time taskset -c "$CLIENT_CPU" timeout $((d + 30)) \
            env TLS_SHIM_NO_RESUME=$noresume LD_PRELOAD="$WORK/tls_shim.so" wrk -t1 -c"$CONNS" -d"${d}s" --latency -s "$WORK/resolve.lua" -H "Host: $HOST" "${extra[@]}" "$url" >"$out" 2>&1; } 2>"$tfile" ||
            die "wrk failed against $s/$sc: $(cat "$out")"
        ;;
    h2 | h2pool)
        tool=h2load
        local hc=$CONNS hm=$H2_STREAMS
        [[ $sc == h2pool ]] && hc=$H2POOL_CONNS hm=$H2POOL_STREAMS
        n=$H2LOAD_N
        if [[ -z $n ]]; then
            n=$(awk -v r="${LAST_H2_RPS[$s.$sc]:-30000}" -v d="$d" \
                'BEGIN { n = int(r * d); if (n < 20000) n = 20000; if (n > 5000000) n = 5000000; print n }')
        fi
        local logopt=()
        [[ -z $discard ]] && ((H2LOAD_P99)) && logopt=(--log-file="$WORK/h2load.log")
        # ':authority' without the port, like wrk's Host header above.
        { time taskset -c "$CLIENT_CPU" timeout $((d * 3 + 30)) \
            h2load -c"$hc" -m"$hm" -t1 -n"$n" --connect-to="127.0.0.1:$port" --tls13-ciphers="$H2LOAD_TLS13" \
            -H ":authority: $HOST" "${logopt[@]}" "$url" >"$out" 2>&1; } 2>"$tfile" ||
            die "h2load failed against $s/$sc: $(tail -20 "$out")"
        grep -q 'Application protocol: h2' "$out" || die "h2load against $s did not negotiate h2: $(tail -20 "$out")"
        H2_CIPHER[$s]=$(awk '/^Cipher:/ { print $2; exit }' "$out")
        ;;
    esac
    t1=$(cpu_ticks "${PID_OF[$s]}")
    u1=$(cpu_ticks "$UP_PID")
    ss1=$(cpu_stat "$SERVER_CPU")
    cs1=$(cpu_stat "$CLIENT_CPU")
    ao1=$(active_opens)
    if [[ $tool == h2load ]]; then # the warm-up sizes the first measured run
        LAST_H2_RPS[$s.$sc]=$(awk '/^finished in/ { print $4 }' "$out")
    fi
    [[ -n $discard ]] && return 0

    local full=- resumed=-
    case $tool in
    wrk)
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        reqs=$(awk '/requests in/ { print $1 }' "$out")
        p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
        errs=$(awk '/Non-2xx or 3xx responses:/ { e += $NF }
                    /Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
                    END { print e + 0 }' "$out")
        read -r full resumed < <(sed -n 's/^tls-shim: handshakes full=\([0-9]*\) resumed=\([0-9]*\)$/\1 \2/p' "$out") || true
        [[ -n $full ]] || die "wrk against $s/$sc: no handshake count from the TLS shim (LD_PRELOAD not effective?)"
        if [[ $sc == handshake ]] && ((resumed > 0)); then
            die "wrk against $s/$sc: $resumed handshakes were resumptions; expected only full handshakes"
        fi
        ;;
    h2load)
        rps=$(awk '/^finished in/ { print $4 }' "$out")
        reqs=$(awk '/^requests:/ { print $8 }' "$out")
        errs=$(awk '/^requests:/ { print $10 + $12 + $14 }' "$out")
        p99=-
        if ((H2LOAD_P99)) && [[ -s $WORK/h2load.log ]]; then
            p99=$(cut -f3 "$WORK/h2load.log" | sort -n |
                awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.1f", a[i] }')
        fi
        ;;
    esac
    [[ $reqs =~ ^[0-9]+$ && $reqs -gt 0 ]] || die "$tool against $s/$sc: could not parse request count: $(cat "$out")"
    local cpu up client
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    up=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    client=$(awk '{ if ($1 > 0) printf "%.0f", ($2 + $3) / $1 * 100; else print "nan" }' "$tfile")
    # busy share of the server CPU during the run (front + upstream + softirq): near 100
    # means the server side saturated; "other" as in compare.sh.
    local sbusy other
    read -r sbusy other < <(awk -v a="$ss0" -v b="$ss1" -v c="$cs0" -v d="$cs1" -v mine=$((t1 - t0 + u1 - u0)) \
        -v hz="$CLK_TCK" -v tf="$(cat "$tfile")" 'BEGIN {
            split(a, s0, " "); split(b, s1, " "); split(c, c0, " "); split(d, c1, " "); split(tf, t, " ")
            sb = (s1[3] - s0[3] > 0) ? (s1[1] - s0[1]) / (s1[3] - s0[3]) * 100 : 0
            busy = (s1[1] - s0[1]) + (c1[1] - c0[1])
            total = (s1[3] - s0[3]) + (c1[3] - c0[3])
            other = busy - mine - (t[2] + t[3]) * hz
            if (other < 0) other = 0
            printf "%.0f %.1f\n", sb, (total > 0 ? other / total * 100 : 0) }')
    OTHER=$other
    local conns
    conns=$(awk -v a=$((ao1 - ao0)) -v n="$reqs" 'BEGIN { printf "%.3f", a / n }')
    ROW=$(printf '%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$s" "$sc" "$tool" "$rps" "$p99" \
        "$reqs" "$errs" $((t1 - t0)) "$cpu" "$up" "$client" "$sbusy" "$other" "$full" "$resumed" "$conns")
    LINE=$(printf '  round %s  %-8s %-9s %-6s %7.0f req/s  p99 %8s µs  cpu %6s µs/req  upstream %5s  load-gen %3s%%  cpu%s %3s%%  other %4s%%  errors %s  hs full/resumed %s/%s  connects/req %s' \
        "$round" "$s" "$sc" "$tool" "$rps" "$p99" "$cpu" "$up" "$client" "$SERVER_CPU" "$sbusy" "$other" "$errs" "$full" "$resumed" "$conns")
    { echo "### round $round $s $sc $tool (other load $other%)"; cat "$out"; } >>"$WORK/tool-output.txt"
}

run_load() { run_with_retries "${4:-}" run_once "$@"; }

nscen=$(wc -w <<<"$SCENARIOS")
est=$((ROUNDS * nscen * 2 * (DURATION + 3) + 2 * nscen * (WARMUP + 2)))
log "ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS scenarios: $SCENARIOS; about $((est / 60 + 1)) min"
log "waiting for an idle machine (up to ${QUIET_WAIT}s)"
wait_quiet "$QUIET_WAIT"

log "warm-up (${WARMUP}s per server and scenario)"
for sc in $SCENARIOS; do
    for s in "${SERVERS[@]}"; do run_load 0 "$s" "$sc" discard; done
done

for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS"
    order=("${SERVERS[@]}")
    ((round % 2 == 0)) && order=("${SERVERS[1]}" "${SERVERS[0]}")
    for sc in $SCENARIOS; do
        for s in "${order[@]}"; do run_load "$round" "$s" "$sc"; done
    done
done

for s in "${SERVERS[@]}"; do
    kill -0 "${PID_OF[$s]}" 2>/dev/null || die "$s died during the run"
done
kill -0 "$UP_PID" 2>/dev/null || die "the upstream died during the run"

rows() { awk -F'\t' -v s="$1" -v sc="$2" 'NR > 1 && $2 == s && $3 == sc' "$RAW"; }
fmt0() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.0f", v }'; }
fmt1() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.1f", v }'; }

declare -A TOOL_OF=([keepalive]=wrk [handshake]=wrk [resume]=wrk [h2]=h2load [h2pool]=h2load)
declare -A LABEL=([keepalive]="HTTPS/1.1 keep-alive, wrk -c$CONNS" [handshake]="full TLS handshake per request" [resume]="resumed TLS handshake per request"
    [h2]="HTTP/2, h2load -c$CONNS -m$H2_STREAMS" [h2pool]="HTTP/2, h2load -c$H2POOL_CONNS -m$H2POOL_STREAMS")
declare -A TARGET=([keepalive]=0.75 [handshake]=0.6 [resume]=- [h2]=0.75 [h2pool]=0.75)
declare -A MED=()
for sc in $SCENARIOS; do
    for s in "${SERVERS[@]}"; do
        k=$s.$sc
        MED[$k.rps]=$(rows "$s" "$sc" | median 5)
        MED[$k.p99]=$(rows "$s" "$sc" | median 6)
        MED[$k.cpu]=$(rows "$s" "$sc" | median 10)
        MED[$k.up]=$(rows "$s" "$sc" | median 11)
        MED[$k.client]=$(rows "$s" "$sc" | median 12)
        MED[$k.sbusy]=$(rows "$s" "$sc" | median 13)
        MED[$k.other]=$(rows "$s" "$sc" | awk -F'\t' '$14 > m { m = $14 } END { print m + 0 }')
        MED[$k.err]=$(rows "$s" "$sc" | awk -F'\t' '{ e += $8 } END { print e + 0 }')
        MED[$k.conn]=$(rows "$s" "$sc" | median 17)
        MED[$k.hs]=$(rows "$s" "$sc" | awk -F'\t' '$15 == "-" { na = 1 } $15 != "-" { f += $15; r += $16 } END { if (na) print "-"; else printf "%d/%d", f, r }')
    done
done

SUMMARY=$WORK/summary.md
{
    extra=""
    [[ $SCENARIOS == "keepalive handshake resume h2 h2pool" ]] || extra+=" SCENARIOS='$SCENARIOS'"
    [[ $H2_STREAMS == 100 ]] || extra+=" H2_STREAMS=$H2_STREAMS"
    [[ $UPSTREAM_KEEPALIVE == 64 ]] || extra+=" UPSTREAM_KEEPALIVE=$UPSTREAM_KEEPALIVE"
    [[ $H2POOL_CONNS == 8 && $H2POOL_STREAMS == 8 ]] || extra+=" H2POOL_CONNS=$H2POOL_CONNS H2POOL_STREAMS=$H2POOL_STREAMS"
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); ringress at commit $GIT_SHORT; command: \`ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS$extra bench/tls_compare.sh\`"
    echo
    echo "Medians of $ROUNDS rounds. Servers and upstream pinned to CPU $SERVER_CPU, load generator to CPU $CLIENT_CPU; $WORKERS worker(s) each; $CONNS connections; ${DURATION}s per wrk run (h2load -n sized to about as long). TLS (openssl s_client, as wrk): ${TLS_PARAMS[nginx]} (nginx) / ${TLS_PARAMS[ringress]} (ringress)$([[ -n ${H2_CIPHER[nginx]:-} ]] && echo "; h2load: ${H2_CIPHER[nginx]} / ${H2_CIPHER[ringress]:-?}"). $NOISY_RETRIES run(s) repeated because other processes took more than $MAX_OTHER% of the CPU."
    echo
    echo "| scenario | tool | server | req/s | p99 (ms) | server CPU µs/req | upstream CPU µs/req | load-gen CPU % | CPU $SERVER_CPU busy % | other load % (max) | errors | client handshakes full/resumed | TCP connects/req |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for sc in $SCENARIOS; do
        for s in "${SERVERS[@]}"; do
            k=$s.$sc
            echo "| $sc | ${TOOL_OF[$sc]} | $s | $(fmt0 "${MED[$k.rps]}") | $(fmt_ms "${MED[$k.p99]}") | $(fmt1 "${MED[$k.cpu]}") | $(fmt1 "${MED[$k.up]}") | $(fmt0 "${MED[$k.client]}") | $(fmt0 "${MED[$k.sbusy]}") | ${MED[$k.other]} | ${MED[$k.err]} | ${MED[$k.hs]} | $(awk -v v="${MED[$k.conn]}" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }') |"
        done
    done
    echo
    echo "| scenario | what | req/s ringress/nginx | CPU/req ringress/nginx | target (CPU/req) | met |"
    echo "|---|---|---:|---:|---:|---|"
    for sc in $SCENARIOS; do
        r=ringress.$sc n=nginx.$sc
        cr=$(ratio "${MED[$r.cpu]}" "${MED[$n.cpu]}")
        t=${TARGET[$sc]}
        met=-
        if [[ $t != - && $cr != - ]]; then
            met=$(awk -v c="$cr" -v t="$t" 'BEGIN { if (c <= t) print "yes"; else printf "no (%.0f%% over)", (c / t - 1) * 100 }')
            t="≤ $t"
        fi
        echo "| $sc | ${LABEL[$sc]} | $(ratio "${MED[$r.rps]}" "${MED[$n.rps]}") | $cr | $t | $met |"
    done
} >"$SUMMARY"

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/tls-$(date -u +%Y%m%d-%H%M%S).txt
{
    echo "# bench/tls_compare.sh results"
    echo "date:     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "command:  ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS WARMUP=$WARMUP MAX_OTHER=$MAX_OTHER NOISE_RETRIES=$NOISE_RETRIES SCENARIOS='$SCENARIOS' H2_STREAMS=$H2_STREAMS H2POOL_CONNS=$H2POOL_CONNS H2POOL_STREAMS=$H2POOL_STREAMS UPSTREAM_KEEPALIVE=$UPSTREAM_KEEPALIVE H2LOAD_N=${H2LOAD_N:-auto} H2LOAD_P99=$H2LOAD_P99 bench/tls_compare.sh"
    echo "git:      $GIT_STATE (at start)"
    echo "binary:   $BIN_STATE"
    echo "kernel:   $(uname -srm)"
    echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) x $NCPU; server CPU $SERVER_CPU, client CPU $CLIENT_CPU; CLK_TCK $CLK_TCK"
    echo "ringress: ${RINGRESS_READY:-no ready line seen} (workers=$WORKERS, log level $RINGRESS_LOG_LEVEL)"
    echo "versions: $(nginx -v 2>&1) ($(nginx -V 2>&1 | grep -i 'built with openssl' || true)); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 || true); $(h2load --version 2>&1 | head -1 || true); $(openssl version)"
    echo "cert:     $(openssl x509 -in "$CERT" -noout -subject -ext subjectAltName 2>/dev/null | tr '\n' ' '); key $(openssl pkey -in "$KEY" -noout -text 2>/dev/null | grep -m1 -o 'NIST CURVE: .*\|ASN1 OID: .*' || true)"
    echo
    echo "## summary (medians)"
    cat "$SUMMARY"
    echo
    echo "## raw runs"
    column -t -s $'\t' "$RAW"
    echo
    echo "## negotiated TLS parameters (openssl s_client)"
    cat "$TLS_LOG"
    echo
    echo "## response heads seen by curl"
    cat "$HEADERS_LOG"
    echo
    echo "## configs"
    for f in "$WORK/upstream/nginx.conf" "$WORK/nginx/nginx.conf" "$WORK/ringress.toml" "$WORK/resolve.lua" "$WORK/tls_shim.c"; do
        echo "--- ${f#"$WORK"/}"
        cat "$f"
    done
    echo
    echo "## server logs"
    for f in "$WORK/nginx/error.log" "$WORK/upstream/error.log" "$WORK/ringress.err"; do
        echo "--- ${f#"$WORK"/} (last 20 lines)"
        tail -20 "$f" 2>/dev/null || true
    done
    echo
    echo "## tool output"
    cat "$WORK/tool-output.txt"
} >"$OUT"
cp "$OUT" "$RESULTS_DIR/tls-latest.txt"

echo
cat "$SUMMARY"
echo
echo "raw results: $OUT (also bench/results/tls-latest.txt)"
