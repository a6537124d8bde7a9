#!/usr/bin/env bash
# The three-broker scenario: what replication costs a real client. One broker (a one-node
# cluster) against three brokers on this machine (they share its cores and disk) with
# replication factor 3, both driven by librdkafka:
#
#   scripts/bench-cluster.sh [--rounds N] [--records N] [--rate R] [--duration S]
#
#   throughput  examples/produce_throughput: N 1 KiB records, acks=all, to a 3-partition
#               topic (records/s; the ratio three ÷ one)
#   latency     examples/rdkafka_latency: acks=all, linger.ms=0, 1 KiB at R records/s for S s
#               (p50/p99/p99.9 of the acknowledgement)
#   limit       fio 4 KiB O_DSYNC writes at queue depth 1 on the same filesystem, each round
#               (the disk's durable-append latency: a replicated ack needs at least two, one
#               after the other when the leader's and the follower's syncs do not overlap)
#
# Rounds alternate one broker and three; medians over the rounds are printed. Brokers are
# started fresh for each round with data under a temporary directory that is removed on exit
# (also on failure or Ctrl-C); only processes this script started are stopped, by pid.
set -euo pipefail

rounds=3
records=200000
rate=2000
duration=20
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --records) records="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release --bin tusk --example produce_throughput --example rdkafka_latency >&2
tusk="$root/target/release/tusk"
ex="$root/target/release/examples"
work="$(mktemp -d "$root/target/bench-cluster.XXXXXX")"
pids=()
stop_brokers() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_brokers
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

# start N: N brokers (1: a one-node cluster), fresh data; sets `bootstrap`. (Not run in a
# subshell: the pids it records must reach stop_brokers.)
start() {
    local n="$1" base=29092 voters=""
    bootstrap=""
    rm -rf "$work/data"
    for i in $(seq 1 "$n"); do
        voters="${voters:+$voters,}$i@127.0.0.1:$((base + 100 * (i - 1) + 1))"
    done
    for i in $(seq 1 "$n"); do
        local port=$((base + 100 * (i - 1)))
        local cluster=()
        if [ "$n" -gt 1 ]; then
            cluster=(--node-id "$i" --controller-quorum-voters "$voters")
        fi
        "$tusk" serve --data-dir "$work/data/$i" --listen "127.0.0.1:$port" --shards 1 \
            --metrics-listen off "${cluster[@]}" >"$work/broker-$n-$i.log" 2>&1 &
        pids+=("$!")
        bootstrap="${bootstrap:+$bootstrap,}127.0.0.1:$port"
    done
    for i in $(seq 1 "$n"); do wait_port $((base + 100 * (i - 1))); done
    "$tusk" topic create bench --partitions 3 --replication-factor "$n" \
        --bootstrap "127.0.0.1:$base" >/dev/null
    sleep 1
}

fio_p50_us() {
    mkdir -p "$work/fio"
    fio --name=durable-append --directory="$work/fio" --filename=fio.dat --rw=write --bs=4k \
        --size=1G --direct=1 --sync=dsync --ioengine=psync --iodepth=1 --time_based \
        --runtime=5 --output-format=json --output="$work/fio.json" >/dev/null 2>&1
    rm -rf "$work/fio"
    python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]["write"]
print(round(j["clat_ns"]["percentile"]["50.000000"] / 1000))' "$work/fio.json"
}

results="$work/results.txt"
: >"$results"
for round in $(seq 1 "$rounds"); do
    echo "fio $round $(fio_p50_us)" >>"$results"
    for n in 1 3; do
        start "$n"
        rps=$("$ex/produce_throughput" "$bootstrap" bench "$records" 1024 2>&1 |
            grep -oE 'records_per_sec=[0-9.]+' | head -1 | cut -d= -f2)
        echo "throughput $n $rps" >>"$results"
        "$ex/rdkafka_latency" --bootstrap "$bootstrap" --topic bench --partitions 3 \
            --rate "$rate" --duration-s "$duration" --json "$work/lat-$n-$round.json" \
            >/dev/null 2>&1
        python3 - "$work/lat-$n-$round.json" "$n" >>"$results" <<'PY'
import json, sys
lat = json.load(open(sys.argv[1]))["latency_ms"]
print("latency", sys.argv[2], lat["p50"], lat["p99"], lat["p999"])
PY
        stop_brokers
    done
done

python3 - "$results" "$rounds" "$records" "$rate" "$duration" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float("nan")
fio = med([float(r[1]) for r in rows if r[0] == "fio"])
rps = {n: med([float(r[2]) for r in rows if r[0] == "throughput" and r[1] == n]) for n in "13"}
lat = {n: [med([float(r[i]) for r in rows if r[0] == "latency" and r[1] == n]) for i in (2, 3, 4)]
       for n in "13"}
print(f"three brokers sharing this machine, RF 3, librdkafka, acks=all, 1 KiB; medians of {sys.argv[2]} rounds")
print(f"  disk: fio 4 KiB O_DSYNC qd1 p50 {fio:.0f} us")
print(f"  throughput ({sys.argv[3]} records): one broker {rps['1']:.0f} rec/s, three {rps['3']:.0f} rec/s, ratio {rps['3'] / rps['1']:.2f} (target >= 0.6)")
for n in "13":
    p50, p99, p999 = lat[n]
    print(f"  latency at {sys.argv[4]} rec/s for {sys.argv[5]} s, {'one broker' if n == '1' else 'three brokers'}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, p99.9 {p999:.2f} ms")
PY
