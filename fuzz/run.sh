#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 30). Needs cargo-fuzz (cargo install cargo-fuzz).
# The machine has one stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its -Z flags.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-30}
export RUSTC_BOOTSTRAP=1
# Build every target first: a build that fails (a full disk, a missing tool) says so here, not
# as a crash of the first regression.
echo "building the fuzz targets"
if ! cargo fuzz build >/tmp/fuzz-build.log 2>&1; then
  tail -40 /tmp/fuzz-build.log >&2
  echo "the fuzz targets did not build (log above; free disk: $(df -h . | tail -1))" >&2
  exit 1
fi
# Replay the cases that once crashed.
for f in regressions/*; do
  [ -e "$f" ] || continue
  t=$(basename "$f" | sed 's/-.*//')
  if ! cargo fuzz run "$t" "$f" >/tmp/fuzz-replay.log 2>&1; then
    tail -40 /tmp/fuzz-replay.log >&2
    echo "regression $f fails again (log above)" >&2
    exit 1
  fi
done
for t in $(cargo fuzz list); do
  mkdir -p corpus/$t
  echo "fuzzing $t for ${SECONDS_EACH}s"
  # On a crash, show the panic and the input's file (the last lines are only a backtrace).
  if ! cargo fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 \
    >"/tmp/fuzz-$t.log" 2>&1; then
    grep -E -A4 "panicked|ERROR|SUMMARY|Test unit written" "/tmp/fuzz-$t.log" | head -40 >&2
    exit 1
  fi
  tail -1 "/tmp/fuzz-$t.log"
done
