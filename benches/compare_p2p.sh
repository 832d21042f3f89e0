#!/usr/bin/env bash
# Weft vs Open MPI and MPICH on the same two-sided measurements, same run.
#
#   benches/compare_p2p.sh [REPETITIONS]     (default 5)
#
# Installs Open MPI and MPICH from Debian's packages when missing, builds
# Weft's osu_p2p and our C program benches/peers/mpi_p2p.c against each MPI,
# runs the three alternately REPETITIONS times on 2 ranks, and prints the
# medians and Weft's ratio to each peer (for latency lower is better, for
# bandwidth and rate higher is better).
set -euo pipefail
reps=${1:-5}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
source benches/mpi_peers.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mpi_peers p2p "$out"
for i in $(seq "$reps"); do
    target/release/weftrun -n 2 target/release/osu_p2p --raw > "$out/weft.$i"
    # Open MPI needs these flags to run as root and on few cores.
    mpirun.openmpi --allow-run-as-root --oversubscribe -np 2 "$out/p2p_openmpi" > "$out/openmpi.$i"
    mpiexec.mpich -n 2 "$out/p2p_mpich" > "$out/mpich.$i"
done
python3 "$top/benches/medians.py" "$out" "$reps" weft openmpi mpich
echo "# units: latency and round trips in us, bandwidth in MB/s, rate in messages/s"
