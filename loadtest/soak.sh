#!/usr/bin/env bash
# Soak of the ringress edge: mixed traffic (keep-alive and new-connection GETs,
# WebSockets, 4 MiB downloads, HTTPS through the ngrok Python SDK and our agent),
# agent churn (our agent SIGKILLed and restarted every 3 s, the SDK every 15 s) and a
# zero-downtime upgrade of the edge in the middle. Fails on any response that is not
# correct or a clean edge error on a churned agent's URL, or on RSS growth.
#
#   loadtest/soak.sh                 # 30 minutes
#   DURATION=2h loadtest/soak.sh     # any humantime duration
#   PROFILE=release loadtest/soak.sh # optimised binaries (longer build)
#
# The test itself is tests/soak.rs (the test suite runs it for 90 s). Everything runs
# on loopback; children are cleaned up by PID by the test harness.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-30m}"
PROFILE="${PROFILE:-dev}"
args=()
[ "$PROFILE" = release ] && args+=(--release)
echo "soak: ${DURATION} (profile ${PROFILE}), started $(date -u +%FT%TZ)" >&2
set +e
SOAK_DURATION="$DURATION" nice -n "${NICE:-10}" \
    cargo test ${args[@]+"${args[@]}"} --test soak -- --nocapture --test-threads 1 2>&1 |
    grep --line-buffered -E -A3 '^soak:|^test |panicked|failures|RSS'
status=${PIPESTATUS[0]}
set -e
echo "soak: finished $(date -u +%FT%TZ), exit ${status}" >&2
exit "$status"
