#!/usr/bin/env bash
# The main job: build ringress, start a `--dev` edge and an agent on
# loopback (the agent exposes the demo site with its built-in file server,
# like `ngrok http file:///...`), print the public URL and a curl command
# that works, and run until Ctrl-C. Stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_PORT=${RINGRESS_HTTP_PORT:-8080}
HTTPS_PORT=${RINGRESS_HTTPS_PORT:-8443}
TUNNEL_PORT=${RINGRESS_TUNNEL_PORT:-4443}
DATA_DIR=${RINGRESS_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/ringress}
UPSTREAM_PORT=${RINGRESS_DEMO_UPSTREAM_PORT:-9000}
API_PORT=${RINGRESS_API_PORT:-4444}

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
./target/release/ringress edge --dev --data-dir "$DATA_DIR" --config "$config" \
  --listen-tunnel "127.0.0.1:${TUNNEL_PORT}" --listen-api "127.0.0.1:${API_PORT}" 2>"$log" &
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

# The agent: a public HTTPS URL for the demo site, through the tunnel.
agent_out=$(mktemp -t ringress-agent.XXXXXX.out)
agent_log=$(mktemp -t ringress-agent.XXXXXX.log)
./target/release/ringress http "file://$PWD/examples/site" \
  --server-addr "localhost:${TUNNEL_PORT}" --root-cas "${DATA_DIR}/ca.pem" >"$agent_out" 2>"$agent_log" &
pids+=($!)
url=""
for _ in $(seq 1 100); do
  url=$(grep -m1 "://" "$agent_out" || true)
  [ -n "$url" ] && break
  if ! kill -0 "${pids[2]}" 2>/dev/null; then cat "$agent_log"; exit 1; fi
  sleep 0.1
done
[ -n "$url" ] || { cat "$agent_log"; echo "agent did not come online"; exit 1; }
inspector=$(grep -o -m1 'inspector listening on http://[0-9.:]*' "$agent_log" | sed 's/.* on //' || true)
api_key=$(grep -o -m1 'bootstrap API key (shown once, keep it): .*' "$log" | sed 's/.*: //' || true)
if [ -n "$api_key" ]; then
  key_note="key: ${api_key} (shown once: keep it)"
else
  key_note="key: the one printed on the first start; a new one: ringress api-key create --data-dir ${DATA_DIR}"
fi

cat <<MSG

ringress is running: an edge (log: $log) and an agent (log: $agent_log)

  Agent URL    ${url}  ->  file://$PWD/examples/site

Try:
  curl --cacert ${DATA_DIR}/ca.pem ${url}/

More endpoints the edge serves from its config (examples/edge.toml):
  Forwarding   https://app.ringress.localhost:${HTTPS_PORT}  ->  http://127.0.0.1:${UPSTREAM_PORT}
  Forwarding   http://app.ringress.localhost:${HTTP_PORT}    ->  http://127.0.0.1:${UPSTREAM_PORT}
  Cloud        https://hello.ringress.localhost:${HTTPS_PORT}  ->  custom-response "Hello world!"

  curl http://hello.ringress.localhost:${HTTP_PORT}/

Watch and replay the agent's requests: ${inspector:-http://127.0.0.1:4040}
The REST API (ngrok-shaped): http://127.0.0.1:${API_PORT}  ${key_note}
  ringress api endpoints list --api-url http://127.0.0.1:${API_PORT} --api-key <key>

The dev CA is ${DATA_DIR}/ca.pem (import it in a browser to trust the https URLs).

(*.localhost resolves to loopback in curl and browsers.) Ctrl-C stops everything.
MSG
curl -s --cacert "${DATA_DIR}/ca.pem" "${url}/" | grep -o "<h1>.*</h1>" || true
wait "${pids[1]}"
