#!/usr/bin/env bash
# Configures and builds interp (Release, Ninja) into BUILD_DIR (default: build).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "$@" >/dev/null
start=$(date +%s)
cmake --build "$build"
echo "build: done in $(( $(date +%s) - start )) s ($build)"
