#!/usr/bin/env bash
# The main job: build ringress, start a demo upstream and an edge on
# loopback, print working URLs, and run until Ctrl-C. Stops only the
# processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_PORT=${RINGRESS_HTTP_PORT:-8080}
UPSTREAM_PORT=${RINGRESS_DEMO_UPSTREAM_PORT:-9000}

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required for the demo upstream"; exit 1; }
echo "building ringress (release)..."
cargo build --release --quiet

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

python3 -m http.server "$UPSTREAM_PORT" --bind 127.0.0.1 --directory examples/site >/dev/null 2>&1 &
pids+=($!)

config=$(mktemp -t ringress-edge.XXXXXX.toml)
sed -e "s/127.0.0.1:8080/127.0.0.1:${HTTP_PORT}/" -e "s/127.0.0.1:9000/127.0.0.1:${UPSTREAM_PORT}/" examples/edge.toml >"$config"
log=$(mktemp -t ringress-edge.XXXXXX.log)
./target/release/ringress edge --config "$config" 2>"$log" &
pids+=($!)

for _ in $(seq 1 100); do
  grep -q "ringress edge ready" "$log" && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.1
done
grep -q "ringress edge ready" "$log" || { cat "$log"; echo "edge did not start"; exit 1; }
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:${UPSTREAM_PORT}/" && break
  sleep 0.1
done

cat <<MSG

ringress edge is running (log: $log)

  Forwarding   http://app.ringress.localhost:${HTTP_PORT}  ->  http://127.0.0.1:${UPSTREAM_PORT}
  Cloud        http://hello.ringress.localhost:${HTTP_PORT}  ->  custom-response "Hello world!"

Try:
  curl http://app.ringress.localhost:${HTTP_PORT}/
  curl http://hello.ringress.localhost:${HTTP_PORT}/

(*.localhost resolves to loopback in curl and browsers.) Ctrl-C stops everything.
MSG
curl -s "http://app.ringress.localhost:${HTTP_PORT}/" | grep -o "<h1>.*</h1>" || true
wait "${pids[1]}"
