#!/usr/bin/env bash
# Bring up (or reuse) the real services the slingshot test suite talks to, all
# on loopback:
#
#   RabbitMQ    127.0.0.1:5672   guest/guest           (Debian rabbitmq-server)
#   PostgreSQL  127.0.0.1:5432   slingshot/slingshot   (Debian postgresql)
#   Garage S3   127.0.0.1:3900   key "slingshot"       (cargo install garage)
#
# and write "$SLINGSHOT_SERVICES_DIR/env" (default /var/tmp/slingshot-services/env)
# with the SLINGSHOT_TEST_* variables the suite reads.
#
# Usage:
#   scripts/services.sh          install/start what is missing, reuse what runs
#   scripts/services.sh check    only check that everything answers (no changes)
#   scripts/services.sh fresh-db as the first, then drop and recreate the
#                                tests' PostgreSQL database ("$PG_DB", empty)
#
# Tests run in PostgreSQL databases of their own, slingshot_test_<pid>_<n>_<name>,
# which each test drops when it ends; every run here drops those whose process
# is gone (left by a run that was killed), never those of a run in progress.
#
# Idempotent: a second run reuses everything. A service that already answers on
# its port is never stopped or restarted. Prints one line per service on stdout
# ("<service>: reused ..." or "<service>: installed/started ..."); progress
# messages go to stderr.
set -euo pipefail

STATE_DIR="${SLINGSHOT_SERVICES_DIR:-/var/tmp/slingshot-services}"
GARAGE_DIR="$STATE_DIR/garage"
GARAGE_CFG="$GARAGE_DIR/garage.toml"
GARAGE_CREDS="$GARAGE_DIR/credentials.env"
GARAGE_LOG="$GARAGE_DIR/garage.log"
ENV_FILE="$STATE_DIR/env"

AMQP_HOST=127.0.0.1 AMQP_PORT=5672
PG_HOST=127.0.0.1 PG_PORT=5432
S3_HOST=127.0.0.1 S3_PORT=3900
PG_USER=slingshot PG_PASSWORD=slingshot PG_DB=slingshot
GARAGE_KEY_NAME=slingshot

# `cargo install` puts binaries here; a fresh shell may not have it on PATH.
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

log() { echo "services.sh: $*" >&2; }
die() { echo "services.sh: ERROR: $*" >&2; exit 1; }

# True if something accepts TCP connections on host:port (bash /dev/tcp).
tcp_open() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# Wait up to $1 seconds for the command "${@:2}" to succeed.
wait_for() {
    local secs=$1; shift
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

pg_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
    else
        tcp_open "$PG_HOST" "$PG_PORT"
    fi
}

# Run a command as root (we are root in CI; otherwise try sudo).
# Every command that may start a daemon gets fd 9 (the run lock, see main)
# closed, or the daemon would hold the lock for as long as it lives.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@" 9>&-; else sudo "$@" 9>&-; fi
}

# Run a command as another OS user, from a directory that user can read.
as_user() {
    local user=$1; shift
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u "$user" -- "$@" 9>&-)
    else
        (cd / && sudo -u "$user" -- "$@" 9>&-)
    fi
}

# apt-get install the given Debian packages (apt-get update once per run).
APT_UPDATED=
apt_install() {
    if [ -z "$APT_UPDATED" ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >&2
}

# ---------------------------------------------------------------------------
# check mode: verify only, change nothing.
# ---------------------------------------------------------------------------
check() {
    local missing=()
    tcp_open "$AMQP_HOST" "$AMQP_PORT" || missing+=("RabbitMQ ($AMQP_HOST:$AMQP_PORT)")
    pg_up || missing+=("PostgreSQL ($PG_HOST:$PG_PORT)")
    tcp_open "$S3_HOST" "$S3_PORT" || missing+=("Garage S3 ($S3_HOST:$S3_PORT)")
    [ -f "$ENV_FILE" ] || missing+=("env file $ENV_FILE")
    if ((${#missing[@]})); then
        local m
        for m in "${missing[@]}"; do echo "missing: $m" >&2; done
        echo "services.sh check: FAILED (run scripts/services.sh to start them)" >&2
        return 1
    fi
    echo "services.sh check: RabbitMQ, PostgreSQL and Garage S3 answer; env file present"
}

# ---------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------
svc_rabbitmq() {
    if tcp_open "$AMQP_HOST" "$AMQP_PORT"; then
        echo "rabbitmq: reused ($AMQP_HOST:$AMQP_PORT)"
        return
    fi
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt_install rabbitmq-server
    fi
    # The package's postinst may already have started it (where services may
    # start in postinst); only start it ourselves if it still does not answer.
    if ! tcp_open "$AMQP_HOST" "$AMQP_PORT"; then
        # RabbitMQ's node name is rabbit@<short hostname>; it must resolve.
        getent hosts "$(hostname -s)" >/dev/null ||
            log "warning: hostname $(hostname -s) does not resolve; RabbitMQ may fail to start (add it to /etc/hosts)"
        log "starting rabbitmq-server -detached"
        # Debian's /usr/sbin/rabbitmq-server wrapper switches to the rabbitmq user.
        as_root rabbitmq-server -detached >&2
    fi
    # Bounded wait: await_startup waits for the boot to finish; retry while the
    # node is not even reachable yet.
    local deadline=$((SECONDS + 180))
    until as_root timeout 60 rabbitmqctl -q -t 60 await_startup >/dev/null 2>&1; do
        ((SECONDS < deadline)) ||
            die "RabbitMQ did not start within 180s (see /var/log/rabbitmq/)"
        sleep 2
    done
    wait_for 30 tcp_open "$AMQP_HOST" "$AMQP_PORT" ||
        die "RabbitMQ started but nothing listens on $AMQP_HOST:$AMQP_PORT"
    echo "rabbitmq: installed/started ($AMQP_HOST:$AMQP_PORT)"
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------
svc_postgresql() {
    local status
    if pg_up; then
        status="reused"
    else
        if [ ! -d /etc/postgresql ] || [ -z "$(ls -A /etc/postgresql 2>/dev/null)" ]; then
            apt_install postgresql
        fi
        if ! pg_up; then
            local ver
            # shellcheck disable=SC2012  # version dirs are plain numbers
            ver=$(ls /etc/postgresql | sort -V | tail -n 1)
            [ -n "$ver" ] || die "no PostgreSQL version under /etc/postgresql"
            if [ ! -d "/etc/postgresql/$ver/main" ]; then
                log "creating cluster $ver/main"
                as_root pg_createcluster "$ver" main >&2
            fi
            log "starting PostgreSQL cluster $ver/main"
            as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2
        fi
        wait_for 60 pg_up ||
            die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within 60s"
        status="installed/started"
    fi
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client

    # Always make sure the role and database exist (idempotent). The password
    # matters on a stock Debian install (scram for 127.0.0.1); the machine's
    # preinstalled server uses trust.
    local url="postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$PG_DB"
    if id -u postgres >/dev/null 2>&1 && as_user postgres \
        psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres >/dev/null <<SQL
SELECT 'CREATE ROLE $PG_USER' WHERE NOT EXISTS
    (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') \gexec
ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS
    (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
ALTER DATABASE $PG_DB OWNER TO $PG_USER;
SQL
    then
        :
    else
        # Not a local cluster we can administer as the postgres OS user
        # (e.g. a server started elsewhere): accept it if the role works.
        log "could not administer PostgreSQL as the postgres OS user; checking $url"
    fi
    psql -X -q -At "$url" -c 'select 1' >/dev/null 2>&1 ||
        die "cannot connect as $PG_USER to $url"
    echo "postgresql: $status ($PG_HOST:$PG_PORT, role/db $PG_USER ready)"
}

# psql as the tests' role on the maintenance database (so that it may drop
# and create "$PG_DB"); the role has CREATEDB and owns what the tests create.
pg_admin() {
    psql -X -q -v ON_ERROR_STOP=1 \
        "postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/postgres" "$@"
}

# Drops the per-test databases (slingshot_test_<pid>_...) whose test process
# no longer exists. A test drops its own database when it ends, pass or fail;
# only a killed run leaves one behind.
clean_test_databases() {
    local dbs db pid dropped=0
    dbs=$(pg_admin -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'slingshot\_test\_%'") ||
        die "cannot list the test databases"
    for db in $dbs; do
        pid=${db#slingshot_test_}
        pid=${pid%%_*}
        if [[ "$pid" =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ]; then
            continue   # a test run in progress (or a reused pid: next time)
        fi
        pg_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >&2 ||
            die "cannot drop the leftover test database $db"
        dropped=$((dropped + 1))
    done
    if ((dropped)); then
        log "dropped $dropped test database(s) left by killed runs"
    fi
}

# fresh-db: the tests' database as on a new machine (empty), and no leftover
# per-test databases.
fresh_database() {
    log "dropping and recreating database $PG_DB (fresh-db)"
    pg_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >&2 ||
        die "cannot drop database $PG_DB"
    pg_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\"" >&2 ||
        die "cannot create database $PG_DB"
    echo "postgresql: database $PG_DB recreated empty (fresh-db)"
}

# ---------------------------------------------------------------------------
# Garage (S3)
# ---------------------------------------------------------------------------
garage_cli() { garage -c "$GARAGE_CFG" "$@"; }

# Print the value of a "Label:   value" line of `garage key info` output.
garage_field() {
    sed -n "s/^$1:[[:space:]]*//p" | head -n 1 | tr -d '[:space:]'
}

garage_ensure_binary() {
    command -v garage >/dev/null 2>&1 && return
    command -v cc >/dev/null 2>&1 || apt_install build-essential
    log "cargo install garage --locked (takes ~10 minutes)"
    cargo install garage --locked >&2 9>&-
    command -v garage >/dev/null 2>&1 || die "garage not on PATH after cargo install"
    GARAGE_INSTALLED=1
}

garage_write_config() {
    [ -f "$GARAGE_CFG" ] && return
    mkdir -p "$GARAGE_DIR/meta" "$GARAGE_DIR/data"
    local secret
    secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')   # 64 hex chars, kept
    # The config holds the rpc secret: readable by its owner only.
    (umask 077; cat >"$GARAGE_CFG.tmp") <<TOML
# Single-node Garage for the slingshot test suite (written by scripts/services.sh).
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "$S3_HOST:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:3903"
TOML
    mv "$GARAGE_CFG.tmp" "$GARAGE_CFG"
}

svc_garage() {
    if tcp_open "$S3_HOST" "$S3_PORT"; then
        [ -f "$GARAGE_CREDS" ] || die "something already listens on $S3_HOST:$S3_PORT but \
$GARAGE_CREDS does not exist, so there is no key for it. Stop that server (or \
point SLINGSHOT_SERVICES_DIR at the state dir that started it) and re-run."
        # If we can, confirm the key in the credentials file is known to it.
        if command -v garage >/dev/null 2>&1 && [ -f "$GARAGE_CFG" ]; then
            # shellcheck source=/dev/null
            . "$GARAGE_CREDS"
            garage_cli key info "$GARAGE_KEY_ID" >/dev/null 2>&1 ||
                die "Garage on $S3_HOST:$S3_PORT does not know key $GARAGE_KEY_ID from $GARAGE_CREDS \
(is it another Garage instance?)"
        fi
        echo "garage: reused ($S3_HOST:$S3_PORT, state $GARAGE_DIR)"
        return
    fi

    GARAGE_INSTALLED=
    garage_ensure_binary
    garage_write_config

    # Start the server detached from this shell (it must outlive the script).
    log "starting garage server (log $GARAGE_LOG)"
    (
        # Close every inherited descriptor above stderr (our lock, a caller's
        # pipes) so the long-lived server keeps none of them open.
        for fd in /proc/"$BASHPID"/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
        done
        exec nohup setsid garage -c "$GARAGE_CFG" server </dev/null >>"$GARAGE_LOG" 2>&1
    ) &
    local pid=$!
    echo "$pid" >"$GARAGE_DIR/garage.pid"
    if ! wait_for 60 garage_cli status; then
        tail -n 20 "$GARAGE_LOG" >&2 || true
        die "garage did not answer 'garage status' within 60s (log: $GARAGE_LOG)"
    fi

    # Layout: assign this node once. `garage layout show` ends with
    # "Current cluster layout version: N"; N=0 means never applied.
    local version
    version=$(garage_cli layout show 2>/dev/null |
        sed -n 's/^Current cluster layout version:[[:space:]]*\([0-9]\+\).*/\1/p' | tail -n 1)
    [ -n "$version" ] || die "could not read the layout version from 'garage layout show'"
    if [ "$version" = 0 ]; then
        local node
        # `garage node id -q` prints "<64-hex node id>@127.0.0.1:3901".
        node=$(garage_cli node id -q 2>/dev/null | head -n 1 | cut -d@ -f1)
        [[ "$node" =~ ^[0-9a-f]{16,}$ ]] || die "could not read the garage node id (got '$node')"
        log "assigning layout to node ${node:0:16}"
        garage_cli layout assign -z dc1 -c 1G "$node" >>"$GARAGE_LOG"
        garage_cli layout apply --version 1 >>"$GARAGE_LOG"
    fi

    # Access key "slingshot", allowed to create buckets.
    if ! garage_cli key info "$GARAGE_KEY_NAME" >/dev/null 2>&1; then
        log "creating garage key $GARAGE_KEY_NAME"
        garage_cli key create "$GARAGE_KEY_NAME" >/dev/null
    fi
    garage_cli key allow --create-bucket "$GARAGE_KEY_NAME" >/dev/null

    # `garage key info NAME --show-secret` (garage 2.5) prints e.g.
    #   ==== ACCESS KEY INFORMATION ====
    #   Key ID:              GK5b99067d325b41237ea324fc
    #   Key name:            slingshot
    #   Secret key:          47de727e...(64 hex)
    #   ...
    #   Can create buckets:  true
    local info key_id secret
    info=$(garage_cli key info "$GARAGE_KEY_NAME" --show-secret)
    key_id=$(garage_field 'Key ID' <<<"$info")
    secret=$(garage_field 'Secret key' <<<"$info")
    [[ "$key_id" =~ ^GK[0-9a-f]+$ ]] || die "could not parse 'Key ID' from garage key info: $info"
    [[ "$secret" =~ ^[0-9a-f]{64}$ ]] || die "could not parse 'Secret key' from garage key info"
    (
        umask 077
        printf 'GARAGE_KEY_ID=%s\nGARAGE_SECRET_KEY=%s\n' "$key_id" "$secret" >"$GARAGE_CREDS.tmp"
        mv "$GARAGE_CREDS.tmp" "$GARAGE_CREDS"
    )

    wait_for 30 tcp_open "$S3_HOST" "$S3_PORT" ||
        die "garage runs but nothing listens on $S3_HOST:$S3_PORT (log: $GARAGE_LOG)"
    echo "garage: installed/started ($S3_HOST:$S3_PORT, state $GARAGE_DIR${GARAGE_INSTALLED:+, binary built by cargo install})"
}

# Tests name their queues t<pid>-<n>-...; they are durable, so without this a
# shared broker would keep every test queue forever. The policy deletes such
# a queue after 30 minutes unused, without touching any other queue.
test_queue_policy() {
    as_root rabbitmqctl -q set_policy --apply-to queues --priority 0 slingshot-test-queues \
        '^t[0-9]+-[0-9]+-' '{"expires": 1800000}' >/dev/null ||
        log "warning: could not set the test-queue expiry policy; test queues will accumulate"
}

# ---------------------------------------------------------------------------
# env file for the test suite
# ---------------------------------------------------------------------------
write_env() {
    # shellcheck source=/dev/null
    . "$GARAGE_CREDS"
    {
        echo "# Written by scripts/services.sh; source it before running the tests."
        echo "export SLINGSHOT_TEST_AMQP_URL='amqp://guest:guest@$AMQP_HOST:$AMQP_PORT/%2f'"
        echo "export SLINGSHOT_TEST_PG_URL='postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$PG_DB'"
        echo "export SLINGSHOT_TEST_S3_ENDPOINT='http://$S3_HOST:$S3_PORT'"
        echo "export SLINGSHOT_TEST_S3_REGION='garage'"
        echo "export SLINGSHOT_TEST_S3_ACCESS_KEY='$GARAGE_KEY_ID'"
        echo "export SLINGSHOT_TEST_S3_SECRET_KEY='$GARAGE_SECRET_KEY'"
        echo "# Secrets of the test sys-maps, by reference (see slingshot::sysmap::secrets)."
        echo "export SLINGSHOT_SECRET_TEST_RABBITMQ='guest'"
        echo "export SLINGSHOT_SECRET_TEST_POSTGRES='$PG_PASSWORD'"
        echo "export SLINGSHOT_SECRET_TEST_S3_ACCESS_KEY='$GARAGE_KEY_ID'"
        echo "export SLINGSHOT_SECRET_TEST_S3_SECRET_KEY='$GARAGE_SECRET_KEY'"
        echo "# Garage over plain http rejects aws-sdk-s3's default request checksums."
        echo "export AWS_REQUEST_CHECKSUM_CALCULATION='WHEN_REQUIRED'"
        # Private RabbitMQ nodes for fault tests need the rabbitmq OS user.
        if id -u rabbitmq >/dev/null 2>&1; then
            echo "export SLINGSHOT_TEST_RABBITMQ_PRIVATE_OK='1'"
        fi
    } >"$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    echo "env: $ENV_FILE"
}

main() {
    local fresh=
    case "${1:-}" in
        check) check; return ;;
        fresh-db) fresh=1 ;;
        "") ;;
        *) echo "usage: $0 [check | fresh-db]" >&2; exit 2 ;;
    esac
    mkdir -p "$STATE_DIR"
    # Serialize concurrent runs (two test runs starting at once). Daemons we
    # start must not inherit fd 9 (see as_root).
    exec 9>"$STATE_DIR/.lock"
    flock -w 1200 9 || die "timed out waiting for another services.sh run ($STATE_DIR/.lock)"
    svc_rabbitmq
    test_queue_policy
    svc_postgresql
    clean_test_databases
    if [ -n "$fresh" ]; then
        fresh_database
    fi
    svc_garage
    write_env
}

main "$@"
