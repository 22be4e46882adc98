#!/usr/bin/env bash
# The slingshot test command: start (or reuse) RabbitMQ, PostgreSQL and Garage
# on loopback, then run the whole workspace's tests against them.
#
#   scripts/test.sh             (from any directory; needs no stdin, so CI-safe)
#   scripts/test.sh --fresh-db  the same on a freshly created database: drops
#                               and recreates the tests' PostgreSQL database
#                               ("slingshot") before running, as on a new
#                               machine. SLINGSHOT_FRESH_DB=1 does the same.
#
# Every test binary runs (--no-fail-fast), so one failure does not hide the
# others; the exit status is non-zero if anything failed. Each test that uses
# PostgreSQL runs in a database of its own, created (with its tables) before
# its services start and dropped when it ends (see tests/src/database.rs);
# scripts/services.sh drops any that a killed run left behind.
#
# After the cargo tests, scripts/image-check.sh proves examples/Dockerfile's
# runtime image (debootstrap root filesystem, the release binary run in it by
# chroot as uid 10001 against the services); it needs root.
#
# The fault-injection tests (tests/tests/faults.rs) append their figures,
# `fault=<name> sent=N delivered=N lost=N duplicates=N dead_lettered=N`, to
# the file $SLINGSHOT_FAULT_REPORT; this script sets it to a fresh temporary
# file and prints it after the tests, whether they passed or failed.
#
# Then the RabbitMQ 4 lane: scripts/rabbitmq4.sh starts (or reuses) RabbitMQ
# 4.0.5, run by chroot from a Debian 13 root filesystem built once under
# /var/tmp (5682, beside the host's 3.10 on 5672; left running for the next
# run, as the other services), and these suites run again with
# SLINGSHOT_TEST_AMQP_URL pointing at it: the semantics suite on classic and
# quorum queues, quorum.rs, interop.rs, otel.rs, and the fault tests
# kill-9, rabbitmq-restart (on a private 4.0 node) and poison; then
# tests/tests/rabbitmq4.rs (4.x's rules, and the broker's version named by
# `check` and the start-up log on both brokers). Fault lines name the broker
# (`fault=kill-9 broker=4.0.5 ...`). The run prints how long the lane took.
#
# The cluster fault tests (tests/tests/cluster.rs) run on a three-node
# RabbitMQ cluster (scripts/cluster.sh, ports 5691-5693): it starts in the
# background while the tests build, and is stopped when this script exits,
# pass or fail. The run prints how long the cluster took to start.
set -euo pipefail

# Never wait on stdin (CI runs us without one).
exec </dev/null

fresh_db=${SLINGSHOT_FRESH_DB:-}
for arg in "$@"; do
    case "$arg" in
        --fresh-db) fresh_db=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "usage: $0 [--fresh-db]" >&2
            exit 2
            ;;
    esac
done
if [ "$fresh_db" = 0 ]; then
    fresh_db=
fi

# Work from the repository root, whatever the caller's cwd.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

# Plain output in logs; keep colours on a terminal (or whatever the caller set).
if [ ! -t 1 ]; then
    export CARGO_TERM_COLOR=never
fi

echo "==> slingshot tests in $(pwd)"

# Disk: the builds take several GB, and RabbitMQ blocks every publisher when
# its disk runs low (a fault stream then stalls with no error of its own),
# so say so up front rather than leave it to be guessed from a timeout.
free_disk() { # DIR: free space of its file system, in MiB
    df -Pm "$1" 2>/dev/null | awk 'NR == 2 { print $4 }'
}
for dir in . /var/tmp; do
    free=$(free_disk "$dir")
    if [ -n "$free" ] && [ "$free" -lt 8192 ]; then
        echo "==> WARNING: only ${free} MiB free under $dir; the build and the brokers need about 8 GiB" >&2
    fi
done
if [ -n "$fresh_db" ]; then
    echo "==> services (scripts/services.sh fresh-db)"
    bash scripts/services.sh fresh-db
else
    echo "==> services (scripts/services.sh)"
    bash scripts/services.sh
fi

# shellcheck source=/dev/null
. "${SLINGSHOT_SERVICES_DIR:-/var/tmp/slingshot-services}/env"

# The AsyncAPI validator (examples/tests/asyncapi.rs runs it): the official
# JSON Schema and parser from npm, pinned by tests/asyncapi/package-lock.json.
echo "==> AsyncAPI validator (npm ci --prefix tests/asyncapi)"
npm ci --prefix tests/asyncapi --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error

SLINGSHOT_FAULT_REPORT=$(mktemp "${TMPDIR:-/tmp}/slingshot-fault-report.XXXXXX")
export SLINGSHOT_FAULT_REPORT

# The three-node cluster, started while the tests build; the cluster tests
# wait for $SLINGSHOT_TEST_CLUSTER_DIR/ready.
export SLINGSHOT_TEST_CLUSTER_DIR=${SLINGSHOT_TEST_CLUSTER_DIR:-/var/tmp/slingshot-cluster}
export SLINGSHOT_CLUSTER_DIR=$SLINGSHOT_TEST_CLUSTER_DIR
cluster_log=$(mktemp "${TMPDIR:-/tmp}/slingshot-cluster-log.XXXXXX")
echo "==> three-node RabbitMQ cluster (scripts/cluster.sh start, in the background)"
rm -f "$SLINGSHOT_TEST_CLUSTER_DIR/ready" "$SLINGSHOT_TEST_CLUSTER_DIR/failed"
bash scripts/cluster.sh start >"$cluster_log" 2>&1 &
cluster_pid=$!
cleanup() {
    kill "$cluster_pid" 2>/dev/null || true
    wait "$cluster_pid" 2>/dev/null || true
    bash scripts/cluster.sh stop >>"$cluster_log" 2>&1 || true
    rm -f "$SLINGSHOT_FAULT_REPORT" "$cluster_log"
}
trap cleanup EXIT

status=0

# The `services` features turn on the tests that need what was started and
# installed above (tests/Cargo.toml, examples/Cargo.toml); plain
# `cargo test --workspace` leaves them out.
features=(--features slingshot-tests/services,slingshot-examples/services)
echo "==> cargo test --workspace --all-targets ${features[*]} --no-fail-fast"
tests_status=0
cargo test --workspace --all-targets "${features[@]}" --no-fail-fast || tests_status=$?

echo "==> cargo test --workspace --doc ${features[*]} --no-fail-fast"
doc_status=0
cargo test --workspace --doc "${features[@]}" --no-fail-fast || doc_status=$?

echo "==> Python services (scripts/python-tests.sh: maturin develop, then pytest)"
python_status=0
bash scripts/python-tests.sh || python_status=$?

echo "==> container image (scripts/image-check.sh)"
image_status=0
bash scripts/image-check.sh || image_status=$?

# The RabbitMQ 4 lane: suites written against "the shared broker", pointed
# at RabbitMQ 4.0.5.
rabbitmq4_lane() {
    bash scripts/rabbitmq4.sh start || return 1
    local exports
    exports=$(bash scripts/rabbitmq4.sh env) || return 1
    eval "$exports"
    local status=0
    # --workspace, as above: the same features, so nothing is rebuilt.
    local on4=(env "SLINGSHOT_TEST_AMQP_URL=$SLINGSHOT_TEST_RABBITMQ4_URL" cargo test --workspace "${features[@]}" --no-fail-fast)
    echo "==> RabbitMQ 4 lane: semantics, calls and events on classic and quorum queues, quorum.rs, interop.rs, otel.rs"
    "${on4[@]}" --test semantics -- real:: quorum:: || status=1
    "${on4[@]}" --test calls --test events -- real:: quorum:: a_plain an_oversized an_original || status=1
    "${on4[@]}" --test quorum --test interop --test otel || status=1
    echo "==> RabbitMQ 4 lane: fault tests kill-9, rabbitmq-restart, poison"
    "${on4[@]}" --test faults -- kill_9 rabbitmq_restarted poison || status=1
    echo "==> RabbitMQ 4 lane: tests/tests/rabbitmq4.rs (4.x's rules; versions on both brokers)"
    cargo test --workspace "${features[@]}" --no-fail-fast --test rabbitmq4 || status=1
    return "$status"
}
echo "==> RabbitMQ 4 lane (scripts/rabbitmq4.sh start: RabbitMQ 4.0.5 beside 3.10)"
rabbitmq4_status=0
rabbitmq4_started=$SECONDS
rabbitmq4_lane || rabbitmq4_status=$?
rabbitmq4_took=$((SECONDS - rabbitmq4_started))

echo
echo "==> RabbitMQ 4 lane: ${rabbitmq4_took} s"
echo "==> cluster: $(grep -h 'ready in' "$cluster_log" || echo 'did not start; see below') (started while the tests built)"
if ! grep -q 'ready in' "$cluster_log"; then
    cat "$cluster_log"
fi
echo "==> fault injection (tests/tests/faults.rs, once_faults.rs, cluster.rs, quorum.rs, rabbitmq4.rs; broker= names RabbitMQ's version)"
if [ -s "$SLINGSHOT_FAULT_REPORT" ]; then
    cat "$SLINGSHOT_FAULT_REPORT"
else
    echo "(no figures: the fault tests did not get to report; see their output above)"
fi
echo

# A step that failed says so here, after the figures, and fails the run.
failed_if() { # STATUS WHAT
    if [ "$1" -ne 0 ]; then
        echo "==> FAILED: $2 exited with $1 (failures listed above)"
        status=1
    fi
}
failed_if "$tests_status" "cargo test --workspace --all-targets"
failed_if "$doc_status" "cargo test --workspace --doc"
failed_if "$python_status" "the Python tests (scripts/python-tests.sh)"
failed_if "$image_status" "scripts/image-check.sh"
failed_if "$rabbitmq4_status" "the RabbitMQ 4 lane (scripts/rabbitmq4.sh and the suites on RabbitMQ 4.0.5)"
if [ "$status" -eq 0 ]; then
    echo "==> all tests passed"
fi
exit "$status"
