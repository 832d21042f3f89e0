#!/usr/bin/env bash
# Installs the system packages Weft builds against on Debian 12: a C
# toolchain, pkg-config and hwloc (process placement). Pass --peers to also
# install Open MPI (the OpenSHMEM peer of the comparison benchmarks).
set -euo pipefail
pkgs=(build-essential pkg-config libhwloc-dev)
[ "${1:-}" = "--peers" ] && pkgs+=(openmpi-bin libopenmpi-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
