# Sourced by compare_p2p.sh and compare_coll.sh.
#
# mpi_peers PROGRAM DIR: installs Open MPI and MPICH from Debian's packages when
# missing, builds Weft's release binaries, and builds benches/peers/mpi_PROGRAM.c
# against each MPI as DIR/PROGRAM_openmpi and DIR/PROGRAM_mpich.
mpi_peers() {
    if ! command -v mpicc.openmpi >/dev/null || ! command -v mpicc.mpich >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            openmpi-bin libopenmpi-dev mpich libmpich-dev >/dev/null
    fi
    cargo build --release -q -p weft -p weft-benches
    mpicc.openmpi -O2 "benches/peers/mpi_$1.c" -o "$2/$1_openmpi"
    mpicc.mpich -O2 "benches/peers/mpi_$1.c" -o "$2/$1_mpich"
}
