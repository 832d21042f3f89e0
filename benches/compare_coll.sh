#!/usr/bin/env bash
# Weft vs Open MPI and MPICH on the same collective measurements, same run.
#
#   benches/compare_coll.sh [REPETITIONS] [RANKS...]   (default 5; 2 and 4)
#
# Installs Open MPI and MPICH from Debian's packages when missing, builds
# Weft's osu_coll and our C program benches/peers/mpi_coll.c against each
# MPI, runs the three alternately REPETITIONS times at each number of ranks,
# each time both ways they time calls (back-to-back calls, the largest over
# the ranks; and with --osu as the OSU micro-benchmarks do, each call alone
# followed by a barrier, the average over the ranks), and prints for each
# way the medians and Weft's ratio to each peer (lower is better), ending
# with the cells that miss the goals.
# On a machine with fewer cores than ranks, the ranks run oversubscribed,
# and MPICH (whose ranks poll without yielding) is left out. With two cores
# or more, it also prints how long a cache line took to cross between cores
# 0 and 1 and back (line_trip) before each repetition and after the last:
# small calls cost little more than such crossings, and a virtual machine's
# host may move its virtual CPUs to where they cost several times as much.
set -euo pipefail
reps=${1:-5}
shift || true
ranks=("$@")
[ ${#ranks[@]} -gt 0 ] || ranks=(2 4)
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
source benches/mpi_peers.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mpi_peers coll "$out"
trip() {
    if [ "$(nproc)" -ge 2 ]; then
        target/release/line_trip 2>/dev/null || echo "?"
    fi
}
# The two ways of timing: the directory of their runs, osu_coll's flag, and
# what their tables say.
methods=(loop osu)
declare -A flag=([loop]="" [osu]="--osu")
declare -A what=(
    [loop]="back-to-back calls, the largest over the ranks"
    [osu]="OSU's way: each call alone, then an untimed barrier; the average over the ranks"
)
for n in "${ranks[@]}"; do
    for m in "${methods[@]}"; do
        mkdir -p "$out/$n/$m"
    done
    trips=()
    for i in $(seq "$reps"); do
        trips+=("$(trip)")
        for m in "${methods[@]}"; do
            # shellcheck disable=SC2086 # the flag is one word or none
            target/release/weftrun -n "$n" target/release/osu_coll --raw ${flag[$m]} \
                > "$out/$n/$m/weft.$i"
            # Open MPI needs these flags to run as root and on few cores.
            # shellcheck disable=SC2086
            mpirun.openmpi --allow-run-as-root --oversubscribe -np "$n" "$out/coll_openmpi" \
                ${flag[$m]} > "$out/$n/$m/openmpi.$i"
            if [ "$n" -le "$(nproc)" ]; then
                # shellcheck disable=SC2086
                mpiexec.mpich -n "$n" "$out/coll_mpich" ${flag[$m]} > "$out/$n/$m/mpich.$i"
            fi
        done
    done
    trips+=("$(trip)")
    for m in "${methods[@]}"; do
        if [ "$n" -le "$(nproc)" ]; then
            echo "## $n ranks ($(nproc) cores); ${what[$m]}"
            python3 "$top/benches/medians.py" "$out/$n/$m" "$reps" weft openmpi mpich
        else
            # MPICH's ranks poll without yielding: oversubscribed, one run takes
            # many minutes, so it is left out.
            echo "## $n ranks on $(nproc) cores: oversubscribed; MPICH left out; ${what[$m]}"
            python3 "$top/benches/medians.py" "$out/$n/$m" "$reps" weft openmpi
        fi
    done
    if [ -n "${trips[*]}" ]; then
        echo "# line round trip between cores 0 and 1 before each repetition and after the last (ns): ${trips[*]}"
    fi
done
echo "# units: us per call"
