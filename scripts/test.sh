#!/usr/bin/env bash
# The project's single test command (documented in the README; CI runs it
# through .ci/run). It installs the system tools the tests and benches need,
# only when they are missing, then runs: rustfmt check, clippy with warnings
# as errors, and the whole test suite (unit + integration; the integration
# tests start real nginx and curl, and tests/legacy_driver.rs covers the
# epoll fallback by setting MONOIO_FORCE_LEGACY_DRIVER itself).
# Exits non-zero on the first failing step and prints the time of each step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

total_start=$(date +%s)
timings=()

step() {
    local name="$1"
    shift
    echo "==> ${name}: $*"
    local start end rc=0
    start=$(date +%s)
    "$@" || rc=$?
    end=$(date +%s)
    timings+=("$(printf '%-28s %4ss  %s' "${name}" "$((end - start))" "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")")")
    if [ "$rc" -ne 0 ]; then
        summary
        echo "scripts/test.sh: step '${name}' failed with exit code ${rc}" >&2
        exit "$rc"
    fi
}

summary() {
    echo
    echo "==> step timings"
    local t
    for t in "${timings[@]}"; do
        echo "    $t"
    done
    echo "    $(printf '%-28s %4ss' total "$(($(date +%s) - total_start))")"
}

# ---------------------------------------------------------------- tools

have() { command -v "$1" >/dev/null 2>&1; }

install_tools() {
    local missing=()
    have curl || missing+=(curl)
    { [ -x /usr/sbin/nginx ] || have nginx; } || missing+=(nginx)
    { [ -x /usr/sbin/haproxy ] || have haproxy; } || missing+=(haproxy)
    have wrk || missing+=(wrk)
    have h2load || missing+=(nghttp2-client)
    have pkg-config || missing+=(pkg-config)
    # ACME tests (tests/acme_pebble.rs); the package also ships pebble-challtestsrv.
    { [ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ]; } || missing+=(pebble)
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "all tools present (curl nginx haproxy wrk h2load pkg-config pebble)"
        return 0
    fi
    echo "missing: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if have sudo; then
            sudo=(sudo)
        else
            echo "not root and no sudo: cannot install ${missing[*]}" >&2
            return 1
        fi
    fi
    if ! have apt-get; then
        echo "no apt-get: install ${missing[*]} by hand" >&2
        return 1
    fi
    # Keep package scripts from starting services (nginx, haproxy) on
    # install; restore the previous policy afterwards.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        made_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q || rc=$?
    if [ "$rc" -eq 0 ]; then
        local pkgs=()
        local p
        for p in "${missing[@]}"; do
            if [ "$p" = nginx ]; then
                # nginx-light is the small build; newer Debian only has nginx.
                if apt-cache show nginx-light >/dev/null 2>&1; then
                    pkgs+=(nginx-light)
                else
                    pkgs+=(nginx)
                fi
            else
                pkgs+=("$p")
            fi
        done
        "${sudo[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}" || rc=$?
    fi
    if [ "$made_policy" -eq 1 ]; then
        "${sudo[@]}" rm -f "$policy"
    fi
    return "$rc"
}

step "install tools" install_tools

# The official ngrok Python SDK (tests/sdk_python.rs). 1.7.x declares
# Python >= 3.12 but its abi3 wheel runs on 3.10+.
install_ngrok_sdk() {
    if python3 -c "import ngrok" 2>/dev/null; then
        echo "ngrok Python SDK present"
        return 0
    fi
    have python3 || { echo "python3 is required for the SDK tests" >&2; return 1; }
    python3 -m pip --version >/dev/null 2>&1 || {
        echo "pip is missing; installing python3-pip"
        local sudo=()
        [ "$(id -u)" -ne 0 ] && sudo=(sudo)
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends python3-pip
    }
    python3 -m pip install --quiet --user --ignore-requires-python --break-system-packages 'ngrok==1.7.*' 2>/dev/null ||
        python3 -m pip install --quiet --user --ignore-requires-python 'ngrok==1.7.*'
}
step "install ngrok Python SDK" install_ngrok_sdk

# The official ngrok API client (PyPI `ngrok-api`, tests/api_client.rs) in
# its own venv: its module is also named `ngrok` and would shadow the SDK.
install_ngrok_api_client() {
    local venv="${RINGRESS_NGROK_API_VENV:-$HOME/.cache/ringress-ngrok-api-venv}"
    if "$venv/bin/python" -c "import ngrok; ngrok.Client" 2>/dev/null; then
        echo "ngrok-api client present in $venv"
        return 0
    fi
    python3 -m venv "$venv" 2>/dev/null || {
        local sudo=()
        [ "$(id -u)" -ne 0 ] && sudo=(sudo)
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install --quiet 'ngrok-api==0.19.0'
}
step "install ngrok-api client" install_ngrok_api_client

# The OpenID provider the OIDC end-to-end test runs (npm oidc-provider,
# pinned in tests/oidc/package-lock.json).
install_oidc_provider() {
    if [ -d tests/oidc/node_modules/oidc-provider ]; then
        echo "oidc-provider present"
        return 0
    fi
    if ! have npm; then
        local sudo=()
        [ "$(id -u)" -ne 0 ] && sudo=(sudo)
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends nodejs npm
    fi
    npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
}
step "install OIDC test provider" install_oidc_provider

# Edge observability tests (tests/observe_*.rs): headless Chromium driven by
# chromedriver for the edge and agent inspector pages, promtool for /metrics.
install_observe_tools() {
    local missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    have promtool || missing+=(prometheus)
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "all observe tools present (chromium chromedriver promtool)"
        return 0
    fi
    echo "missing: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        have sudo || { echo "not root and no sudo: cannot install ${missing[*]}" >&2; return 1; }
        sudo=(sudo)
    fi
    have apt-get || { echo "no apt-get: install ${missing[*]} by hand" >&2; return 1; }
    # prometheus's package would start the server: keep services down.
    local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q || rc=$?
    [ "$rc" -ne 0 ] || "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    [ "$made_policy" -eq 0 ] || "${sudo[@]}" rm -f "$policy"
    return "$rc"
}

step "install observe tools" install_observe_tools
# cargo-fuzz for the short fuzz run (fuzz/run.sh; docs/reliability.md).
# Builds on stable Rust with --sanitizer none.
install_cargo_fuzz() {
    if cargo fuzz --version >/dev/null 2>&1; then
        echo "cargo-fuzz present ($(cargo fuzz --version))"
        return 0
    fi
    cargo install cargo-fuzz --locked --version '^0.13'
}
if [ "${RINGRESS_FUZZ:-0}" = 1 ]; then
    step "install cargo-fuzz" install_cargo_fuzz
fi

# ---------------------------------------------------------------- checks

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
step "cargo build (tests)" cargo test --workspace --all-targets --no-run
step "cargo test" cargo test --workspace --all-targets --no-fail-fast
# The suite's short fuzz run is tests/fuzz_replay.rs (above: every corpus
# file plus 3,000 mutations per target through the same entry points, ~3 s).
# The coverage-guided libFuzzer run needs an instrumented build of every
# dependency (about 16 minutes on 2 cores), so it runs only on request:
# RINGRESS_FUZZ=1 scripts/test.sh (3 s per target); the long campaigns are
# fuzz/run.sh (docs/reliability.md).
if [ "${RINGRESS_FUZZ:-0}" = 1 ]; then
    step "fuzz (3 s per target)" fuzz/run.sh --dev --seconds 3
fi

summary
echo "scripts/test.sh: all steps passed"
