#!/usr/bin/env bash
# Set up, build and run the whole test suite, then the whole suite again under ASan + UBSan in a
# second build folder (build-asan/; docs/reliability.md). This is the README's test command and what CI
# runs. INTERP_NO_SANITIZE=1 skips the sanitizer part.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh --no-data
bash scripts/build.sh
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure -j2 --timeout 900)
echo "test: build + tests done in $(( $(date +%s) - start )) s"
if [ "${INTERP_NO_SANITIZE:-0}" != 1 ]; then
  bash scripts/sanitize.sh
  echo "test: with the sanitizer build and tests, $(( $(date +%s) - start )) s in all"
fi
