#!/usr/bin/env bash
# ab-mount.sh: two puce binaries (say, before and after a change) alternated on `puce mount` in
# one run, medians of RUNS (default 5). What each run measures, per binary, on one corpus
# version (default day01), each case with the repository read once first (warm: the figures
# measure the software, not this VM's disk) and the mount freshly started (its own cache
# empty):
#   readall:  reading every file of the snapshot through snapshots/ (tar to /dev/null);
#   ls-lR:    `ls -lR` of the snapshot;
#   cp-a:     `cp -a` of the version into spaces/;
#   commit:   from SIGTERM until the mount has committed that copy and exited.
# Usage: benches/ab-mount.sh OLD_PUCE NEW_PUCE [CORPUS_VERSION_DIR]
# Needs: fusermount3, tar, python3. Prints a table (Markdown) with medians and new/old ratios;
# TIMES=FILE keeps every run's figures (lines "label metric seconds"), to pool several runs.
# OLD_INIT / NEW_INIT add `puce init` arguments (NEW_INIT=--no-encrypt: a binary whose
# repositories are encrypted by default against one from before, on the same format).
set -euo pipefail
export LC_ALL=C TZ=UTC
OLD=$(realpath "$1")
NEW=$(realpath "$2")
V=${3:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus/versions/day01}
RUNS=${RUNS:-5}
[ -d "$V" ] || { echo "no corpus version at $V: run benches/corpus/make_corpus.sh" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "ab-mount.sh needs fusermount3" >&2; exit 1; }
W=$(mktemp -d /tmp/puce-abm.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  fusermount3 -u -z "$W/mnt" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
warm() { tar -cf - -C "$1" . > /dev/null; }
mount_it() {
  "$1" mount "$W/mnt" --commit-delay 1 2> "$W/mount.log" &
  PID=$!
  for _ in $(seq 200); do mountpoint -q "$W/mnt" && return 0; sleep 0.05; done
  echo "the mount did not come up: $(cat "$W/mount.log")" >&2; exit 1
}
unmount_it() {
  kill -TERM "$PID"; wait "$PID" || true; PID=
}

# One run of binary $1 (label $2); appends "label metric seconds" lines to $W/times.
run() {
  local P=$1 L=$2 t snap
  rm -rf "$W/repo" "$W/cache" "$W/data" "$W/mnt"
  mkdir -p "$W/mnt"
  export PUCE_REPO=$W/repo XDG_CACHE_HOME=$W/cache XDG_DATA_HOME=$W/data XDG_CONFIG_HOME=$W/config
  local args
  if [ "$L" = new ]; then read -ra args <<< "${NEW_INIT:-}"; else read -ra args <<< "${OLD_INIT:-}"; fi
  "$P" init -q "${args[@]}"
  "$P" -q snapshot "$V" --space corpus
  for metric in readall ls-lR; do
    warm "$W/repo"
    mount_it "$P"
    snap=$(ls -d "$W"/mnt/snapshots/corpus/*/ | tail -1)
    t=$(now)
    if [ "$metric" = readall ]; then tar -cf - -C "$snap" . > /dev/null; else ls -lR "$snap" > /dev/null; fi
    echo "$L $metric $(since "$t")" >> "$W/times"
    unmount_it
  done
  warm "$W/repo"; warm "$V"
  mount_it "$P"
  t=$(now); cp -a "$V" "$W/mnt/spaces/corpus/copy"
  echo "$L cp-a $(since "$t")" >> "$W/times"
  t=$(now); unmount_it
  echo "$L commit $(since "$t")" >> "$W/times"
  [ "$("$P" snapshots --space corpus --json | grep -c '"id"')" -ge 2 ] \
    || { echo "$L: the copy was not committed" >&2; exit 1; }
}

for ((r = 1; r <= RUNS; r++)); do
  echo "run $r/$RUNS" >&2
  if ((r % 2)); then run "$OLD" old; run "$NEW" new; else run "$NEW" new; run "$OLD" old; fi
done
[ -n "${TIMES:-}" ] && cat "$W/times" >> "$TIMES"
python3 - "$W/times" <<'EOF'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    label, metric, secs = line.split()
    t.setdefault(metric, {}).setdefault(label, []).append(float(secs))
print("| metric | old (s) | new (s) | new/old |")
print("|---|---|---|---|")
for metric, by in t.items():
    o, n = statistics.median(by["old"]), statistics.median(by["new"])
    print(f"| {metric} | {o:.3f} | {n:.3f} | {n / o:.3f} |")
EOF
