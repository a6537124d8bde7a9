#!/usr/bin/env bash
# Starts a cluster of tusk brokers on this machine: ports and data directories under one
# folder, every broker a voter of the metadata quorum (Kafka's combined mode).
#
#   scripts/cluster-demo.sh [--brokers N] [--dir DIR] [--base-port P] [--keep]
#
# Broker i (1..N) serves Kafka on 127.0.0.1:P+100*(i-1) and the quorum on that port + 1, with
# its data in DIR/broker-i/data and its log in DIR/broker-i/tusk.log. The script waits until
# every broker serves, prints the bootstrap list and a short kcat tour, and stops the brokers
# (SIGTERM, by pid) when interrupted. DIR is removed on exit unless --keep is given.
set -euo pipefail

brokers=3
dir=""
base_port=19092
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --brokers) brokers="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --base-port) base_port="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$brokers" in ''|*[!0-9]*) echo "--brokers must be a number" >&2; exit 2 ;; esac
if [ "$brokers" -lt 1 ] || [ "$brokers" -gt 15 ]; then
    echo "--brokers must be 1..15" >&2
    exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
tusk="${TUSK:-$root/target/release/tusk}"
if [ ! -x "$tusk" ]; then
    (cd "$root" && cargo build --release --bin tusk)
fi
if [ -z "$dir" ]; then
    dir="$(mktemp -d /tmp/tusk-cluster.XXXXXX)"
fi
mkdir -p "$dir"

voters=""
for i in $(seq 1 "$brokers"); do
    port=$((base_port + 100 * (i - 1)))
    voters="${voters:+$voters,}$i@127.0.0.1:$((port + 1))"
done

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$keep" = 0 ]; then
        rm -rf "$dir"
    else
        echo "kept $dir"
    fi
}
trap cleanup EXIT INT TERM

bootstrap=""
for i in $(seq 1 "$brokers"); do
    port=$((base_port + 100 * (i - 1)))
    mkdir -p "$dir/broker-$i"
    "$tusk" serve --node-id "$i" --data-dir "$dir/broker-$i/data" \
        --listen "127.0.0.1:$port" --controller-quorum-voters "$voters" \
        --shards "${TUSK_SHARDS:-1}" --metrics-listen off \
        >"$dir/broker-$i/tusk.log" 2>&1 &
    pids+=("$!")
    bootstrap="${bootstrap:+$bootstrap,}127.0.0.1:$port"
done

for i in $(seq 1 "$brokers"); do
    port=$((base_port + 100 * (i - 1)))
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            break
        fi
        if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
            echo "broker $i exited; its log:" >&2
            cat "$dir/broker-$i/tusk.log" >&2
            exit 1
        fi
        sleep 0.1
    done
done

cat <<TOUR
$brokers brokers serve; bootstrap: $bootstrap (logs under $dir)

  kcat -b $bootstrap -L                                   # brokers, controller, leaders
  echo hello | kcat -b 127.0.0.1:$base_port -P -t demo    # produce (auto-creates 'demo')
  kcat -b $bootstrap -C -t demo -e                        # consume
  $tusk cluster info --bootstrap 127.0.0.1:$base_port

Ctrl-C stops the brokers.
TOUR
if [ -n "${CLUSTER_DEMO_EXIT_AFTER_START:-}" ]; then
    exit 0
fi
wait
