#!/usr/bin/env bash
# Weft vs Open MPI and MPICH on the same collective measurements, same run.
#
#   benches/compare_coll.sh [REPETITIONS] [RANKS...]   (default 5; 2 and 4)
#
# Installs Open MPI and MPICH from Debian's packages when missing, builds
# Weft's osu_coll and our C program benches/peers/mpi_coll.c against each
# MPI, and runs them REPETITIONS times at each number of ranks, both ways
# they time calls (back-to-back calls, the largest over the ranks; and with
# --osu as the OSU micro-benchmarks do, each call alone followed by a
# barrier, the average over the ranks), one measure (barrier, broadcast,
# ...) at a time, the programs one after the other. It prints for each way
# the medians and Weft's ratio to each peer (lower is better), ending with
# the cells that miss the goals.
# On a machine with fewer cores than ranks, the ranks run oversubscribed,
# and MPICH (whose ranks poll without yielding) is left out. With two cores
# or more, it measures how long a cache line takes to cross between cores
# 0 and 1 and back (line_trip) just before and after every run, and prints
# the tables again for the runs measured while the cores shared a cache
# and for those measured while they did not (medians.py): small calls cost
# little more than such crossings, and a virtual machine's host may move
# its virtual CPUs between such placements within a repetition.
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
declare -A how=(
    [loop]="back-to-back calls, the largest over the ranks"
    [osu]="OSU's way: each call alone, then an untimed barrier; the average over the ranks"
)
measures=(barrier broadcast reduce allreduce allgather alltoall)
for n in "${ranks[@]}"; do
    for m in "${methods[@]}"; do
        mkdir -p "$out/$n/$m"
    done
    progs=(weft openmpi)
    # MPICH's ranks poll without yielding: oversubscribed, one run takes
    # many minutes, so it is left out.
    if [ "$n" -le "$(nproc)" ]; then
        progs+=(mpich)
    fi
    for i in $(seq "$reps"); do
        for m in "${methods[@]}"; do
            for what in "${measures[@]}"; do
                for prog in "${progs[@]}"; do
                    before=$(trip)
                    # shellcheck disable=SC2086 # the flag is one word or none
                    case $prog in
                        weft)
                            target/release/weftrun -n "$n" target/release/osu_coll --raw \
                                ${flag[$m]} --only "$what" ;;
                        # Open MPI needs these flags to run as root and on few cores.
                        openmpi)
                            mpirun.openmpi --allow-run-as-root --oversubscribe -np "$n" \
                                "$out/coll_openmpi" ${flag[$m]} --only "$what" ;;
                        mpich)
                            mpiexec.mpich -n "$n" "$out/coll_mpich" ${flag[$m]} --only "$what" ;;
                    esac >> "$out/$n/$m/$prog.$i"
                    echo "$what $before $(trip)" >> "$out/$n/$m/$prog.$i.trips"
                done
            done
        done
    done
    for m in "${methods[@]}"; do
        if [ "$n" -le "$(nproc)" ]; then
            echo "## $n ranks ($(nproc) cores); ${how[$m]}"
        else
            echo "## $n ranks on $(nproc) cores: oversubscribed; MPICH left out; ${how[$m]}"
        fi
        python3 "$top/benches/medians.py" "$out/$n/$m" "$reps" "${progs[@]}"
    done
done
echo "# units: us per call"
