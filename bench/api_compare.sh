#!/usr/bin/env bash
# bench/api_compare.sh: the control plane (the REST API, docs/api.md) on one `--dev` edge:
# how long an API write takes, how soon a written endpoint routes, and whether a cloud
# endpoint (made through the API) costs more per request than the same endpoint in the
# config file. The method (pinning, CPU time from /proc/PID/stat, rounds, noise control)
# is compare.sh's, see docs/performance.md.
#
# What it does:
#   * uses the release binary at RINGRESS_BIN (default target/release/ringress; built
#     with cargo build --release only when that default is missing; a warning when source
#     files are newer than it);
#   * starts one edge, pinned to SERVER_CPU: `ringress edge --dev --data-dir <work>/data
#     --listen-api ...`, HTTP/HTTPS/tunnel listeners on fresh loopback ports, WORKERS
#     worker(s), one config endpoint `http://cfg.bench.local` whose traffic policy (a file)
#     is a custom-response 200 with a 100-byte body; reads the bootstrap API key from its
#     stderr (redacted in the results). The clients run on CLIENT_CPU: a small Python 3
#     client (standard library only, http.client, one keep-alive connection, TCP_NODELAY,
#     time.perf_counter_ns per call) and wrk;
#   1. API write latency, ROUNDS rounds of: N sequential `POST /endpoints` (a new cloud
#      endpoint `http://w<run>-<i>.bench.local` each, the same custom-response policy),
#      then N `GET /endpoints/{id}` (the read path: HTTP, key check, one store read, for
#      scale), then N `DELETE /endpoints/{id}` oldest first. Every write is an fsync'd
#      redb commit plus a routing snapshot rebuilt from every stored endpoint, so the k-th
#      POST works on k endpoints: p50 of the first and the last 50 calls are reported
#      beside p50/p90/p99/max, and the results file has p50 per 50 calls. Edge CPU time
#      per call from /proc/PID/stat;
#   2. write -> first routed request, ROUNDS rounds of M times: POST a new cloud endpoint
#      (body naming its host), and as soon as the reply is read, `GET /` with that Host on
#      a fresh connection to the HTTP port, again until the answer is that 200 body (at
#      most 5 s); times from sending the POST and from its reply to that 200, and the GETs
#      needed (1 expected: the API replies after the new snapshot is published). Each
#      endpoint is deleted again (not timed), so every POST finds the same state;
#   3. per-request cost: `http://cloud.bench.local` is created through the API with the
#      identical policy text; wrk (-t1 -cCONNS, `-H 'Host: ...'`) against the config and
#      the cloud endpoint alternately, ROUNDS x DURATION, rotating which goes first; then
#      EXTRA more cloud endpoints are created and both are measured again (config+EXTRA,
#      cloud+EXTRA: routing should not slow down with more endpoints). Checks first that
#      both answer the same 200 (status, headers but Date, body);
#   * prints medians over the rounds, the ratios and the target (cloud / config CPU per
#     request <= 1.00, within noise), as Markdown; everything goes to
#     bench/results/api-<UTC time>.txt and bench/results/api-latest.txt.
#
# Environment:
#   N=500 (writes per round)  M=100 (write -> route trials per round)  EXTRA=200 (0: skip)
#   ROUNDS=3 DURATION=10 (seconds per wrk run) WORKERS=1 CONNS=64 WARMUP=2 (seconds)
#   SERVER_CPU=1 CLIENT_CPU=0   CPUs for the edge and for the clients (Python, wrk)
#   RINGRESS_BIN=path           the ringress binary (default target/release/ringress)
#   PYTHON=python3              the client's interpreter (standard library only)
#   DATA_PARENT=<work dir>      where the edge's data dir (the redb store) is made: the
#                               fsync cost depends on its file system (printed)
#   OBSERVE=default             [observe] as shipped (metrics + metadata capture, for both
#                               endpoints); "off": metrics = false, inspect = "off"
#   RINGRESS_LOG_LEVEL=info     --log-level (info logs two lines per endpoint write;
#                               readiness is read from the info lines, so info or finer)
#   KEEP_WORK=0 QUIET_WAIT=120 MAX_OTHER=10 NOISE_RETRIES=2   as in the other scripts
set -Eeuo pipefail

N=${N:-500}
M=${M:-100}
EXTRA=${EXTRA:-200}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-1}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PYTHON=${PYTHON:-python3}
OBSERVE=${OBSERVE:-default}
RINGRESS_LOG_LEVEL=${RINGRESS_LOG_LEVEL:-info}
KEEP_WORK=${KEEP_WORK:-0}
QUIET_WAIT=${QUIET_WAIT:-120}
MAX_OTHER=${MAX_OTHER:-10}
NOISE_RETRIES=${NOISE_RETRIES:-2}
NOISY_RETRIES=0
DOMAIN=bench.local
CFG_HOST=cfg.$DOMAIN
CLOUD_HOST=cloud.$DOMAIN
WARM_WRITES=20  # calls of the discarded warm-up of phases 1 and 2
ROUTE_WAIT=5    # seconds phase 2 tries to reach a new endpoint
# cloud / config CPU per request: <= 1.00 met, <= TARGET_NOISE within noise.
TARGET_CPU=1.00
TARGET_NOISE=1.03

die() { echo "api_compare.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in N M EXTRA ROUNDS DURATION WORKERS CONNS WARMUP SERVER_CPU CLIENT_CPU QUIET_WAIT MAX_OTHER NOISE_RETRIES; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((N >= 1 && N <= 100000)) || die "N must be 1..100000"
((M >= 1 && M <= 100000)) || die "M must be 1..100000"
((EXTRA <= 100000)) || die "EXTRA must be 0..100000"
((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS must be 1..20"
((DURATION >= 1 && DURATION <= 120)) || die "DURATION must be 1..120 seconds"
((WORKERS >= 1 && WORKERS <= 64)) || die "WORKERS must be 1..64"
((CONNS >= 1 && CONNS <= 10000)) || die "CONNS must be 1..10000"
[[ $OBSERVE == default || $OBSERVE == off ]] || die "OBSERVE must be 'default' or 'off' (got '$OBSERVE')"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=$ROOT/bench/results
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CLK_TCK=$(getconf CLK_TCK)

for cmd in wrk taskset ss curl timeout getconf "$PYTHON"; do
    command -v "$cmd" >/dev/null || die "missing '$cmd' (apt-get install wrk util-linux iproute2 curl coreutils python3)"
done
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 7))' || die "$PYTHON is older than Python 3.7"

if [[ -n ${RINGRESS_BIN:-} ]]; then
    [[ -x $RINGRESS_BIN ]] || die "RINGRESS_BIN=$RINGRESS_BIN is not an executable"
    RINGRESS_BIN=$(cd "$(dirname "$RINGRESS_BIN")" && pwd)/$(basename "$RINGRESS_BIN")
else
    RINGRESS_BIN=$TARGET_DIR/release/ringress
    if [[ ! -x $RINGRESS_BIN ]]; then
        command -v cargo >/dev/null || die "no binary at $RINGRESS_BIN and no cargo to build it"
        log "no binary at $RINGRESS_BIN: cargo build --release"
        (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
        [[ -x $RINGRESS_BIN ]] || die "no binary at $RINGRESS_BIN"
    fi
fi
bench_prepare api_compare.sh

DATA_PARENT=${DATA_PARENT:-$WORK}
[[ -d $DATA_PARENT ]] || die "DATA_PARENT=$DATA_PARENT is not a directory"
DATA=$(mktemp -d "$DATA_PARENT/ringress-api-data.XXXXXX")
if [[ $DATA != "$WORK"/* ]]; then # outside WORK: stop the edge, then remove it too
    api_cleanup() { # bench_cleanup's steps, plus DATA
        local rc=$?
        trap - EXIT INT TERM
        stop_started "$BENCH_NAME"
        if ((KEEP_WORK)); then echo "kept $WORK and $DATA" >&2; else rm -rf "$WORK" "$DATA"; fi
        exit "$rc"
    }
    trap api_cleanup EXIT
fi
DATA_FS="$(stat -f -c %T "$DATA") on $(df -P "$DATA" | awk 'NR == 2 { print $1 }')"
[[ $DATA_FS == tmpfs* || $DATA_FS == ramfs* ]] && echo "warning: the store is on $DATA_FS: fsync costs nothing there" >&2

# Provenance, taken now: the tree may change while the benchmark runs.
GIT_STATE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit') ($(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified tracked files)"
BIN_STATE="$RINGRESS_BIN $(sha256sum "$RINGRESS_BIN" | cut -c1-16) built $(date -u -r "$RINGRESS_BIN" '+%Y-%m-%dT%H:%M:%SZ')"
STALE=$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -type f -newer "$RINGRESS_BIN" 2>/dev/null | wc -l)
if ((STALE > 0)); then
    BIN_STATE+="; WARNING: $STALE source file(s) newer than the binary"
    echo "warning: $STALE file(s) under src/ or Cargo.* are newer than $RINGRESS_BIN: it may not be the code in the tree" >&2
fi

declare -A TAKEN=()
init_port_range
HTTP_PORT=$(pick_port)
HTTPS_PORT=$(pick_port)
TUNNEL_PORT=$(pick_port)
API_PORT=$(pick_port)

# ---------------------------------------------------------------------------------------
# The client (Python 3, standard library only)
# ---------------------------------------------------------------------------------------
CLIENT=$WORK/api_client.py
cat >"$CLIENT" <<'PY'
"""api_compare.sh's API client: sequential calls on one keep-alive HTTP/1.1 connection,
each timed with time.perf_counter_ns. Prints TSV result lines on stdout (times in ms)."""
import argparse
import http.client
import json
import socket
import sys
import time


def fail(msg):
    print("api_client: " + msg, file=sys.stderr)
    sys.exit(1)


def pct(values, p):
    """Nearest-rank percentile (p in percent) of a non-empty list."""
    s = sorted(values)
    k = -(-len(s) * p // 100)
    return s[max(1, min(len(s), k)) - 1]


def ms(ns):
    return "%.3f" % (ns / 1e6)


def policy_text(body):
    return json.dumps({"on_http_request": [{"actions": [{"type": "custom-response", "config": {
        "status_code": 200, "headers": {"content-type": "text/plain"}, "body": body}}]}]})


class Api:
    def __init__(self, port, key):
        self.port = port
        self.headers = {"Authorization": "Bearer " + key, "Ngrok-Version": "2",
                        "Content-Type": "application/json"}
        self.conn = None
        self.connections = 0

    def call(self, method, path, body=None):
        if self.conn is None or self.conn.sock is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
        data = None if body is None else json.dumps(body).encode()
        t0 = time.perf_counter_ns()
        self.conn.request(method, path, body=data, headers=self.headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        t1 = time.perf_counter_ns()
        if resp.will_close:
            self.conn.close()
            self.conn = None
        return resp.status, payload, t0, t1


def stats_line(op, lat, api, wall_ns):
    k = min(50, len(lat))
    print("\t".join(["stats", op, str(len(lat)), ms(pct(lat, 50)), ms(pct(lat, 90)),
                     ms(pct(lat, 99)), ms(max(lat)), ms(pct(lat[:k], 50)),
                     ms(pct(lat[-k:], 50)), str(api.connections), "%.3f" % (wall_ns / 1e9)]))
    buckets = [ms(pct(lat[i:i + 50], 50)) for i in range(0, len(lat), 50)]
    print("\t".join(["trend", op, " ".join(buckets)]))


def create(a, api):
    with open(a.policy_file) as f:
        policy = f.read()
    names = [a.name] if a.name else ["%s%d.%s" % (a.prefix, i, a.domain) for i in range(a.count)]
    ids, lat = [], []
    w0 = time.perf_counter_ns()
    for host in names:
        url = "http://" + host
        st, body, t0, t1 = api.call("POST", "/endpoints", {
            "url": url, "type": "cloud", "description": "api_compare.sh", "traffic_policy": policy})
        if st != 201:
            fail("POST /endpoints %s: %d %s" % (url, st, body[:400].decode(errors="replace")))
        ids.append(json.loads(body)["id"])
        lat.append(t1 - t0)
    wall = time.perf_counter_ns() - w0
    if a.ids_out:
        with open(a.ids_out, "w") as f:
            f.write("\n".join(ids) + "\n")
    stats_line("create", lat, api, wall)


def by_id(a, api, method, want):
    with open(a.ids) as f:
        ids = [l.strip() for l in f if l.strip()]
    lat = []
    w0 = time.perf_counter_ns()
    for i in ids:
        st, body, t0, t1 = api.call(method, "/endpoints/" + i)
        if st != want:
            fail("%s /endpoints/%s: %d %s" % (method, i, st, body[:400].decode(errors="replace")))
        lat.append(t1 - t0)
    stats_line(method.lower(), lat, api, time.perf_counter_ns() - w0)


def get_once(port, host):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def route(a, api):
    post_ok, reply_ok, post, gets = [], [], [], []
    first_try = failures = 0
    seen = {}  # what the GETs before the first 200 got
    for i in range(a.count):
        host = "%s%d.%s" % (a.prefix, i, a.domain)
        expected = ("routed:" + host).encode()
        st, body, t0, t1 = api.call("POST", "/endpoints", {
            "url": "http://" + host, "type": "cloud", "traffic_policy": policy_text(expected.decode())})
        if st != 201:
            fail("POST /endpoints http://%s: %d %s" % (host, st, body[:400].decode(errors="replace")))
        ep = json.loads(body)["id"]
        n, ok = 0, None
        deadline = t1 + a.wait * 1_000_000_000
        while True:
            n += 1
            try:
                gst, gbody = get_once(a.http_port, host)
            except OSError as e:
                gst, gbody = 0, str(e).encode()
            now = time.perf_counter_ns()
            if gst == 200 and gbody == expected:
                ok = now
                break
            what = "%d %s" % (gst, gbody[:60].decode(errors="replace").replace("\t", " ").replace("\n", " "))
            seen[what] = seen.get(what, 0) + 1
            if now > deadline:
                break
        post.append(t1 - t0)
        gets.append(n)
        if ok is None:
            failures += 1
        else:
            post_ok.append(ok - t0)
            reply_ok.append(ok - t1)
            first_try += n == 1
        st, body, _, _ = api.call("DELETE", "/endpoints/" + ep)
        if st != 204:
            fail("DELETE /endpoints/%s: %d %s" % (ep, st, body[:400].decode(errors="replace")))
    if not post_ok:
        fail("no endpoint of %d routed within %ds; GETs got: %r" % (a.count, a.wait, seen))
    print("\t".join(["route", str(a.count), ms(pct(post_ok, 50)), ms(pct(post_ok, 99)),
                     ms(pct(reply_ok, 50)), ms(pct(reply_ok, 99)), ms(pct(post, 50)),
                     ms(pct(post, 99)), "%.2f" % (sum(gets) / len(gets)), str(max(gets)),
                     str(first_try), str(failures), str(api.connections)]))
    print("\t".join(["route_seen", "; ".join("%s x%d" % kv for kv in sorted(seen.items())) or "-"]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["create", "get", "delete", "route"])
    p.add_argument("--api-port", type=int, required=True)
    p.add_argument("--key-file", required=True)
    p.add_argument("--http-port", type=int)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--prefix", default="ep")
    p.add_argument("--domain", default="bench.local")
    p.add_argument("--name")
    p.add_argument("--policy-file")
    p.add_argument("--ids")
    p.add_argument("--ids-out")
    p.add_argument("--wait", type=int, default=5)
    a = p.parse_args()
    with open(a.key_file) as f:
        api = Api(a.api_port, f.read().strip())
    if a.mode == "create":
        create(a, api)
    elif a.mode == "get":
        by_id(a, api, "GET", 200)
    elif a.mode == "delete":
        by_id(a, api, "DELETE", 204)
    else:
        route(a, api)


main()
PY

# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------
FILL=$(printf 'x%.0s' $(seq 93))
BODY="policy:$FILL" # 100 bytes
POLICY=$WORK/policy.json
printf '{"on_http_request":[{"actions":[{"type":"custom-response","config":{"status_code":200,"headers":{"content-type":"text/plain"},"body":"%s"}}]}]}\n' \
    "$BODY" >"$POLICY"

observe_section() {
    [[ $OBSERVE == off ]] && printf '[observe]\nmetrics = false\ninspect = "off"\n'
    return 0
}

# compare.sh's ringress settings (timeouts, limits), the --dev listeners on fresh ports,
# and the config endpoint.
cat >"$WORK/edge.toml" <<EOF
workers = $WORKERS
[listen]
http = "127.0.0.1:$HTTP_PORT"
https = "127.0.0.1:$HTTPS_PORT"
tunnel = "127.0.0.1:$TUNNEL_PORT"
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
url = "http://$CFG_HOST"
traffic_policy_file = "$POLICY"
$(observe_section)
EOF
EDGE_ARGS=(edge --dev --data-dir "$DATA" --config "$WORK/edge.toml" --listen-api "127.0.0.1:$API_PORT")
"$RINGRESS_BIN" "${EDGE_ARGS[@]}" --check >"$WORK/check-edge.log" 2>&1 ||
    { cat "$WORK/check-edge.log" >&2; die "ringress rejected the config ($WORK/edge.toml)"; }

# ---------------------------------------------------------------------------------------
# Start the edge
# ---------------------------------------------------------------------------------------
log "starting the edge on CPU $SERVER_CPU (workers=$WORKERS, store on $DATA_FS), clients on CPU $CLIENT_CPU"
start edge env -u RUST_LOG NO_COLOR=1 "$RINGRESS_BIN" "${EDGE_ARGS[@]}" --log-level "$RINGRESS_LOG_LEVEL"
EDGE_PID=$STARTED_PID
wait_listening "$HTTP_PORT" "$EDGE_PID" edge
wait_listening "$API_PORT" "$EDGE_PID" edge
wait_for_line "$WORK/edge.err" 'ringress edge ready' 1 "$EDGE_PID" edge
MARKER='bootstrap API key (shown once, keep it): '
wait_for_line "$WORK/edge.err" "$MARKER" 1 "$EDGE_PID" edge
KEY=$(grep -F -- "$MARKER" "$WORK/edge.err" | head -1 | sed 's/.*shown once, keep it): //' | tr -d '[:space:]')
[[ $KEY =~ ^[A-Za-z0-9_-]+$ ]] || die "cannot read the bootstrap API key from $WORK/edge.err"
KEY_FILE=$WORK/key
(umask 077 && printf '%s\n' "$KEY" >"$KEY_FILE")
redact() { sed "s/$KEY/<bootstrap key>/g"; }
READY_LINE=$(grep -h 'ringress edge ready' "$WORK/edge.err" | head -1 | sed 's/.*ringress edge ready/ringress edge ready/' || true)
check_listener_owner "$HTTP_PORT" "$EDGE_PID"
check_listener_owner "$API_PORT" "$EDGE_PID"

# client MODE OUT [args]: the Python client on CLIENT_CPU; its stdout in OUT, bash `time`
# ("%R %U %S") in OUT.time.
client() {
    local mode=$1 out=$2
    shift 2
    local TIMEFORMAT='%R %U %S'
    { time taskset -c "$CLIENT_CPU" timeout 1800 "$PYTHON" "$CLIENT" "$mode" --api-port "$API_PORT" \
        --key-file "$KEY_FILE" --domain "$DOMAIN" "$@" >"$out" 2>"$out.err"; } 2>"$out.time" ||
        die "client $mode failed: $(cat "$out.err" "$out" | redact)"
}
sum_times() { # TIMEFILE... -> one "%R %U %S" line
    cat "$@" | awk '{ r += $1; u += $2; s += $3 } END { printf "%.3f %.3f %.3f\n", r, u, s }'
}

# ---------------------------------------------------------------------------------------
# Checks: the cloud endpoint, and the same answer from both endpoints
# ---------------------------------------------------------------------------------------
CHECKS=$WORK/checks.txt
: >"$CHECKS"
client create "$WORK/cloud.out" --name "$CLOUD_HOST" --policy-file "$POLICY" --ids-out "$WORK/cloud.ids"
echo "--- created $CLOUD_HOST as $(cat "$WORK/cloud.ids") ($(awk -F'\t' '$1 == "stats" { print $4 " ms" }' "$WORK/cloud.out"))" >>"$CHECKS"
ANSWERS_DIFFER=""
for h in "$CFG_HOST" "$CLOUD_HOST"; do
    code=$(curl -sS --max-time 5 -D "$WORK/h-$h" -o "$WORK/b-$h" -w '%{http_code}' -H "Host: $h" "http://127.0.0.1:$HTTP_PORT/") ||
        die "GET Host: $h failed"
    { echo "--- GET Host: $h -> $code (response head, body $(wc -c <"$WORK/b-$h") bytes)"; tr -d '\r' <"$WORK/h-$h"; } >>"$CHECKS"
    [[ $code == 200 ]] || die "Host: $h answered $code, not 200"
    [[ $(cat "$WORK/b-$h") == "$BODY" ]] || die "Host: $h: unexpected body '$(cat "$WORK/b-$h")'"
    tr -d '\r' <"$WORK/h-$h" | grep -iv '^date:' >"$WORK/hd-$h"
done
if ! diff "$WORK/hd-$CFG_HOST" "$WORK/hd-$CLOUD_HOST" >"$WORK/hdiff" 2>&1; then
    ANSWERS_DIFFER=$(tr '\n' ' ' <"$WORK/hdiff")
    echo "warning: the two endpoints answer with different heads: $ANSWERS_DIFFER" >&2
    echo "--- the heads differ (besides Date): $ANSWERS_DIFFER" >>"$CHECKS"
fi
curl -sS --max-time 5 -H "Authorization: Bearer $KEY" -H 'Ngrok-Version: 2' "http://127.0.0.1:$API_PORT/endpoints" >"$WORK/list.json" ||
    die "GET /endpoints failed"
for t in config cloud; do
    grep -q "\"type\":\"$t\"" "$WORK/list.json" || die "GET /endpoints lists no $t endpoint: $(redact <"$WORK/list.json")"
done
echo "--- GET /endpoints: $("$PYTHON" -c 'import json, sys
print("; ".join("%s %s %s" % (e["id"], e["type"], e["url"]) for e in json.load(open(sys.argv[1]))["endpoints"]))' "$WORK/list.json")" >>"$CHECKS"

RUN_SEQ=0
: >"$WORK/tool-output.txt"
: >"$WORK/trend.txt"

# ---------------------------------------------------------------------------------------
# Phase 1: API write latency
# ---------------------------------------------------------------------------------------
RAW_W=$WORK/raw-writes.tsv
printf 'round\tcall\tcalls\tp50_ms\tp90_ms\tp99_ms\tmax_ms\tfirst50_p50_ms\tlast50_p50_ms\tedge_cpu_us_per_call\tconnections\twall_s\tother_load_pct\n' >"$RAW_W"

stats_of() { awk -F'\t' '$1 == "stats"' "$1"; }
run_writes() {
    local round=$1 discard=${2:-} n=$N o=$WORK/w e0 e1 e2 e3 ss0 ss1 cs0 cs1 op
    [[ -n $discard ]] && n=$((N < WARM_WRITES ? N : WARM_WRITES))
    RUN_SEQ=$((RUN_SEQ + 1))
    ss0=$(cpu_stat "$SERVER_CPU")
    cs0=$(cpu_stat "$CLIENT_CPU")
    e0=$(cpu_ticks "$EDGE_PID")
    client create "$o-create" --count "$n" --prefix "w$RUN_SEQ-" --policy-file "$POLICY" --ids-out "$o.ids"
    e1=$(cpu_ticks "$EDGE_PID")
    client get "$o-get" --ids "$o.ids"
    e2=$(cpu_ticks "$EDGE_PID")
    client delete "$o-delete" --ids "$o.ids"
    e3=$(cpu_ticks "$EDGE_PID")
    ss1=$(cpu_stat "$SERVER_CPU")
    cs1=$(cpu_stat "$CLIENT_CPU")
    [[ -n $discard ]] && return 0
    sum_times "$o-create.time" "$o-get.time" "$o-delete.time" >"$o.time"
    OTHER=$(other_load_pct "$ss0" "$ss1" "$cs0" "$cs1" $((e3 - e0)) "$o.time")
    declare -A ticks=([create]=$((e1 - e0)) [get]=$((e2 - e1)) [delete]=$((e3 - e2)))
    ROW="" LINE=""
    for op in create get delete; do
        local s
        s=$(stats_of "$o-$op")
        [[ -n $s ]] || die "client $op printed no stats"
        IFS=$'\t' read -r _ _ calls p50 p90 p99 mx f50 l50 conns wall <<<"$s"
        cpu=$(per_req "${ticks[$op]}" "$calls")
        ROW+=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$op" "$calls" "$p50" "$p90" "$p99" "$mx" "$f50" "$l50" "$cpu" "$conns" "$wall" "$OTHER")$'\n'
        LINE+=$(printf '  round %s  %-6s x%-5s p50 %7s  p90 %7s  p99 %7s  max %8s ms  first50 %7s  last50 %7s  cpu %8s µs/call  conns %s  other %4s%%' \
            "$round" "$op" "$calls" "$p50" "$p90" "$p99" "$mx" "$f50" "$l50" "$cpu" "$conns" "$OTHER")$'\n'
        echo "run $RUN_SEQ (round $round, other load $OTHER%) $op p50 (ms) per 50 calls: $(awk -F'\t' '$1 == "trend" { print $3 }' "$o-$op")" >>"$WORK/trend.txt"
    done
    ROW=${ROW%$'\n'} LINE=${LINE%$'\n'}
}

# ---------------------------------------------------------------------------------------
# Phase 2: write -> first routed request
# ---------------------------------------------------------------------------------------
RAW_R=$WORK/raw-route.tsv
printf 'round\ttrials\tpost_to_200_p50_ms\tpost_to_200_p99_ms\treply_to_200_p50_ms\treply_to_200_p99_ms\tpost_p50_ms\tpost_p99_ms\tgets_mean\tgets_max\tfirst_get_ok\tnever_routed\tconnections\tother_load_pct\n' >"$RAW_R"
ROUTE_SEEN=$WORK/route-seen.txt
: >"$ROUTE_SEEN"

run_route() {
    local round=$1 discard=${2:-} m=$M o=$WORK/r e0 e1 ss0 ss1 cs0 cs1 r
    [[ -n $discard ]] && m=$((M < WARM_WRITES ? M : WARM_WRITES))
    RUN_SEQ=$((RUN_SEQ + 1))
    ss0=$(cpu_stat "$SERVER_CPU")
    cs0=$(cpu_stat "$CLIENT_CPU")
    e0=$(cpu_ticks "$EDGE_PID")
    client route "$o" --count "$m" --prefix "r$RUN_SEQ-" --http-port "$HTTP_PORT" --wait "$ROUTE_WAIT"
    e1=$(cpu_ticks "$EDGE_PID")
    ss1=$(cpu_stat "$SERVER_CPU")
    cs1=$(cpu_stat "$CLIENT_CPU")
    [[ -n $discard ]] && return 0
    OTHER=$(other_load_pct "$ss0" "$ss1" "$cs0" "$cs1" $((e1 - e0)) "$o.time")
    r=$(awk -F'\t' '$1 == "route"' "$o")
    [[ -n $r ]] || die "client route printed no result"
    IFS=$'\t' read -r _ trials pok50 pok99 rok50 rok99 p50 p99 gmean gmax first never conns <<<"$r"
    ROW=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$trials" "$pok50" "$pok99" "$rok50" "$rok99" "$p50" "$p99" "$gmean" "$gmax" "$first" "$never" "$conns" "$OTHER")
    LINE=$(printf '  round %s  x%-5s POST->200 p50 %7s p99 %7s ms  reply->200 p50 %7s p99 %7s ms  POST p50 %7s  GETs mean %s max %s  first GET ok %s/%s  never %s  other %4s%%' \
        "$round" "$trials" "$pok50" "$pok99" "$rok50" "$rok99" "$p50" "$gmean" "$gmax" "$first" "$trials" "$never" "$OTHER")
    echo "run $RUN_SEQ (round $round): what GETs got before the 200: $(awk -F'\t' '$1 == "route_seen" { print $2 }' "$o")" >>"$ROUTE_SEEN"
}

# ---------------------------------------------------------------------------------------
# Phase 3: per-request cost, config against cloud endpoint
# ---------------------------------------------------------------------------------------
RAW_L=$WORK/raw-load.tsv
printf 'round\tsystem\treq_s\tp99_us\trequests\terrors\tedge_ticks\tcpu_us_per_req\twrk_cpu_pct\tother_load_pct\n' >"$RAW_L"
host_of() { if [[ $1 == config* ]]; then echo "$CFG_HOST"; else echo "$CLOUD_HOST"; fi; }

run_load_once() {
    local round=$1 s=$2 discard=${3:-}
    local url=http://127.0.0.1:$HTTP_PORT/ out=$WORK/out.txt tfile=$WORK/time.txt d=$DURATION host
    local t0 t1 ss0 ss1 cs0 cs1 rps p99 reqs errs cpu wrkcpu
    host=$(host_of "$s")
    [[ -n $discard ]] && d=$WARMUP
    t0=$(cpu_ticks "$EDGE_PID")
    ss0=$(cpu_stat "$SERVER_CPU")
    cs0=$(cpu_stat "$CLIENT_CPU")
    local TIMEFORMAT='%R %U %S'
    { time taskset -c "$CLIENT_CPU" timeout $((d + 30)) \
        wrk -t1 -c"$CONNS" -d"${d}s" --latency -H "Host: $host" "$url" >"$out" 2>&1; } 2>"$tfile" ||
        die "wrk failed against $s: $(cat "$out")"
    t1=$(cpu_ticks "$EDGE_PID")
    ss1=$(cpu_stat "$SERVER_CPU")
    cs1=$(cpu_stat "$CLIENT_CPU")
    [[ -n $discard ]] && return 0
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
    errs=$(wrk_errors "$out")
    [[ $reqs =~ ^[0-9]+$ && $reqs -gt 0 ]] || die "wrk against $s: could not parse request count: $(cat "$out")"
    cpu=$(per_req $((t1 - t0)) "$reqs")
    wrkcpu=$(awk '{ if ($1 > 0) printf "%.0f", ($2 + $3) / $1 * 100; else print "nan" }' "$tfile")
    OTHER=$(other_load_pct "$ss0" "$ss1" "$cs0" "$cs1" $((t1 - t0)) "$tfile")
    ROW=$(printf '%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$s" "$rps" "$p99" "$reqs" "$errs" $((t1 - t0)) "$cpu" "$wrkcpu" "$OTHER")
    LINE=$(printf '  round %s  %-12s %7.0f req/s  p99 %8s µs  cpu %6s µs/req  wrk %3s%%  other %4s%%  errors %s' \
        "$round" "$s" "$rps" "$p99" "$cpu" "$wrkcpu" "$OTHER" "$errs")
    { echo "### round $round $s (Host: $host, other load $OTHER%)"; cat "$out"; } >>"$WORK/tool-output.txt"
}

# load_block SYSTEM...: a warm-up per system, then ROUNDS rounds, rotating the order.
load_block() {
    local sys=("$@") n=$# round i s order
    log "warm-up (${WARMUP}s per system)"
    for s in "${sys[@]}"; do run_with_retries discard run_load_once 0 "$s" discard; done
    for round in $(seq "$ROUNDS"); do
        log "load round $round/$ROUNDS: ${sys[*]}"
        order=()
        for i in $(seq 0 $((n - 1))); do order+=("${sys[$(((i + round - 1) % n))]}"); done
        RAW=$RAW_L
        for s in "${order[@]}"; do run_with_retries "" run_load_once "$round" "$s"; done
    done
}

# ---------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------
SYSTEMS=(config cloud)
((EXTRA > 0)) && SYSTEMS+=("config+$EXTRA" "cloud+$EXTRA")
nsys=${#SYSTEMS[@]}
est=$((ROUNDS * nsys * (DURATION + 1) + nsys * (WARMUP + 1) + ROUNDS * (N + M) / 40 + EXTRA / 40 + 10))
log "N=$N M=$M EXTRA=$EXTRA ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS WORKERS=$WORKERS; about $((est / 60 + 1)) min plus the quiet-machine waits"

log "waiting for an idle machine (up to ${QUIET_WAIT}s)"
wait_quiet "$QUIET_WAIT"
log "phase 1: API write latency (warm-up: $((N < WARM_WRITES ? N : WARM_WRITES)) calls, not recorded)"
run_with_retries discard run_writes 0 discard
for round in $(seq "$ROUNDS"); do
    log "phase 1 round $round/$ROUNDS: $N x POST, GET, DELETE /endpoints"
    RAW=$RAW_W
    run_with_retries "" run_writes "$round"
done

log "phase 2: write -> first routed request"
run_with_retries discard run_route 0 discard
for round in $(seq "$ROUNDS"); do
    log "phase 2 round $round/$ROUNDS: $M x POST then GET until 200"
    RAW=$RAW_R
    run_with_retries "" run_route "$round"
done

log "phase 3: config against cloud endpoint (waiting for an idle machine, up to ${QUIET_WAIT}s)"
wait_quiet "$QUIET_WAIT"
load_block config cloud
EXTRA_NOTE=""
if ((EXTRA > 0)); then
    log "creating $EXTRA more cloud endpoints"
    client create "$WORK/extra" --count "$EXTRA" --prefix "extra-" --policy-file "$POLICY" --ids-out "$WORK/extra.ids"
    IFS=$'\t' read -r _ _ _ xp50 _ xp99 _ _ xl50 _ xwall <<<"$(stats_of "$WORK/extra")"
    EXTRA_NOTE="$EXTRA cloud endpoints created in ${xwall}s (p50 $xp50 ms, p99 $xp99 ms, last 50 p50 $xl50 ms)"
    echo "--- $EXTRA_NOTE" >>"$CHECKS"
    for h in "$CFG_HOST" "$CLOUD_HOST" "extra-$((EXTRA - 1)).$DOMAIN"; do
        [[ $(curl -sS --max-time 5 -H "Host: $h" "http://127.0.0.1:$HTTP_PORT/") == "$BODY" ]] ||
            die "Host: $h does not answer the policy's body with $EXTRA more endpoints"
    done
    wait_quiet "$QUIET_WAIT"
    load_block "config+$EXTRA" "cloud+$EXTRA"
fi
kill -0 "$EDGE_PID" 2>/dev/null || die "the edge (pid $EDGE_PID) died during the run"

# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
col_max() { awk -F'\t' -v c="$1" '$c > m { m = $c } END { print m + 0 }'; }
w_rows() { awk -F'\t' -v s="$1" 'NR > 1 && $2 == s' "$RAW_W"; }
l_rows() { awk -F'\t' -v s="$1" 'NR > 1 && $2 == s' "$RAW_L"; }
r_rows() { awk 'NR > 1' "$RAW_R"; }
f2() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }'; }

declare -A MED=()
for op in create get delete; do
    for c in 3 4 5 6 8 9 10 11; do MED[$op.$c]=$(w_rows "$op" | median "$c"); done
    MED[$op.max]=$(w_rows "$op" | col_max 7)
    MED[$op.other]=$(w_rows "$op" | col_max 13)
done
for c in 3 4 5 6 7 8 9; do MED[route.$c]=$(r_rows | median "$c"); done
MED[route.gmax]=$(r_rows | col_max 10)
MED[route.first]=$(r_rows | awk -F'\t' '{ s += $11 } END { print s + 0 }')
MED[route.never]=$(r_rows | awk -F'\t' '{ s += $12 } END { print s + 0 }')
MED[route.trials]=$(r_rows | awk -F'\t' '{ s += $2 } END { print s + 0 }')
MED[route.other]=$(r_rows | col_max 14)
for s in "${SYSTEMS[@]}"; do
    MED[$s.rps]=$(l_rows "$s" | median 3)
    MED[$s.p99]=$(l_rows "$s" | median 4)
    MED[$s.cpu]=$(l_rows "$s" | median 8)
    MED[$s.client]=$(l_rows "$s" | median 9)
    MED[$s.other]=$(l_rows "$s" | col_max 10)
    MED[$s.err]=$(l_rows "$s" | awk -F'\t' '{ e += $6 } END { print e + 0 }')
done
PAIRS=("cloud config")
((EXTRA > 0)) && PAIRS+=("cloud+$EXTRA config+$EXTRA" "cloud+$EXTRA cloud" "config+$EXTRA config")

SUMMARY=$WORK/summary.md
{
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`N=$N M=$M EXTRA=$EXTRA ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS bench/api_compare.sh\`"
    echo
    echo "One \`ringress edge --dev\` ($WORKERS worker(s), [observe] $OBSERVE) pinned to CPU $SERVER_CPU; the clients (Python http.client, one keep-alive connection; wrk -t1 -c$CONNS) to CPU $CLIENT_CPU. Store: $DATA_FS. Medians of $ROUNDS round(s) (max: the largest); $NOISY_RETRIES run(s) repeated because other processes took more than $MAX_OTHER% of the CPU."
    echo
    echo "**API calls**, $N sequential calls of each kind per round: the k-th POST finds k-1 cloud endpoints besides \`$CLOUD_HOST\` (each write commits with fsync, then rebuilds the routing snapshot from every stored endpoint); DELETE goes oldest first, from $N endpoints down to 1."
    echo
    echo "| call | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | p50 first 50 (ms) | p50 last 50 (ms) | edge CPU µs/call | connections | other load % (max) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for op in create get delete; do
        case $op in create) label='POST /endpoints' ;; get) label='GET /endpoints/{id}' ;; delete) label='DELETE /endpoints/{id}' ;; esac
        echo "| $label | $(f2 "${MED[$op.4]}") | $(f2 "${MED[$op.5]}") | $(f2 "${MED[$op.6]}") | $(f2 "${MED[$op.max]}") | $(f2 "${MED[$op.8]}") | $(f2 "${MED[$op.9]}") | $(fmt0 "${MED[$op.10]}") | $(fmt0 "${MED[$op.11]}") | ${MED[$op.other]} |"
    done
    echo
    echo "**Write → first routed request**, $M trials per round: POST a cloud endpoint, then \`GET /\` with its Host on a fresh connection until its 200 (at most ${ROUTE_WAIT}s)."
    echo
    echo "| interval | p50 (ms) | p99 (ms) |"
    echo "|---|---:|---:|"
    echo "| POST sent → first 200 | $(f2 "${MED[route.3]}") | $(f2 "${MED[route.4]}") |"
    echo "| POST reply → first 200 | $(f2 "${MED[route.5]}") | $(f2 "${MED[route.6]}") |"
    echo "| POST alone | $(f2 "${MED[route.7]}") | $(f2 "${MED[route.8]}") |"
    echo
    echo "GETs per endpoint: mean $(f2 "${MED[route.9]}") (median of the rounds), max ${MED[route.gmax]}; the first GET got the 200 in ${MED[route.first]} of ${MED[route.trials]} trials; ${MED[route.never]} never routed within ${ROUTE_WAIT}s. Other load % (max): ${MED[route.other]}."
    echo
    echo "**Per request**: \`$CFG_HOST\` (config file) and \`$CLOUD_HOST\` (API), the same custom-response policy text (200, 100-byte body), wrk ${DURATION}s per run$( ((EXTRA > 0)) && echo "; +$EXTRA: with $EXTRA more cloud endpoints in the snapshot")."
    echo
    echo "| endpoint | req/s | p99 (ms) | edge CPU µs/req | wrk CPU % | other load % (max) | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for s in "${SYSTEMS[@]}"; do
        echo "| $s | $(fmt0 "${MED[$s.rps]}") | $(fmt_ms "${MED[$s.p99]}") | $(f2 "${MED[$s.cpu]}") | $(fmt0 "${MED[$s.client]}") | ${MED[$s.other]} | ${MED[$s.err]} |"
    done
    echo
    echo "| ratio | req/s | p99 | CPU/req |"
    echo "|---|---:|---:|---:|"
    for p in "${PAIRS[@]}"; do
        read -r x y <<<"$p"
        echo "| $x / $y | $(ratio "${MED[$x.rps]}" "${MED[$y.rps]}") | $(ratio "${MED[$x.p99]}" "${MED[$y.p99]}") | $(ratio "${MED[$x.cpu]}" "${MED[$y.cpu]}") |"
    done
    echo
    c=$(ratio "${MED[cloud.cpu]}" "${MED[config.cpu]}")
    v=missed
    if at_most "$c" "$TARGET_CPU"; then v=met; elif at_most "$c" "$TARGET_NOISE"; then v="met within noise (<= ${TARGET_NOISE}x)"; fi
    echo "Target: a cloud endpoint costs no more CPU per request than the same config endpoint (cloud / config <= ${TARGET_CPU}x): ${c}x, $v."
    [[ -z $ANSWERS_DIFFER ]] || { echo; echo "Note: the two endpoints' response heads differ (besides Date): $ANSWERS_DIFFER"; }
} >"$SUMMARY"

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/api-$(date -u +%Y%m%d-%H%M%S).txt
{
    echo "# bench/api_compare.sh results"
    echo "date:     $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "command:  N=$N M=$M EXTRA=$EXTRA ROUNDS=$ROUNDS DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS WARMUP=$WARMUP OBSERVE=$OBSERVE MAX_OTHER=$MAX_OTHER NOISE_RETRIES=$NOISE_RETRIES bench/api_compare.sh"
    echo "git:      $GIT_STATE (at start)"
    echo "binary:   $BIN_STATE"
    echo "kernel:   $(uname -srm)"
    echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) x $NCPU; server CPU $SERVER_CPU, client CPU $CLIENT_CPU; CLK_TCK $CLK_TCK"
    echo "store:    $DATA_FS"
    echo "ringress: ${READY_LINE:-no ready line seen} (log level $RINGRESS_LOG_LEVEL)"
    echo "versions: $("$PYTHON" --version 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 || true)"
    echo
    echo "## summary (medians)"
    cat "$SUMMARY"
    echo
    echo "## raw runs: API calls"
    column -t -s $'\t' "$RAW_W"
    echo
    echo "## p50 per 50 calls (the k-th POST finds k-1 other cloud endpoints; DELETE goes from N down)"
    cat "$WORK/trend.txt"
    echo
    echo "## raw runs: write -> first routed request"
    column -t -s $'\t' "$RAW_R"
    cat "$ROUTE_SEEN"
    echo
    echo "## raw runs: per request"
    column -t -s $'\t' "$RAW_L"
    echo
    echo "## checks"
    cat "$CHECKS"
    echo
    echo "## configs"
    for f in "$WORK/edge.toml" "$POLICY"; do
        echo "--- ${f#"$WORK"/}"
        cat "$f"
    done
    echo
    echo "## edge log (stderr: first 15 and last 25 lines, $(wc -l <"$WORK/edge.err") in all; the key redacted)"
    head -15 "$WORK/edge.err" | redact
    echo "..."
    tail -25 "$WORK/edge.err" | redact
    echo "warnings and errors: $(grep -cE ' (WARN|ERROR) ' "$WORK/edge.err" || true)"
    grep -E ' (WARN|ERROR) ' "$WORK/edge.err" | redact | head -20 || true
    echo
    echo "## tool output"
    cat "$WORK/tool-output.txt"
} >"$OUT"
cp "$OUT" "$RESULTS_DIR/api-latest.txt"

echo
cat "$SUMMARY"
echo
echo "raw results: $OUT (also bench/results/api-latest.txt)"
