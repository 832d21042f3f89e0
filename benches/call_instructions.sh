#!/usr/bin/env bash
# Instructions one small one-way collective call executes on each member,
# Weft's and Open MPI's and MPICH's:
#
#   benches/call_instructions.sh [OP] [BYTES] [RANKS]   (default broadcast, 8, 2)
#
# Runs call_cost (benches/src/bin/call_cost.rs), and its MPI counterpart
# benches/peers/mpi_call_cost.c against each MPI, under valgrind's
# callgrind twice, with 8 and with 24 calls a round, counting only the
# instructions executed inside the calls, and prints, for each member, the
# difference of those divided by the difference of its calls: one call's
# own work, without its waits (a member that receives finds its blocks
# there), the first calls' cold paths cancelling out. Unlike times on a
# shared machine, the figures are the same from run to run, so that a
# change to the small calls' path can be weighed by them first (and then by
# time: instructions are not all equal). Installs valgrind, Open MPI and
# MPICH when missing.
set -euo pipefail
op=${1:-broadcast}
bytes=${2:-8}
ranks=${3:-2}
rounds=200
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
source benches/mpi_peers.sh
command -v valgrind >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mpi_peers call_cost "$out"
cat >"$out/under" <<'EOF'
#!/bin/sh
rank=${PMI_RANK:-$OMPI_COMM_WORLD_RANK}
exec valgrind -q --tool=callgrind --toggle-collect=one_call --toggle-collect=call_cost::one_call \
    --callgrind-out-file="$OUT/$NAME.$CALLS.$rank" "$@" 2>"$OUT/log.$NAME.$CALLS.$rank"
EOF
chmod +x "$out/under"
export OUT=$out
for calls in 8 24; do
    export CALLS=$calls
    args=("$op" "$bytes" "$calls" "$rounds" 20000)
    NAME=weft target/release/weftrun -n "$ranks" "$out/under" target/release/call_cost "${args[@]}" >/dev/null
    NAME=openmpi mpirun.openmpi --allow-run-as-root --oversubscribe -np "$ranks" \
        -x OUT -x CALLS -x NAME=openmpi "$out/under" "$out/call_cost_openmpi" "${args[@]}" >/dev/null
    NAME=mpich mpiexec.mpich -n "$ranks" -genv NAME mpich "$out/under" \
        "$out/call_cost_mpich" "${args[@]}" >/dev/null
done
per_call() {
    local total8 total24
    total8=$(awk '/^(summary|totals):/ {print $2; exit}' "$out/$1.8.$2")
    total24=$(awk '/^(summary|totals):/ {print $2; exit}' "$out/$1.24.$2")
    echo $(((total24 - total8) / (16 * rounds)))
}
echo "# instructions per $op of $bytes B at $ranks ranks (one call's own work, waits left out)"
printf '%-4s %8s %8s %6s %8s %6s\n' PE weft openmpi ratio mpich ratio
for ((r = 0; r < ranks; r++)); do
    w=$(per_call weft "$r")
    o=$(per_call openmpi "$r")
    m=$(per_call mpich "$r")
    awk -v r="$r" -v w="$w" -v o="$o" -v m="$m" \
        'BEGIN { printf "%-4s %8d %8d %6.2f %8d %6.2f\n", r, w, o, w / o, m, w / m }'
done
