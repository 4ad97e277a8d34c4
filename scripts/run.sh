#!/usr/bin/env bash
# The main job: build ringress, start a demo upstream and an edge on
# loopback, print working URLs, and run until Ctrl-C. Stops only the
# processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_PORT=${RINGRESS_HTTP_PORT:-8080}
HTTPS_PORT=${RINGRESS_HTTPS_PORT:-8443}
DATA_DIR=${RINGRESS_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/ringress}
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
sed -e "s/127.0.0.1:8080/127.0.0.1:${HTTP_PORT}/" -e "s/127.0.0.1:8443/127.0.0.1:${HTTPS_PORT}/" \
    -e "s/127.0.0.1:9000/127.0.0.1:${UPSTREAM_PORT}/" examples/edge.toml >"$config"
log=$(mktemp -t ringress-edge.XXXXXX.log)
./target/release/ringress edge --dev --data-dir "$DATA_DIR" --config "$config" 2>"$log" &
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

  Forwarding   https://app.ringress.localhost:${HTTPS_PORT}  ->  http://127.0.0.1:${UPSTREAM_PORT}
  Forwarding   http://app.ringress.localhost:${HTTP_PORT}    ->  http://127.0.0.1:${UPSTREAM_PORT}
  Cloud        https://hello.ringress.localhost:${HTTPS_PORT}  ->  custom-response "Hello world!"

Try:
  curl --cacert ${DATA_DIR}/ca.pem https://app.ringress.localhost:${HTTPS_PORT}/
  curl http://hello.ringress.localhost:${HTTP_PORT}/

The dev CA is ${DATA_DIR}/ca.pem (import it in a browser to trust the https URLs).

(*.localhost resolves to loopback in curl and browsers.) Ctrl-C stops everything.
MSG
curl -s --cacert "${DATA_DIR}/ca.pem" "https://app.ringress.localhost:${HTTPS_PORT}/" | grep -o "<h1>.*</h1>" || true
wait "${pids[1]}"
