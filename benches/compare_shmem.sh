#!/usr/bin/env bash
# Weft vs Open MPI's OpenSHMEM on the same one-sided measurements, same run.
#
#   benches/compare_shmem.sh [REPETITIONS]     (default 5)
#
# Builds Weft's osu_rma and our small C program benches/peers/shmem_rma.c
# (with oshcc), runs each REPETITIONS times alternately on 2 PEs, and prints
# the medians and Weft's ratio to OpenSHMEM (for latency lower is better, for
# bandwidth higher is better). Installs Open MPI from Debian's packages when
# oshcc is missing. Open MPI's OpenSHMEM may crash in shmem_finalize on some
# machines; the figures it printed before that still count.
set -euo pipefail
reps=${1:-5}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if ! command -v oshcc >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi
cargo build --release -q -p weft -p weft-benches
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
oshcc -O2 benches/peers/shmem_rma.c -o "$out/shmem_rma"
for i in $(seq "$reps"); do
    target/release/weftrun -n 2 target/release/osu_rma --raw > "$out/weft.$i"
    # Open MPI needs these flags to run as root and on few cores.
    oshrun --allow-run-as-root --oversubscribe -np 2 "$out/shmem_rma" > "$out/peer.$i" 2>/dev/null || true
done
python3 - "$out" "$reps" <<'PY'
import statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
def load(prefix):
    runs = {}
    for i in range(1, reps + 1):
        for line in open(f"{out}/{prefix}.{i}"):
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                runs.setdefault((parts[0], int(parts[1])), []).append(float(parts[2]))
    return {k: statistics.median(v) for k, v in runs.items()}
weft, peer = load("weft"), load("peer")
print(f"# Weft vs Open MPI OpenSHMEM, 2 PEs on one node, medians of {reps} runs")
print(f"{'operation':<20} {'size':>8} {'weft':>12} {'openshmem':>12} {'ratio':>7}")
for key in sorted(peer, key=lambda k: (k[0].endswith('bandwidth'), k[0], k[1])):
    if key not in weft:
        continue
    unit = "ns" if key[0].endswith("latency") else "MB/s"
    w, p = weft[key], peer[key]
    print(f"{key[0]:<20} {key[1]:>8} {w:>9.1f} {unit:<2} {p:>9.1f} {unit:<2} {w / p:>7.2f}")
print("# ratio = weft / openshmem: below 1 is better for latency, above 1 for bandwidth")
for key in [("memcpy_bandwidth", 1 << 20), ("cache_line_round_trip", 64)]:
    if key in weft:
        print(f"# reference {key[0]} ({key[1]} B): {weft[key]:.1f}")
pb = weft.get(("put_bandwidth", 1 << 20)); mb = weft.get(("memcpy_bandwidth", 1 << 20))
if pb and mb:
    print(f"# weft put bandwidth at 1 MiB / memcpy at 1 MiB: {pb / mb:.2f}")
PY
