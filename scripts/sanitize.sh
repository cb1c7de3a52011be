#!/usr/bin/env bash
# Builds the library, CLI and tests with AddressSanitizer + UndefinedBehaviorSanitizer into
# build-asan/ and runs the test suite there. Any sanitizer report fails the test it happens in.
#   scripts/sanitize.sh [CTEST ARGS...]     e.g. -R test-sae
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-asan bash scripts/build.sh -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINTERP_SANITIZE=address,undefined \
  -DINTERP_BUILD_BENCH=OFF -DINTERP_BUILD_EXAMPLES=OFF
# LibTorch keeps some allocations of its static initialisers for the process's life (not ours).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd build-asan
start=$(date +%s)
ctest --output-on-failure -j2 --timeout 1800 "$@"
echo "sanitize: tests done in $(( $(date +%s) - start )) s"
