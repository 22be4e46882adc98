#!/usr/bin/env bash
# The slingshot test command: start (or reuse) RabbitMQ, PostgreSQL and Garage
# on loopback, then run the whole workspace's tests against them.
#
#   scripts/test.sh          (from any directory; needs no stdin, so CI-safe)
set -euo pipefail

# Never wait on stdin (CI runs us without one).
exec </dev/null

# Work from the repository root, whatever the caller's cwd.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

# Plain output in logs; keep colours on a terminal (or whatever the caller set).
if [ ! -t 1 ]; then
    export CARGO_TERM_COLOR=never
fi

echo "==> slingshot tests in $(pwd)"
echo "==> services (scripts/services.sh)"
bash scripts/services.sh

# shellcheck source=/dev/null
. "${SLINGSHOT_SERVICES_DIR:-/var/tmp/slingshot-services}/env"

echo "==> cargo test --workspace --all-targets"
cargo test --workspace --all-targets

echo "==> cargo test --workspace --doc"
cargo test --workspace --doc

echo "==> all tests passed"
