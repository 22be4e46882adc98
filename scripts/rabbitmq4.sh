#!/usr/bin/env bash
# RabbitMQ 4.0 beside the host's RabbitMQ 3.10, for scripts/test.sh's RabbitMQ 4
# lane and tests/tests/rabbitmq4.rs.
#
#   scripts/rabbitmq4.sh start    build (once) or reuse the root filesystem, start
#                                 the node (or reuse a running one), wait for it,
#                                 enable its feature flags
#   scripts/rabbitmq4.sh stop     stop the node and its epmd, unmount /proc
#   scripts/rabbitmq4.sh status   whether the node runs (exit 0) or not (exit 1)
#   scripts/rabbitmq4.sh env      the variables the tests read, as `export` lines:
#                                 eval "$(scripts/rabbitmq4.sh env)"
#
# Debian 12 ships RabbitMQ 3.10.8; Debian 13 (trixie) ships 4.0.5 with Erlang 27,
# which needs trixie's libc. So the node runs from a trixie root filesystem by
# chroot (shared/services.md, "RabbitMQ 4 on this Debian 12 machine"):
# `debootstrap --variant=minbase trixie` from DEBIAN_MIRROR (default
# http://deb.debian.org/debian), then `apt-get install rabbitmq-server`, with a
# policy-rc.d that keeps the package from starting a node of its own on 5672
# and a `rabbitmq` user of fixed ids ($RMQ4_UID, unused on the host, so that
# host-side `ps` and `kill -u` never mistake it for a host user). The root is
# cached under $SLINGSHOT_RABBITMQ4_CACHE (default /var/tmp/slingshot-rabbitmq4),
# keyed by the text of the build function below: a changed recipe builds a new
# root. The first build takes about a minute and a half (mostly downloading);
# later starts about 5 s.
#
# The node: rmq4@localhost, AMQP on 127.0.0.1:5682 (guest/guest), Erlang
# distribution on 25682, its own epmd on 4370 (never the host's on 4369). Its
# log is under $ROOT/var/log/rabbitmq. Always drive it with the chroot's CLI
# (the host's 3.10 rabbitmqctl cannot talk to it):
#   chroot "$ROOT" rabbitmqctl -n rmq4@localhost list_queues
# Tests start private 4.0 nodes in the same root (tests/src/private.rs,
# PrivateRabbit4), which use the same epmd and /proc: `stop` leaves both in
# place while such a node runs.
#
# Needs root (debootstrap, chroot, mount).
set -euo pipefail
exec </dev/null

RELEASE=trixie
VERSION=4.0.5
NODE=rmq4@localhost
AMQP_PORT=5682
DIST_PORT=25682
EPMD_PORT=4370
RMQ4_UID=940
CACHE=${SLINGSHOT_RABBITMQ4_CACHE:-/var/tmp/slingshot-rabbitmq4}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { echo "rabbitmq4.sh: $*" >&2; }
die() {
    echo "rabbitmq4.sh: FAILED: $*" >&2
    exit 1
}

# Builds the root filesystem in "$1": everything RabbitMQ 4 needs, no node
# started. Its text is the cache key.
build_rootfs() {
    local root=$1
    debootstrap --variant=minbase "$RELEASE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $CACHE/debootstrap.log"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # No package may start a service in the chroot (the postinst would start
    # a default node on 5672, beside the host's).
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    chroot "$root" groupadd --system --gid "$RMQ4_UID" rabbitmq
    chroot "$root" useradd --system --uid "$RMQ4_UID" --gid rabbitmq \
        --home-dir /var/lib/rabbitmq --shell /usr/sbin/nologin rabbitmq
    mount -t proc proc "$root/proc"
    {
        chroot "$root" apt-get update -q &&
            chroot "$root" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends rabbitmq-server
    } >"$CACHE/apt.log" 2>&1 || {
        umount "$root/proc"
        die "apt-get install rabbitmq-server failed; see $CACHE/apt.log"
    }
    umount "$root/proc"
    local installed
    installed=$(chroot "$root" dpkg-query -W -f '${Version}' rabbitmq-server)
    case "$installed" in
        "$VERSION"-*) ;;
        *) die "Debian $RELEASE's rabbitmq-server is $installed, not $VERSION: update VERSION in $0 (and the README)" ;;
    esac
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/*
}

key=$(declare -f build_rootfs | sha256sum | cut -c1-12)
ROOT="$CACHE/rootfs-$RELEASE-$key"

# The chroot's CLI, as the node's user (the Debian wrapper switches to it).
in_root() {
    chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        ERL_EPMD_PORT="$EPMD_PORT" "$@"
}
ctl() { in_root rabbitmqctl -q -n "$NODE" "$@"; }
running() { in_root rabbitmq-diagnostics -q -n "$NODE" check_running >/dev/null 2>&1; }

# The node's configuration, written at every start: not part of the cached
# build, so changing it needs no rebuild.
write_config() {
    cat >"$ROOT/etc/rabbitmq/rabbitmq-env.conf" <<EOF
NODENAME=$NODE
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=$AMQP_PORT
DIST_PORT=$DIST_PORT
# Its own epmd, and the Erlang distribution, on loopback only.
export ERL_EPMD_PORT=$EPMD_PORT
export ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
# The Debian wrapper's \`su rabbitmq\` drops the soft fd limit to 1024.
ulimit -S -n "\$(ulimit -H -n)"
EOF
    # guest may connect from 127.0.0.1 (the default); no plugins.
    echo "[]." >"$ROOT/etc/rabbitmq/enabled_plugins"
    # So that `localhost` resolves as on the host.
    cp /etc/hosts "$ROOT/etc/hosts"
}

cmd_env() {
    echo "export SLINGSHOT_TEST_RABBITMQ4_URL='amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f'"
    echo "export SLINGSHOT_TEST_RABBITMQ4_ROOT='$ROOT'"
}

ensure_rootfs() {
    if [ -f "$ROOT/.slingshot-rabbitmq4-ready" ]; then
        return
    fi
    if ! command -v debootstrap >/dev/null; then
        log "apt-get install debootstrap"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
            die "debootstrap is not installed and apt-get could not install it"
    fi
    if getent passwd "$RMQ4_UID" >/dev/null || getent group "$RMQ4_UID" >/dev/null; then
        die "uid/gid $RMQ4_UID, meant for the chroot's rabbitmq user, is taken on the host; pick another RMQ4_UID in $0"
    fi
    local building="$ROOT.building" started=$SECONDS
    rm -rf "$building"
    log "building the root filesystem: debootstrap $RELEASE, apt-get install rabbitmq-server ($MIRROR)"
    build_rootfs "$building"
    touch "$building/.slingshot-rabbitmq4-ready"
    mv "$building" "$ROOT"
    log "root filesystem built in $((SECONDS - started)) s: $ROOT ($(du -sm "$ROOT" | cut -f1) MB)"
}

cmd_start() {
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
    mkdir -p "$CACHE"
    # One start or stop at a time (test.sh and a developer's shell).
    exec 9>"$CACHE/lock"
    flock 9
    ensure_rootfs
    if mountpoint -q "$ROOT/proc" && running; then
        log "reused: $NODE on 127.0.0.1:$AMQP_PORT, RabbitMQ $(ctl version)"
        return
    fi
    local started=$SECONDS
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    write_config
    in_root env ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon 9>&-
    # In the background, in a session of its own, with no descriptor of
    # ours: the node outlives this script.
    setsid chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        rabbitmq-server >>"$CACHE/rabbitmq-server.out" 2>&1 9>&- &
    local deadline=$((SECONDS + 120))
    until running; do
        if ((SECONDS > deadline)); then
            die "$NODE did not start within 120 s; see $ROOT/var/log/rabbitmq and $CACHE/rabbitmq-server.out"
        fi
        sleep 1
    done
    ctl enable_feature_flag all >/dev/null ||
        die "rabbitmqctl enable_feature_flag all failed on $NODE"
    log "started in $((SECONDS - started)) s: $NODE on 127.0.0.1:$AMQP_PORT, RabbitMQ $(ctl version)"
}

cmd_stop() {
    [ "$(id -u)" = 0 ] || die "needs root (chroot, umount)"
    if [ ! -d "$ROOT" ]; then
        log "no root filesystem; nothing to stop"
        return
    fi
    mkdir -p "$CACHE"
    exec 9>"$CACHE/lock"
    flock 9
    if mountpoint -q "$ROOT/proc" && running; then
        ctl shutdown >/dev/null || die "rabbitmqctl shutdown failed on $NODE"
        log "stopped $NODE"
    else
        log "$NODE is not running"
    fi
    if ! mountpoint -q "$ROOT/proc"; then
        return
    fi
    # epmd refuses to die while a node is registered with it: a private
    # test node (PrivateRabbit4) may still run in this root.
    local names
    names=$(in_root epmd -names 2>/dev/null | grep '^name ' || true)
    if [ -n "$names" ]; then
        log "other nodes still run in $ROOT ($(echo "$names" | awk '{print $2}' | tr '\n' ' ')); epmd and /proc stay"
        return
    fi
    in_root epmd -kill >/dev/null 2>&1 || true
    umount "$ROOT/proc" || die "cannot unmount $ROOT/proc (busy?)"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status)
        if [ -d "$ROOT" ] && mountpoint -q "$ROOT/proc" && running; then
            echo "rabbitmq4: $NODE runs on 127.0.0.1:$AMQP_PORT (RabbitMQ $(ctl version))"
        else
            echo "rabbitmq4: not running"
            exit 1
        fi
        ;;
    env) cmd_env ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
        ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
