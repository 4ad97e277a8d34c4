#!/usr/bin/env bash
# Helpers shared by the side-by-side scripts (compare.sh, tls_compare.sh, tunnel_compare.sh,
# policy_compare.sh):
# port picking, process trees and their CPU time from /proc, readiness, quiet-machine
# waits, and small formatting helpers. Sourced, never run; the callers
# define the globals these use (WORK, PIDS, CLK_TCK, ...).

# Busy share of both CPUs over a short window, in percent (for the quiet-machine check).
busy_pct() {
    local a b
    a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    sleep "${1:-1}"
    b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; printf "%.0f", (t > 0 ? (y[1] - x[1]) / t * 100 : 0) }'
}

# One CPU's line of /proc/stat as "busy irq_softirq total" ticks (steal counts as busy:
# the hypervisor took the time).
cpu_stat() {
    awk -v c="cpu$1" '$1 == c { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, $7 + $8, busy + $5 + $6 }' /proc/stat
}

# utime+stime (fields 14 and 15 of /proc/PID/stat, clock ticks) over all processes of
# the given servers. The comm field may contain spaces: cut after the last ')'.
cpu_ticks() {
    local total=0 root p line
    local -a f
    for root in "$@"; do
        for p in $(proc_tree "$root"); do
            line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
            read -ra f <<<"${line##*) }" # f[0] is field 3
            total=$((total + f[11] + f[12]))
        done
    done
    echo "$total"
}

fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v / 1000 }'; }

log() { echo "== $*" >&2; }

pick_port() {
    local p
    for _ in $(seq 200); do
        p=$((PORT_BASE + RANDOM % PORT_SPAN))
        [[ -n ${TAKEN[$p]:-} ]] && continue
        if [[ -z $(ss -Htan "( sport = :$p )") ]]; then
            TAKEN[$p]=1
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# All processes (pid and descendants) of a started server.
proc_tree() {
    local pid=$1 child
    [[ -d /proc/$pid ]] || return 0
    echo "$pid"
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null || true); do proc_tree "$child"; done
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

# start NAME CMD...: runs CMD pinned to SERVER_CPU; sets STARTED_PID (taskset execs).
start() {
    local name=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

wait_listening() {
    local port=$1 pid=$2 name=$3
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2 || true; die "$name (pid $pid) exited during startup"; }
        [[ -n $(ss -Hltn "( sport = :$port )") ]] && return 0
        sleep 0.05
    done
    cat "$WORK/$name.err" >&2 || true
    die "$name did not listen on port $port within 10s"
}

# Other work on the machine (a cargo build, a test suite) ruins the numbers: wait until
# three 2-second samples in a row are under 5% busy, at most $1 seconds, then go on with
# a warning. The servers are idle whenever this runs.
wait_quiet() {
    local limit=$1 waited=0 quiet=0 busy
    while ((quiet < 3)); do
        busy=$(busy_pct 2)
        waited=$((waited + 2))
        if ((busy <= 5)); then quiet=$((quiet + 1)); else quiet=0; fi
        if ((quiet < 3 && waited >= limit)); then
            echo "warning: the machine was not idle for 6 s in a row within ${limit}s (last sample ${busy}% busy); numbers may be noisy. Top processes:" >&2
            ps -eo pid,pcpu,comm --sort=-pcpu | head -6 >&2
            return 0
        fi
    done
}

# bench_prepare NAME: the common start of every side-by-side script. Checks the CPU
# choice, raises the soft fd limit to the hard one (every server inherits it), and
# makes WORK (a temporary directory) and PIDS; on exit, only the PIDs the script
# started are signalled and WORK is removed (kept with KEEP_WORK=1).
bench_prepare() {
    BENCH_NAME=$1
    NCPU=$(nproc --all)
    ((SERVER_CPU < NCPU && CLIENT_CPU < NCPU)) || die "SERVER_CPU/CLIENT_CPU must be < $NCPU"
    ((SERVER_CPU != CLIENT_CPU)) || echo "warning: servers and load generator share CPU $SERVER_CPU" >&2
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    WORK=$(mktemp -d "/tmp/ringress-${BENCH_NAME%.sh}.XXXXXX")
    chmod 755 "$WORK" # nginx workers may drop to 'nobody'
    PIDS=()
    trap bench_cleanup EXIT
    # shellcheck disable=SC2016 # expanded when the trap runs
    trap 'echo "$BENCH_NAME: line $LINENO: command failed: $BASH_COMMAND" >&2' ERR
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_started "$BENCH_NAME"
    if ((KEEP_WORK)); then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}

# run_with_retries DISCARD CMD...: runs CMD (a script's run_once, which sets OTHER, ROW
# and LINE). For a measured run (DISCARD empty), a run whose foreign load exceeded
# MAX_OTHER % is repeated after waiting for quiet, up to NOISE_RETRIES times; the last
# attempt is kept either way (its foreign load is in the table) and its ROW appended to
# RAW. Warm-up runs (DISCARD set) run once and record nothing.
run_with_retries() {
    local discard=$1 attempt
    shift
    if [[ -n $discard ]]; then
        "$@"
        return
    fi
    for attempt in $(seq 0 "$NOISE_RETRIES"); do
        "$@"
        if ((attempt == NOISE_RETRIES)) || awk -v o="$OTHER" -v m="$MAX_OTHER" 'BEGIN { exit !(o <= m) }'; then
            break
        fi
        echo "$LINE  -> noisy, retrying" >&2
        NOISY_RETRIES=$((NOISY_RETRIES + 1))
        wait_quiet 30
    done
    printf '%s\n' "$ROW" >>"$RAW"
    echo "$LINE" >&2
}


# Ports are picked below the ephemeral range, so client sockets never take them; sets
# PORT_BASE and PORT_SPAN for pick_port.
init_port_range() {
    local lo
    read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
    if ((lo > 11024)); then
        PORT_BASE=$((lo - 10000)) PORT_SPAN=10000
    elif ((lo > 2048)); then
        PORT_BASE=1024 PORT_SPAN=$((lo - 1024))
    else # the ephemeral range covers everything: rely on the in-use check alone
        PORT_BASE=20000 PORT_SPAN=10000
    fi
}

# stop_started NAME: SIGTERM every PID in PIDS (and only those), SIGKILL after 5 s.
stop_started() {
    local name=$1 pid alive
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "$name: pid $pid ignored SIGTERM, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# check_listener_owner PORT ROOT...: fail unless every process listening on PORT belongs
# to the process tree of one of the ROOTs (a stale SO_REUSEPORT listener would silently
# take a share of the connections).
check_listener_owner() {
    local port=$1 owners p mine=" " root
    shift
    owners=$(ss -Hltnp "( sport = :$port )" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true)
    [[ -n $owners ]] || die "nothing listens on port $port"
    for root in "$@"; do mine+="$(proc_tree "$root" | tr '\n' ' ')"; done
    for p in $owners; do
        [[ $mine == *" $p "* ]] || die "port $port is also owned by pid $p, not started by this script: $(ss -Hltnp "( sport = :$port )")"
    done
}

to_us() { # "1.23ms" / "850.00us" / "1.2s" -> microseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 0
        if (m == 0) print "nan"; else printf "%.1f", n * m }'
}

median() { # column number; reads TSV rows on stdin ("-" and "nan" are skipped)
    awk -F'\t' -v c="$1" '$c != "-" && $c != "nan" { print $c }' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

nginx_common() { # $1 = dir
    cat <<NGINX
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile ${NGINX_RLIMIT_NOFILE:-16384};
NGINX
}
nginx_http_common() { # $1 = dir
    cat <<NGINX
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
NGINX
}

# The shared upstream of the proxy scenarios: nginx, one worker, keep-alive, a fixed 200
# with BODY. nginx_fixed_upstream_conf DIR PORT BODY [WORKER_CONNECTIONS [EXTRA]] >
# DIR/nginx.conf; EXTRA (optional) is printed inside http {} after the server, e.g. a
# second server block for checks (see nginx_echo_server).
nginx_fixed_upstream_conf() {
    nginx_common "$1"
    echo "worker_processes 1;"
    echo "events { worker_connections ${4:-4096}; }"
    echo "http {"
    nginx_http_common "$1"
    echo "    server { listen 127.0.0.1:$2; return 200 \"$3\"; }"
    [[ -z ${5:-} ]] || printf '%s\n' "$5"
    echo "}"
}

# wrk's "Socket errors: connect A, read B, write C, timeout D" plus non-2xx/3xx responses.
wrk_errors() { # $1 = wrk output file
    awk '/Non-2xx or 3xx responses:/ { e += $NF }
         /Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
         END { print e + 0 }' "$1"
}

# TCP connects made on the machine (Tcp ActiveOpens in /proc/net/snmp): the load
# generator's plus the systems' own; per request it shows connection churn.
active_opens() {
    awk '$1 == "Tcp:" && $2 ~ /^[0-9]+$/ { print $6; exit }' /proc/net/snmp
}

# nginx_echo_server PORT HEADER...: a server block answering 200 with one line per
# request header named, "name=[value]" (empty brackets when absent), for checking what a
# front forwarded. Header names are lower case with dashes.
nginx_echo_server() {
    local port=$1 h body=""
    shift
    for h in "$@"; do body+="$h=[\$http_${h//-/_}] "; done
    echo "    server { listen 127.0.0.1:$port; return 200 \"${body% }\"; }"
}

# wait_for_line FILE PATTERN COUNT PID NAME: until FILE has COUNT lines matching PATTERN
# (at most 15 s); fails when PID exits first.
wait_for_line() {
    local file=$1 pattern=$2 count=$3 pid=$4 name=$5 n
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2 || true; die "$name (pid $pid) exited during startup"; }
        n=$(grep -c -- "$pattern" "$file" 2>/dev/null || true)
        ((${n:-0} >= count)) && return 0
        sleep 0.05
    done
    cat "$WORK/$name.err" >&2 || true
    die "$name: no $count line(s) matching '$pattern' in $file within 15s"
}

per_req() { # ticks requests -> µs per request (uses CLK_TCK)
    awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }'
}
fmt0() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.0f", v }'; }
fmt1() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.1f", v }'; }
fmt2() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }'; }

# other_load_pct SERVER_STAT0 SERVER_STAT1 CLIENT_STAT0 CLIENT_STAT1 MINE_TICKS TIMEFILE:
# busy time on both CPUs (cpu_stat lines before/after) not charged to the measured
# processes (MINE_TICKS) or the load generator (TIMEFILE: bash `time` as "%R %U %S"), as a
# percentage of the run's CPU time.
other_load_pct() {
    awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" -v mine="$5" -v hz="$CLK_TCK" -v tf="$(cat "$6")" 'BEGIN {
        split(a, s0, " "); split(b, s1, " "); split(c, c0, " "); split(d, c1, " "); split(tf, t, " ")
        busy = (s1[1] - s0[1]) + (c1[1] - c0[1])
        total = (s1[3] - s0[3]) + (c1[3] - c0[3])
        other = busy - mine - (t[2] + t[3]) * hz
        if (other < 0) other = 0
        printf "%.1f\n", (total > 0 ? other / total * 100 : 0) }'
}

# at_least / at_most VALUE LIMIT: exit status for target checks ("-" fails).
at_least() { awk -v v="$1" -v l="$2" 'BEGIN { exit !(v != "-" && v + 0 >= l + 0) }'; }
at_most() { awk -v v="$1" -v l="$2" 'BEGIN { exit !(v != "-" && v + 0 <= l + 0) }'; }
