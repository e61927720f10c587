#!/usr/bin/env bash
# mount.sh: `puce mount` beside a plain directory of the same disk and `restic mount`, in one run.
#
# Cases (each the best of $REPEAT runs, wall time):
#   seqread   sequential read of large files (cat of $BIG_MB MiB of incompressible files)
#   cp-a      `cp -a` of one corpus version into the mount (spaces/), and until it is committed
#   ls-lR     `ls -lR` of a snapshot of that version
#   readall   reading every file of that snapshot
# puce reads through snapshots/ (and spaces/ for seqread); restic through its snapshots/latest.
# Targets (issue 5): seqread >= 0.5x plain; readall >= 3x faster than restic; cp-a <= 3x plain.
#
# Usage: benches/mount.sh [CORPUS_VERSION_DIR]   (default ~/.cache/puce-corpus/versions/day01)
#   WORK=/path scratch directory (default under /tmp, same disk as the plain copies);
#   BIG_MB (default 512), REPEAT (default 3). Needs restic, fusermount3, GNU time.
# Page caches are dropped before each run when /proc/sys/vm/drop_caches is writable; otherwise
# every tool reads warm (the table says which).
set -euo pipefail
export LC_ALL=C TZ=UTC
HERE=$(cd "$(dirname "$0")" && pwd)
V=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus/versions/day01}
BIG_MB=${BIG_MB:-512}
REPEAT=${REPEAT:-3}
[ -d "$V" ] || { echo "no corpus version at $V: run ../shared/corpus/make_corpus.sh" >&2; exit 1; }
for t in restic fusermount3; do
  command -v "$t" >/dev/null || { echo "mount.sh needs $t" >&2; exit 1; }
done
(cd "$HERE/.." && cargo build --release -q -p puce-cli)
PUCE=$HERE/../target/release/puce
W=${WORK:-$(mktemp -d /tmp/puce-mountbench.XXXXXX)}
mkdir -p "$W"
export PUCE_REPO=$W/puce-repo XDG_CACHE_HOME=$W/cache XDG_DATA_HOME=$W/data
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/cache/restic
PM=$W/puce-mnt RM=$W/restic-mnt
cleanup() {
  fusermount3 -u -z "$PM" 2>/dev/null || true
  fusermount -u -z "$RM" 2>/dev/null || fusermount3 -u -z "$RM" 2>/dev/null || true
  [ -n "${PUCE_PID:-}" ] && kill "$PUCE_PID" 2>/dev/null || true
  [ -n "${RESTIC_PID:-}" ] && kill "$RESTIC_PID" 2>/dev/null || true
  sleep 1
  rm -rf "$W"
}
trap cleanup EXIT

CACHE=warm
drop() { sync; if echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then CACHE=cold; fi; }
# best TIME-COMMAND...: best wall time in seconds of $REPEAT runs.
best() {
  local b=""
  for _ in $(seq "$REPEAT"); do
    drop
    local s e t
    s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc -l)" = 1 ]; then b=$t; fi
  done
  printf '%.3f' "$b"
}
wait_mounted() {
  for _ in $(seq 600); do
    grep -q " $1 " /proc/self/mountinfo && [ -d "$1/snapshots" ] && return 0
    sleep 0.1
  done
  echo "mount at $1 did not appear" >&2; exit 1
}

echo "== data" >&2
mkdir -p "$W/big"
for i in 1 2; do
  head -c $((BIG_MB / 2))M /dev/urandom >"$W/big/big$i.bin"
done
cp -a "$V" "$W/plain-version"           # the plain directory, same disk
"$PUCE" init -q
"$PUCE" -q snapshot "$W/big" --space big
"$PUCE" -q snapshot "$V" --space corpus
restic init -q -r "$W/restic-repo"
restic -q -r "$W/restic-repo" backup "$W/big" >/dev/null
restic -q -r "$W/restic-repo" backup "$V" >/dev/null

echo "== mounts" >&2
mkdir -p "$PM" "$RM"
"$PUCE" mount "$PM" --commit-delay 1 2>"$W/puce-mount.log" &
PUCE_PID=$!
restic -r "$W/restic-repo" mount "$RM" >"$W/restic-mount.log" 2>&1 &
RESTIC_PID=$!
wait_mounted "$PM"; wait_mounted "$RM"
PSNAP_BIG=$(ls -d "$PM"/snapshots/big/*/ | tail -1)
PSNAP=$(ls -d "$PM"/snapshots/corpus/*/ | tail -1)
RSNAP_BIG=$RM/snapshots/$(ls "$RM/snapshots" | grep -v latest | head -1)$W/big
RSNAP=$RM/snapshots/$(ls "$RM/snapshots" | grep -v latest | tail -1)$V
[ -f "$RSNAP_BIG/big1.bin" ] || { echo "restic mount layout unexpected: $RSNAP_BIG" >&2; exit 1; }

readall() { find "$1" -type f -print0 | xargs -0 cat; }
seq_plain=$(best cat "$W"/big/big*.bin)
seq_puce=$(best cat "$PSNAP_BIG"/big*.bin)
seq_space=$(best cat "$PM"/spaces/big/big*.bin)
seq_restic=$(best cat "$RSNAP_BIG"/big*.bin)
ls_plain=$(best ls -lR "$W/plain-version")
ls_puce=$(best ls -lR "$PSNAP")
ls_restic=$(best ls -lR "$RSNAP")
all_plain=$(best readall "$W/plain-version")
all_puce=$(best readall "$PSNAP")
all_restic=$(best readall "$RSNAP")

echo "== cp -a" >&2
cp_plain=$(best sh -c "rm -rf '$W/cp-plain' && cp -a '$V' '$W/cp-plain'")
cp_puce=""
for i in $(seq "$REPEAT"); do
  drop
  s=$(date +%s.%N); cp -a "$V" "$PM/spaces/corpus/copy$i"; e=$(date +%s.%N)
  t=$(echo "$e - $s" | bc -l)
  if [ -z "$cp_puce" ] || [ "$(echo "$t < $cp_puce" | bc -l)" = 1 ]; then cp_puce=$t; fi
done
cp_puce=$(printf '%.3f' "$cp_puce")
# Until committed: SIGTERM commits what is pending, then unmounts.
s=$(date +%s.%N); kill -TERM "$PUCE_PID"; wait "$PUCE_PID" || true; e=$(date +%s.%N)
commit_tail=$(printf '%.3f' "$(echo "$e - $s" | bc -l)")
PUCE_PID=""
snaps=$("$PUCE" snapshots --space corpus | tail -1)

files=$(find "$V" -type f | wc -l)
size=$(du -sh "$V" | cut -f1)
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
mbps() { printf '%.0f' "$(echo "$BIG_MB / $1" | bc -l)"; }
out=$HERE/results/mount-latest.md
mkdir -p "$HERE/results"
{
  echo "# benches/mount.sh, $(date -u +%Y-%m-%d) ($(nproc) cores, page cache $CACHE, best of $REPEAT)"
  echo
  echo "Version: $(basename "$V") ($files files, $size); large files: $BIG_MB MiB incompressible."
  echo
  echo "| case | plain dir | puce mount | restic mount | puce vs plain | puce vs restic |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  echo "| seqread snapshots/ (s) | $seq_plain | $seq_puce | $seq_restic | $(ratio "$seq_plain" "$seq_puce")x speed ($(mbps "$seq_puce") MiB/s) | $(ratio "$seq_restic" "$seq_puce")x faster |"
  echo "| seqread spaces/ (s) | $seq_plain | $seq_space | | $(ratio "$seq_plain" "$seq_space")x speed | |"
  echo "| ls -lR snapshot (s) | $ls_plain | $ls_puce | $ls_restic | $(ratio "$ls_puce" "$ls_plain")x time | $(ratio "$ls_restic" "$ls_puce")x faster |"
  echo "| read whole snapshot (s) | $all_plain | $all_puce | $all_restic | $(ratio "$all_puce" "$all_plain")x time | $(ratio "$all_restic" "$all_puce")x faster |"
  echo "| cp -a into spaces/ (s) | $cp_plain | $cp_puce | | $(ratio "$cp_puce" "$cp_plain")x time | |"
  echo "| then commit + unmount (s) | | $commit_tail | | | |"
  echo
  echo "Targets: seqread >= 0.5x plain speed; whole snapshot >= 3x faster than restic; cp -a <= 3x plain time."
  echo "After the copies: $snaps"
} | tee "$out"
