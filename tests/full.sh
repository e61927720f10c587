#!/usr/bin/env bash
# The full fault and hostile-input run behind the figures in docs/reliability.md: the same
# tests CI runs in reduced form, with hundreds of trials. Output: one log per suite in OUT
# (default target/reliability), and a summary of the lines each test prints.
#   tests/full.sh            # everything (about 40 minutes on 2 cores)
#   FUZZ_SECONDS=0 tests/full.sh   # without the fuzzers
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/reliability}
mkdir -p "$OUT"
cargo build -q -p puce-cli
cargo test -q -p puce-tests --no-run
run() { # name env... -- test args...
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  echo "== $name"
  local t0=$SECONDS
  env "${envs[@]}" cargo test -q -p puce-tests "$@" -- --nocapture --test-threads 1 > "$OUT/$name.log" 2>&1 \
    || { echo "FAILED: $name (see $OUT/$name.log)"; tail -30 "$OUT/$name.log"; exit 1; }
  grep -E "crash test|kill test|concurrent gc|corruption|random heal|repair kill|healed|verified" "$OUT/$name.log" | sed 's/^/   /' || true
  echo "   ok in $((SECONDS - t0)) s"
}
run snapshot-kills PUCE_CRASH_ITERS=${SNAPSHOT_KILLS:-200} -- --test crash
run gc-kills PUCE_GC_KILLS=${GC_KILLS:-100} -- --test admin gc_killed_at_random_moments
run gc-concurrent PUCE_GC_ROUNDS=${GC_ROUNDS:-40} -- --test admin gc_and_snapshots_run_concurrently
run sync-kills PUCE_CRASH_ITERS=${SYNC_KILLS:-60} -- --test crash_sync
run mount-kills PUCE_CRASH_ITERS=${MOUNT_KILLS:-100} -- --test mount kill_9_during_commits
run mount-model PUCE_MODEL_OPS=${MODEL_OPS:-3000} -- --test mount_model
run corruption PUCE_CORRUPT_TRIALS=${CORRUPT_TRIALS:-400} -- --test reliability
run heal PUCE_HEAL_TRIALS=${HEAL_TRIALS:-50} PUCE_HEAL_KILLS=${HEAL_KILLS:-40} -- --test heal
run hostile X=1 -- --test hostile
run access X=1 -- --test node refused
if [ "${FUZZ_SECONDS:-60}" -gt 0 ]; then
  echo "== fuzz (${FUZZ_SECONDS:-60} s per target)"
  fuzz/run.sh "${FUZZ_SECONDS:-60}" 2>&1 | tee "$OUT/fuzz.log" | grep -E "fuzzing|Done|#[0-9]+ *DONE" | sed 's/^/   /'
fi
echo "all suites passed; logs in $OUT"
