#!/usr/bin/env bash
# Runs a command on an emulated 7200 rpm disk: a cgroup v1 blkio throttle on the disk that
# holds --dir (default: ./data, or . if it does not exist) limits the command's writes to
# --write-iops (default 150) and --write-bps (default 160000000), and optionally its reads.
# Seek time itself is not modelled. Needs root and the cgroup v1 blkio controller. The cgroup
# is removed when the command ends.
#
#   scripts/hdd-sim.sh [--write-iops N] [--write-bps N] [--read-iops N] [--read-bps N]
#                      [--dir PATH] -- CMD [ARGS...]
set -euo pipefail

write_iops=150
write_bps=160000000
read_iops=
read_bps=
dir=
while [[ $# -gt 0 ]]; do
    case $1 in
        --write-iops) write_iops=$2; shift 2 ;;
        --write-bps) write_bps=$2; shift 2 ;;
        --read-iops) read_iops=$2; shift 2 ;;
        --read-bps) read_bps=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "hdd-sim: unknown option '$1' (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
done
if [[ $# -eq 0 ]]; then
    echo "hdd-sim: no command given: scripts/hdd-sim.sh [options] -- CMD [ARGS...]" >&2
    exit 2
fi
for n in "$write_iops" "$write_bps" ${read_iops:+"$read_iops"} ${read_bps:+"$read_bps"}; do
    [[ $n =~ ^[0-9]+$ && $n -gt 0 ]] || { echo "hdd-sim: '$n' is not a positive number" >&2; exit 2; }
done
if [[ -z $dir ]]; then
    dir=./data
    [[ -d $dir ]] || dir=.
fi
[[ -d $dir ]] || { echo "hdd-sim: --dir '$dir' is not a directory" >&2; exit 2; }

root=/sys/fs/cgroup/blkio
[[ -d $root ]] || { echo "hdd-sim: no cgroup v1 blkio controller at $root" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "hdd-sim: needs root (it writes cgroup files)" >&2; exit 1; }

# The throttle applies to whole disks: resolve the directory's filesystem to its disk.
source_dev=$(findmnt -no SOURCE --target "$dir" | head -n1)
name=$(basename "$(readlink -f "$source_dev")")
if [[ ! -e /sys/class/block/$name ]]; then
    echo "hdd-sim: cannot find the block device of $dir (filesystem source '$source_dev')" >&2
    exit 1
fi
if [[ -e /sys/class/block/$name/partition ]]; then
    name=$(basename "$(readlink -f "/sys/class/block/$name/..")")
fi
majmin=$(cat "/sys/class/block/$name/dev")

group=$root/tusk-hdd-sim-$$
mkdir "$group"
cleanup() {
    # Processes left in the group (children that outlived the command) go back to the root.
    if [[ -f $group/cgroup.procs ]]; then
        while read -r pid; do echo "$pid" > "$root/cgroup.procs" 2>/dev/null || true; done < "$group/cgroup.procs"
    fi
    rmdir "$group" 2>/dev/null || true
}
trap cleanup EXIT
echo "$majmin $write_iops" > "$group/blkio.throttle.write_iops_device"
echo "$majmin $write_bps" > "$group/blkio.throttle.write_bps_device"
[[ -n $read_iops ]] && echo "$majmin $read_iops" > "$group/blkio.throttle.read_iops_device"
[[ -n $read_bps ]] && echo "$majmin $read_bps" > "$group/blkio.throttle.read_bps_device"
echo "hdd-sim: /dev/$name ($majmin): write ${write_iops} IOPS, ${write_bps} B/s${read_iops:+, read $read_iops IOPS}${read_bps:+, read $read_bps B/s}" >&2

# The child joins the group first, then becomes the command.
set +e
bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' hdd-sim "$group" "$@"
status=$?
set -e
exit $status
