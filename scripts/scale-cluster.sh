#!/usr/bin/env bash
# The cluster scale point: three one-shard brokers on this machine (they share its cores and
# disk), one topic of N partitions (default 10,000) with replication factor 3. Prints:
#   - the time to create it, until every broker lists every partition with a leader and all
#     three replicas in sync;
#   - each broker's idle CPU (percent of one core over 10 s, from /proc), with nothing produced;
#   - the restart time of one broker (SIGTERM, start again, until it serves and until every
#     partition lists it in the ISR again);
#   - disk used and open descriptors per broker.
#
#   scripts/scale-cluster.sh [--partitions N]
#
# Data lives in a temporary directory that is removed on exit, as are the brokers (by pid).
set -euo pipefail

partitions=10000
while [ $# -gt 0 ]; do
    case "$1" in
        --partitions) partitions="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$partitions" in ''|*[!0-9]*) echo "--partitions must be a number" >&2; exit 2 ;; esac

root="$(cd "$(dirname "$0")/.." && pwd)"
tusk="${TUSK:-$root/target/release/tusk}"
if [ ! -x "$tusk" ]; then
    (cd "$root" && cargo build --release --bin tusk)
fi
dir="$(mktemp -d /tmp/tusk-scale.XXXXXX)"
base_port=$((20000 + RANDOM % 20000))
voters=""
for i in 1 2 3; do
    voters="${voters:+$voters,}$i@127.0.0.1:$((base_port + 100 * (i - 1) + 1))"
done

declare -A pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

port_of() { echo $((base_port + 100 * ($1 - 1))); }

start() {
    local i="$1"
    mkdir -p "$dir/broker-$i"
    "$tusk" serve --node-id "$i" --data-dir "$dir/broker-$i/data" \
        --listen "127.0.0.1:$(port_of "$i")" --controller-quorum-voters "$voters" \
        --shards 1 --metrics-listen off >>"$dir/broker-$i/tusk.log" 2>&1 &
    pids[$i]=$!
}

wait_serving() {
    local i="$1"
    for _ in $(seq 1 6000); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$(port_of "$i")") 2>/dev/null; then return 0; fi
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "broker $i exited; its log:" >&2; tail -50 "$dir/broker-$i/tusk.log" >&2; exit 1
        fi
        sleep 0.1
    done
    echo "broker $i did not serve within 600 s; its log:" >&2
    tail -30 "$dir/broker-$i/tusk.log" >&2
    exit 1
}

# Seconds until broker $1 lists every partition led and with three replicas in sync.
wait_all_in_sync() {
    local i="$1" started="$2"
    while true; do
        local ok
        ok=$("$tusk" topic describe scale --json --bootstrap "127.0.0.1:$(port_of "$i")" 2>/dev/null |
            python3 -c 'import json,sys
d=json.load(sys.stdin); ps=d["partitions"]
print(sum(1 for p in ps if p["leader"]>0 and len(p["isr"])==3))' 2>/dev/null || echo 0)
        if [ "$ok" = "$partitions" ]; then break; fi
        if [ $(( $(date +%s) - started )) -gt 900 ]; then
            echo "broker $i: only $ok of $partitions in sync after 900 s" >&2; exit 1
        fi
        sleep 1
    done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for i in 1 2 3; do start "$i"; done
for i in 1 2 3; do wait_serving "$i"; done
sleep 2
t0=$(date +%s.%N)
# A large topic may outlast the request's timeout while every broker opens its partitions;
# the creation goes on (it is committed), so the wait below is what counts.
if ! "$tusk" topic create scale --partitions "$partitions" --replication-factor 3 \
    --bootstrap "127.0.0.1:$(port_of 1)" >/dev/null 2>"$dir/create.err"; then
    echo "CreateTopics did not answer in time: $(cat "$dir/create.err")"
fi
t1=$(date +%s.%N)
wait_all_in_sync 1 "$(date +%s)"
t2=$(date +%s.%N)
printf 'create %s partitions x3: CreateTopics answered %.1f s, all in sync %.1f s\n' \
    "$partitions" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t0" | bc)"

hz=$(getconf CLK_TCK)
declare -A before=()
for i in 1 2 3; do before[$i]=$(cpu_ticks "${pids[$i]}"); done
sleep 10
for i in 1 2 3; do
    after=$(cpu_ticks "${pids[$i]}")
    printf 'broker %s idle CPU: %.1f%% of a core; %s descriptors; %s on disk\n' "$i" \
        "$(echo "($after - ${before[$i]}) * 100 / ($hz * 10)" | bc -l)" \
        "$(ls "/proc/${pids[$i]}/fd" | wc -l)" "$(du -sh "$dir/broker-$i/data" | cut -f1)"
done

kill -TERM "${pids[3]}"
wait "${pids[3]}" 2>/dev/null || true
r0=$(date +%s.%N)
start 3
wait_serving 3
r1=$(date +%s.%N)
wait_all_in_sync 1 "$(date +%s)"
r2=$(date +%s.%N)
printf 'restart of broker 3: serving %.1f s, back in every ISR %.1f s\n' \
    "$(echo "$r1 - $r0" | bc)" "$(echo "$r2 - $r0" | bc)"
