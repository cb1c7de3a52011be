#!/usr/bin/env bash
# Builds the library, CLI and tests with AddressSanitizer + UndefinedBehaviorSanitizer into
# build-asan/ and runs the test suite there. Any sanitizer report fails the test it happens in.
# The whole suite (test-find-package aside: a user project without the sanitizer runtime cannot link
# the instrumented library). scripts/test.sh, the README's test command and CI, runs this after the
# ordinary build and tests.
#   scripts/sanitize.sh [CTEST ARGS...]     e.g. -R test-sae
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-asan
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINTERP_SANITIZE=address,undefined \
  -DINTERP_BUILD_BENCH=OFF -DINTERP_BUILD_EXAMPLES=OFF >/dev/null
start=$(date +%s)
cmake --build "$build"
echo "sanitize: build done in $(( $(date +%s) - start )) s ($build)"
# LibTorch keeps some allocations of its static initialisers for the process's life (not ours).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
start=$(date +%s)
ctest --output-on-failure -j2 --timeout 1800 "$@"
echo "sanitize: tests done in $(( $(date +%s) - start )) s"
