#!/usr/bin/env bash
# Fuzz campaigns for ringress (docs/reliability.md, "Fuzzing").
#
#   fuzz/run.sh [--runs N] [--seconds S] [--dev] [TARGET...]
#
# Builds the cargo-fuzz targets (stable Rust: --sanitizer none, release with
# debug assertions) and runs each TARGET (default: all seven) for N
# executions (default 10,000,000) or S seconds, whichever ends first, under
# `nice -n 19`. New inputs go to fuzz/corpus-work/TARGET (not committed);
# the committed seeds in fuzz/corpus/TARGET are read only. Crashes land in
# fuzz/artifacts/TARGET/. One summary line per target goes to
# fuzz/results/summary.txt (and stdout): executions, seconds, exec/s,
# coverage (cov, ft), corpus size, peak RSS, and crashed or not. Inputs
# that take more than a second are kept as fuzz/artifacts/TARGET/slow-unit-*
# and named in the summary (libFuzzer's -report_slow_units=1); the run
# goes on, and only -timeout=10 ends it.
# Exits non-zero if any target crashed.
#
# --dev builds without optimisations (cargo fuzz --dev): far quicker to
# compile, slower to run; scripts/test.sh uses it for its short run
# (`fuzz/run.sh --dev --seconds 3`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

runs=10000000
seconds=0
dev=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --dev) dev=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(http1_head chunked muxado_frame muxado_core ngrok_messages policy_document cel_compile)
fi

dict_for() {
    case "$1" in
        http1_head|chunked) echo "-dict=dict/http.dict" ;;
        policy_document|cel_compile) echo "-dict=dict/cel.dict" ;;
        *) echo "" ;;
    esac
}

mkdir -p results
summary=results/summary.txt
flags=(--sanitizer none -O)
[ "$dev" = 1 ] && flags=(--sanitizer none --dev)

build_start=$(date +%s)
for t in "${targets[@]}"; do
    nice -n 19 cargo fuzz build "${flags[@]}" "$t" >results/build.log 2>&1 ||
        { tail -n 30 results/build.log >&2; echo "fuzz/run.sh: build of $t failed" >&2; exit 1; }
done
echo "built ${#targets[@]} target(s) in $(($(date +%s) - build_start)) s (${flags[*]})"

failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus-work/$t" "artifacts/$t"
    log="results/$t.log"
    limits=(-runs="$runs")
    [ "$seconds" != 0 ] && limits+=(-max_total_time="$seconds")
    dict=$(dict_for "$t")
    start=$(date +%s)
    rc=0
    # shellcheck disable=SC2086 # $dict is one flag or nothing
    nice -n 19 cargo fuzz run "${flags[@]}" "$t" "corpus-work/$t" "corpus/$t" -- \
        "${limits[@]}" $dict -timeout=10 -report_slow_units=1 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || rc=$?
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    verdict=ok
    slowest=$(sed -n 's/^Slowest unit: \([0-9]*\) s.*/\1/p' "$log" | tail -n 1)
    [ -n "$slowest" ] && verdict="ok, slowest input ${slowest} s (fuzz/artifacts/$t/slow-unit-*)"
    if [ "$rc" -ne 0 ]; then
        verdict="CRASH (exit $rc, see fuzz/$log and fuzz/artifacts/$t/)"
        failed=1
    fi
    line=$(printf '%s %-16s execs=%s secs=%s exec/s=%s cov=%s ft=%s corpus=%s rss_mb=%s %s' \
        "$(date -u +%FT%TZ)" "$t" "${execs:-?}" "$secs" "${eps:-?}" "${cov:-?}" "${ft:-?}" \
        "${corp:-?}" "${rss:-?}" "$verdict")
    echo "$line"
    echo "$line" >>"$summary"
done
exit "$failed"
