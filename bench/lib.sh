#!/usr/bin/env bash
# Helpers shared by bench/compare.sh and bench/tls_compare.sh: port picking,
# process trees and their CPU time from /proc, readiness, quiet-machine
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
