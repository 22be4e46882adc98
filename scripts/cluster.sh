#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback for the cluster fault tests
# (tests/tests/cluster.rs), beside the shared node on 5672, which it never
# touches.
#
#   scripts/cluster.sh start   start the three nodes (in parallel), cluster
#                              them with `rabbitmqctl join_cluster`, write
#                              $DIR/env and touch $DIR/ready (or $DIR/failed)
#   scripts/cluster.sh stop    stop the nodes and remove $DIR
#
# DIR is $SLINGSHOT_CLUSTER_DIR, by default /var/tmp/slingshot-cluster.
# Nodes: slingshot-c1@localhost .. slingshot-c3@localhost, AMQP on
# 127.0.0.1:5691-5693 (guest/guest), Erlang distribution on 25691-25693.
# They run as the rabbitmq user and share its Erlang cookie
# (/var/lib/rabbitmq/.erlang.cookie). Each node's directory holds a `start`
# script that starts it again (tests restart the nodes they kill) and its
# `pid` file (the Erlang VM's pid: what the tests kill -9 or SIGSTOP).
# scripts/test.sh starts the cluster in the background while the tests
# build, and stops it when it exits, pass or fail.
set -euo pipefail

DIR=${SLINGSHOT_CLUSTER_DIR:-/var/tmp/slingshot-cluster}
NODES=(1 2 3)
node_name() { echo "slingshot-c$1@localhost"; }
amqp_port() { echo $((5690 + $1)); }
dist_port() { echo $((25690 + $1)); }

log() { echo "cluster.sh: $*" >&2; }

ctl() {
    local node=$1
    shift
    rabbitmqctl -q -n "$(node_name "$node")" "$@"
}

stop_nodes() {
    local n pid
    for n in "${NODES[@]}"; do
        # A frozen node (SIGSTOP) cannot stop itself.
        if [ -s "$DIR/c$n/pid" ]; then
            kill -CONT "$(cat "$DIR/c$n/pid")" 2>/dev/null || true
        fi
        ctl "$n" -t 30 stop >/dev/null 2>&1 &
    done
    wait || true
    for n in "${NODES[@]}"; do
        if [ -s "$DIR/c$n/pid" ]; then
            pid=$(cat "$DIR/c$n/pid")
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}

write_node() {
    local n=$1 d="$DIR/c$1"
    mkdir -p "$d"
    echo "[]." >"$d/enabled_plugins"
    # Its own listener: the machine's rabbitmq.conf may pin 5672.
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
loopback_users = none
# A node frozen (SIGSTOP) for longer than net_ticktime comes back
# partitioned from the others: let the cluster heal itself.
cluster_partition_handling = autoheal
EOF
    cat >"$d/start" <<EOF
#!/bin/sh
# Starts node $(node_name "$n") of the slingshot test cluster (in the foreground).
export RABBITMQ_NODENAME=$(node_name "$n")
export RABBITMQ_NODE_PORT=$(amqp_port "$n")
export RABBITMQ_DIST_PORT=$(dist_port "$n")
export RABBITMQ_MNESIA_BASE=$d/mnesia
export RABBITMQ_LOG_BASE=$d/log
export RABBITMQ_PID_FILE=$d/pid
export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
export RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf
# Notice a frozen peer in ~10 s rather than the default 60 s.
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel net_ticktime 10"
exec rabbitmq-server >>$d/server.out 2>&1 </dev/null
EOF
    chmod +x "$d/start"
}

start_node() {
    local n=$1
    setsid "$DIR/c$n/start" >/dev/null 2>&1 </dev/null &
}

await_node() {
    local n=$1 tries=0
    until ctl "$n" -t 30 await_startup >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            log "node $(node_name "$n") did not start; see $DIR/c$n/log and $DIR/c$n/server.out"
            return 1
        fi
        sleep 1
    done
}

start() {
    local began n
    began=$(date +%s)
    if [ -d "$DIR" ]; then
        log "stopping a cluster left by an earlier run"
        stop_nodes
        rm -rf "$DIR"
    fi
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    for n in "${NODES[@]}"; do
        write_node "$n"
    done
    chown -R rabbitmq:rabbitmq "$DIR"
    for n in "${NODES[@]}"; do
        start_node "$n"
    done
    for n in "${NODES[@]}"; do
        await_node "$n"
    done
    for n in 2 3; do
        ctl "$n" stop_app
        ctl "$n" join_cluster "$(node_name 1)"
        ctl "$n" start_app
        await_node "$n"
    done
    local members
    members=$(ctl 1 cluster_status --formatter json | grep -o 'slingshot-c[0-9]@localhost' | sort -u | wc -l)
    if [ "$members" -lt 3 ]; then
        log "the cluster has $members nodes, not 3"
        return 1
    fi
    {
        echo "export SLINGSHOT_TEST_CLUSTER_DIR='$DIR'"
        echo "export SLINGSHOT_TEST_CLUSTER_NODES='$(for n in "${NODES[@]}"; do printf '%s=%s,' "$(node_name "$n")" "$(amqp_port "$n")"; done | sed 's/,$//')'"
    } >"$DIR/env"
    echo "$(($(date +%s) - began))" >"$DIR/ready"
    log "3-node cluster ready in $(cat "$DIR/ready")s: $(for n in "${NODES[@]}"; do printf '%s ' "127.0.0.1:$(amqp_port "$n")"; done)"
}

case "${1:-}" in
    start)
        if ! start; then
            mkdir -p "$DIR"
            echo "scripts/cluster.sh start failed; see $DIR/c*/log" >"$DIR/failed"
            exit 1
        fi
        ;;
    stop)
        if [ -d "$DIR" ]; then
            stop_nodes
            rm -rf "$DIR"
        fi
        log "stopped"
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
