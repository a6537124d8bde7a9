#!/usr/bin/env bash
# The seeded simulation of replication and the controller (src/simulation/).
#   scripts/simulate.sh --seed S        one seed, every event printed (replays exactly)
#   scripts/simulate.sh --seeds N       seeds 1..N (CI runs 12)
#   scripts/simulate.sh --seeds N --harsh   a fault every 300 ms for 60 s per seed
set -euo pipefail
cd "$(dirname "$0")/.."
seed="" seeds="" harsh=""
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) seed="$2"; shift 2 ;;
        --seeds) seeds="$2"; shift 2 ;;
        --harsh) harsh=1; shift ;;
        *) echo "usage: $0 --seed S | --seeds N [--harsh]" >&2; exit 2 ;;
    esac
done
if [ -z "$seed" ] && [ -z "$seeds" ]; then
    echo "usage: $0 --seed S | --seeds N [--harsh]" >&2
    exit 2
fi
if [ -n "$harsh" ]; then
    export TUSK_SIM_FAULT_EVERY_MS=300 TUSK_SIM_FAULTY_MS=60000
fi
if [ -n "$seed" ]; then
    export TUSK_SIM_SEED="$seed" TUSK_SIM_TRACE=1
else
    export TUSK_SIM_SEEDS="$seeds"
fi
exec cargo test --release --test simulation seeded_runs -- --nocapture
