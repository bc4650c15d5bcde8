#!/usr/bin/env bash
# Installs everything memfdw needs to build, run and test, idempotently.
# Quick when everything is already present.
set -euo pipefail

PGRX_VERSION="0.18.1"
PG_CONFIG=/usr/bin/pg_config

need_apt=()
for pkg in postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pkg-config make sysbench python3; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need_apt+=("$pkg")
    fi
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
    echo "setup: installing cargo-pgrx ${PGRX_VERSION} (takes several minutes the first time)"
    cargo install --locked cargo-pgrx --version "${PGRX_VERSION}"
fi

if ! grep -q "pg15" "$HOME/.pgrx/config.toml" 2>/dev/null; then
    echo "setup: cargo pgrx init --pg15 ${PG_CONFIG}"
    cargo pgrx init --pg15 "${PG_CONFIG}"
fi
