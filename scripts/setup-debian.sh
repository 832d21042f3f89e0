#!/usr/bin/env bash
# Installs the system packages Weft builds against on Debian 12: a C
# toolchain, pkg-config and hwloc (process placement). Pass --verbs to also
# install libibverbs and its headers (the `verbs` feature), --peers to also
# install Open MPI and MPICH (the peers of the comparison benchmarks).
set -euo pipefail
pkgs=(build-essential pkg-config libhwloc-dev)
for arg in "$@"; do
    case $arg in
        --verbs) pkgs+=(libibverbs-dev rdma-core ibverbs-providers) ;;
        --peers) pkgs+=(openmpi-bin libopenmpi-dev mpich libmpich-dev) ;;
        *) echo "setup-debian.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
