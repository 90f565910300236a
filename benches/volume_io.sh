#!/usr/bin/env bash
# End-to-end volume I/O benchmark: a three-node `hpchain dev` cluster on
# loopback (3 replicas) driven by the built-in load generator
# (`hpchain volume bench`, the volume client inside node 1), next to fio on a
# plain file on the same disk in the same run (io_uring, direct I/O) as the
# baseline. Prints one table; also node memory (RSS) idle and under load.
# "CPU us/op" is the whole machine's busy CPU time (all processes and the
# kernel; not idle, I/O wait or steal) over the run, per operation: what an
# I/O costs the 2 cores that both hpchain and fio share.
#
#   benches/volume_io.sh [seconds-per-workload]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-5}"
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
source benches/dev_cluster.sh bench 29400
rss_mib() { for p in $NODE_PIDS; do ps -o rss= -p "$p"; done | awk '{printf "%d ", $1/1024}'; }
RSS_IDLE=$(rss_mib)

bench() { # pattern bs qd -> "iops MiB/s p50 p99"
  "$HPCHAIN" --json volume bench demo --pattern "$1" --block-size "$2" --queue-depth "$3" --seconds "$SECONDS_EACH" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.1f %d %d" % (r["iops"], r["bytes_per_second"]/2**20, r["latency_us_p50"], r["latency_us_p99"]))'
}
fio_run() { # rw bs qd fsync -> "iops MiB/s p50 p99"
  fio --name=b --filename="$WORK/fio.file" --size=1G --ioengine=io_uring --direct=1 \
      --rw="$1" --bs="$2" --iodepth="$3" --fsync="$4" --runtime="$SECONDS_EACH" --time_based \
      --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; k="write" if j["write"]["io_bytes"] else "read"; x=j[k]; p=x["clat_ns"]["percentile"]; print("%.0f %.1f %d %d" % (x["iops"], x["bw"]/1024, p["50.000000"]/1000, p["99.000000"]/1000))'
}

# Runs a command printing "iops MiB/s p50 p99" and adds the machine's busy
# CPU per operation (us) and its busy share (%) over the command.
with_cpu() {
  local s0 s1 out
  s0=$(head -1 /proc/stat); out=$("$@"); s1=$(head -1 /proc/stat)
  python3 - "$s0" "$s1" "$out" <<'PY'
import os, sys
a, b = ([int(x) for x in s.split()[1:9]] for s in sys.argv[1:3])
user, nice, system, idle, iowait, irq, softirq, steal = (y - x for x, y in zip(a, b))
busy = user + nice + system + irq + softirq
total = busy + idle + iowait + steal
out = sys.argv[3].split()
seconds = total / os.sysconf("SC_CLK_TCK") / os.cpu_count()
cpu_us = busy / os.sysconf("SC_CLK_TCK") * 1e6 / (float(out[0]) * seconds)
print(" ".join(out), "%.1f" % cpu_us, "%.0f" % (100 * busy / total))
PY
}

# Write the whole volume once so reads hit data, as fio's do, not holes.
"$HPCHAIN" volume bench demo --pattern write --block-size 4M --queue-depth 8 --seconds 120 --once >/dev/null
sync # the fill's writeback must not slow what is measured next
fio --name=fill --filename="$WORK/fio.file" --size=1G --rw=write --bs=4M --direct=1 --ioengine=io_uring >/dev/null 2>&1

printf "%-34s %10s %10s %10s %10s %11s %6s\n" "workload" "IOPS" "MiB/s" "p50 us" "p99 us" "CPU us/op" "busy%"
row() { printf "%-34s %10s %10s %10s %10s %11s %6s\n" "$1" $2; }
FIO_SYNC_QD32=$(with_cpu fio_run randwrite 4k 32 1)
row "fio randwrite 4K qd32 fsync=1"   "$FIO_SYNC_QD32"
row "fio randwrite 4K qd32 no fsync"  "$(with_cpu fio_run randwrite 4k 32 0)"
HPCHAIN_QD32=$(with_cpu bench randwrite 4K 32)
row "hpchain randwrite 4K qd32"       "$HPCHAIN_QD32"
RSS_LOAD=$(rss_mib)
row "fio randwrite 4K qd1 fsync=1"    "$(with_cpu fio_run randwrite 4k 1 1)"
row "hpchain randwrite 4K qd1"        "$(with_cpu bench randwrite 4K 1)"
row "fio randread 4K qd32"            "$(with_cpu fio_run randread 4k 32 0)"
row "hpchain randread 4K qd32"        "$(with_cpu bench randread 4K 32)"
row "fio randread 4K qd1"             "$(with_cpu fio_run randread 4k 1 0)"
row "hpchain randread 4K qd1"         "$(with_cpu bench randread 4K 1)"
row "fio write 1M qd4 fsync=1"        "$(with_cpu fio_run write 1m 4 1)"
row "hpchain write 1M qd4"            "$(with_cpu bench write 1M 4)"
row "fio read 1M qd4"                 "$(with_cpu fio_run read 1m 4 0)"
row "hpchain read 1M qd4"             "$(with_cpu bench read 1M 4)"
echo "node RSS MiB idle: $RSS_IDLE  under randwrite qd32: $RSS_LOAD"
# The random-write goal, and the CPU a write may cost at the goal's rate if
# every cycle of the machine went to it.
python3 - "$FIO_SYNC_QD32" "$HPCHAIN_QD32" <<'PY'
import os, sys
fio, ours = (s.split() for s in sys.argv[1:3])
goal = 0.4 * float(fio[0])
print("randwrite 4K qd32: %.1f%% of fio fsync=1 (goal 40%%: %.0f IOPS); at that rate a write "
      "may cost at most %.0f us of the machine's CPU, it costs %s us now"
      % (100 * float(ours[0]) / float(fio[0]), goal, os.cpu_count() * 1e6 / goal, ours[4]))
PY
