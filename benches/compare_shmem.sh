#!/usr/bin/env bash
# Weft vs Open MPI's OpenSHMEM on the same one-sided measurements, same run.
#
#   benches/compare_shmem.sh [REPETITIONS]     (default 5)
#
# Builds Weft's osu_rma and our small C program benches/peers/shmem_rma.c
# (with oshcc), runs each REPETITIONS times alternately on 2 PEs, and prints
# the medians and Weft's ratio to OpenSHMEM (for latency lower is better, for
# bandwidth higher is better), with this machine's memcpy bandwidth and
# cache-line round trip as references. Installs Open MPI from Debian's packages when
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
python3 "$top/benches/medians.py" "$out" "$reps" weft peer
echo "# units: latency in ns, bandwidth in MB/s; peer = Open MPI's OpenSHMEM"
echo "# weft-only rows are this machine's references: memcpy bandwidth, cache-line round trip"
