#!/usr/bin/env bash
# Fuzzes every parser of outside input with libFuzzer under ASan + UBSan (clang, libfuzzer-14-dev).
#
#   scripts/fuzz.sh [SECONDS (600)] [RUNS (1000000)] [TARGET...]
#
# Builds build-fuzz/ (clang, -DINTERP_SANITIZE=address,undefined -DINTERP_FUZZ=ON), then runs each
# target until RUNS executions or SECONDS, starting from its seed corpus (tests/fuzz/corpus/TARGET,
# copied to build-fuzz/corpus/TARGET, which grows). A crash is written to tests/fuzz/crashes/TARGET/
# (commit it: the test suite replays it) and the script exits non-zero. Prints executions, rate and
# coverage per target.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
runs=${2:-1000000}
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
# no TARGET: every tests/fuzz/fuzz_NAME.cpp
[ ${#targets[@]} -gt 0 ] || targets=($(ls tests/fuzz/fuzz_*.cpp | sed 's|.*/fuzz_||; s|\.cpp$||'))
command -v clang++ >/dev/null || { echo "fuzz.sh: needs clang++ (apt install clang libfuzzer-14-dev libomp-14-dev)"; exit 2; }
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DINTERP_SANITIZE=address,undefined -DINTERP_FUZZ=ON -DINTERP_BUILD_TESTS=OFF -DINTERP_BUILD_BENCH=OFF \
  -DINTERP_BUILD_EXAMPLES=OFF -DINTERP_BUILD_APPS=OFF >/dev/null
cmake --build build-fuzz --target $(printf 'fuzz_%s ' "${targets[@]}")
# LibTorch's static initialisers keep memory for the process's life: not leaks of ours.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
printf '%-16s %10s %10s %8s %8s  %s\n' target runs exec/s cov ft result
for t in "${targets[@]}"; do
  work=build-fuzz/corpus/$t
  mkdir -p "$work" "tests/fuzz/crashes/$t"
  cp -n tests/fuzz/corpus/$t/* "$work"/ 2>/dev/null || true
  log=build-fuzz/fuzz_$t.log
  set +e
  build-fuzz/fuzz_$t "$work" -runs="$runs" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="tests/fuzz/crashes/$t/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  result=ok
  if [ $rc -ne 0 ]; then result="FAILED (rc $rc; see $log and tests/fuzz/crashes/$t/)"; status=1; fi
  printf '%-16s %10s %10s %8s %8s  %s\n' "$t" "$execs" "$rate" "$cov" "$ft" "$result"
done
exit $status
