#!/usr/bin/env bash
# mount.sh: `puce mount` beside a plain directory of the same disk and `restic mount`, in one run.
#
# Cases (each the best of $REPEAT runs, wall time):
#   seqread   sequential read of large files (cat of $BIG_MB MiB of incompressible files)
#   ls-lR     `ls -lR` of a snapshot of the corpus version
#   readall   reading every file of that snapshot
#   cp-a      `cp -a` of the corpus version into the mount (spaces/), then until it is committed
#   memory    peak resident memory (VmHWM) of the puce and restic mount processes after the
#             read cases, and of puce's after the copies too
# puce reads through snapshots/ (and spaces/ for seqread); restic through its snapshots/ID/.
# Targets (issue 5): seqread >= 0.5x plain; readall >= 3x faster than restic; cp-a <= 3x plain.
#
# Method. Before every timed run the page cache is dropped (when /proc/sys/vm/drop_caches is
# writable), then, for the "warm" figures, what the tool reads underneath is read once: the plain
# directory itself, the puce repository, the restic repository (and the source of `cp -a`).
# Warm figures therefore measure the software, not this VM's disk; the mount's own page cache
# is always empty when a run starts, so every byte really goes through the file system.
# "cold" figures (COLD=1, the default) drop the cache and read nothing first.
# The plain directory, the repositories and the write-back area of the mount are all on the
# disk of $WORK; `cp -a` writes to that disk for both (plain target and write-back area).
#
# Usage: benches/mount.sh [CORPUS_VERSION_DIR]   (default ~/.cache/puce-corpus/versions/day01)
#   WORK=/path scratch directory (default under /tmp); BIG_MB (default 512); REPEAT (default 3);
#   COLD=0 skips the cold-cache figures; PUCE_MOUNT_ARGS extra `puce mount` arguments;
#   PUCE_BIN a puce binary to use instead of building this tree's.
#   COMMIT_DELAY the mount's --commit-delay (default 1).
#   OUT where the table is written (default benches/results/mount-latest.md).
#   WAKE_HERE=Y|N sets the kernel's fuse wake_here parameter for the run (when this kernel has
#   it and it is writable) and puts it back after; by default the machine's setting is used.
#   It applies to every FUSE file system, restic's mount included; the table says which.
#   Needs restic and fusermount3.
#
# "repeat" figures: before each timed run, the same files are read once through the same path
# (the mount, or the plain directory), as a user opening a file a second time: the plain
# directory and the mounts then serve from their page cache, if they keep one.
set -euo pipefail
export LC_ALL=C TZ=UTC
HERE=$(cd "$(dirname "$0")" && pwd)
V=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus/versions/day01}
BIG_MB=${BIG_MB:-512}
REPEAT=${REPEAT:-3}
COLD=${COLD:-1}
[ -d "$V" ] || { echo "no corpus version at $V: run benches/corpus/make_corpus.sh" >&2; exit 1; }
for t in restic fusermount3 bc; do
  command -v "$t" >/dev/null || { echo "mount.sh needs $t" >&2; exit 1; }
done
if [ -n "${PUCE_BIN:-}" ]; then
  PUCE=$PUCE_BIN
else
  (cd "$HERE/.." && cargo build --release -q -p puce-cli)
  PUCE=$HERE/../target/release/puce
fi
W=${WORK:-$(mktemp -d /tmp/puce-mountbench.XXXXXX)}
mkdir -p "$W"
export PUCE_REPO=$W/puce-repo XDG_CACHE_HOME=$W/cache XDG_DATA_HOME=$W/data XDG_CONFIG_HOME=$W/config
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/cache/restic
PM=$W/puce-mnt RM=$W/restic-mnt
cleanup() {
  fusermount3 -u -z "$PM" 2>/dev/null || true
  fusermount -u -z "$RM" 2>/dev/null || fusermount3 -u -z "$RM" 2>/dev/null || true
  [ -n "${PUCE_PID:-}" ] && kill "$PUCE_PID" 2>/dev/null || true
  [ -n "${RESTIC_PID:-}" ] && kill "$RESTIC_PID" 2>/dev/null || true
  sleep 1
  rm -rf "$W"
  [ "$WH_BEFORE" = none ] || [ "$WH_BEFORE" = "$(cat "$WH")" ] || echo "$WH_BEFORE" >"$WH" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

WH=/sys/module/fuse/parameters/wake_here
WH_BEFORE=$(cat "$WH" 2>/dev/null || echo none)
if [ -n "${WAKE_HERE:-}" ]; then
  echo "$WAKE_HERE" 2>/dev/null >"$WH" || { echo "cannot set $WH (root, and a kernel that has it)" >&2; exit 1; }
fi
WH_NOW=$(cat "$WH" 2>/dev/null || echo none)

CAN_DROP=0
if sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then CAN_DROP=1; fi
[ "$CAN_DROP" = 1 ] || COLD=0
drop() { sync; [ "$CAN_DROP" = 0 ] || echo 3 >/proc/sys/vm/drop_caches; }
warm() { for d in "$@"; do find "$d" -type f -print0 | xargs -0 -r cat >/dev/null; done; }

# measure WARM-DIRS -- CMD...: best wall time in seconds of $REPEAT runs of CMD, each after
# dropping the page cache and reading WARM-DIRS (a space-separated list; "" for a cold run).
measure() {
  local dirs=$1; shift; shift
  local b=""
  for _ in $(seq "$REPEAT"); do
    drop
    # shellcheck disable=SC2086
    [ -z "$dirs" ] || warm $dirs
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
# shellcheck disable=SC2086
"$PUCE" mount "$PM" --commit-delay "${COMMIT_DELAY:-1}" ${PUCE_MOUNT_ARGS:-} 2>"$W/puce-mount.log" &
PUCE_PID=$!
restic -r "$W/restic-repo" mount "$RM" >"$W/restic-mount.log" 2>&1 &
RESTIC_PID=$!
wait_mounted "$PM"; wait_mounted "$RM"
PSNAP_BIG=$(ls -d "$PM"/snapshots/big/*/ | tail -1)
PSNAP=$(ls -d "$PM"/snapshots/corpus/*/ | tail -1)
RSNAP_BIG=$RM/snapshots/$(ls "$RM/snapshots" | grep -v latest | head -1)$W/big
RSNAP=$RM/snapshots/$(ls "$RM/snapshots" | grep -v latest | tail -1)$V
[ -f "$RSNAP_BIG/big1.bin" ] || { echo "restic mount layout unexpected: $RSNAP_BIG" >&2; exit 1; }

PR=$W/puce-repo RR=$W/restic-repo
readall() { find "$1" -type f -print0 | xargs -0 cat; }
declare -A T
# case NAME CMD...: the plain directory, puce and restic forms are given by the caller.
run() { # KEY UNDERLYING -- CMD...
  local key=$1 under=$2; shift 2
  T[$key.warm]=$(measure "$under" "$@")
  echo "   $key warm ${T[$key.warm]}" >&2
  if [ "$COLD" = 1 ]; then
    T[$key.cold]=$(measure "" "$@")
    echo "   $key cold ${T[$key.cold]}" >&2
  fi
}
# repeat KEY FILES...: best time of cat FILES, each run after reading FILES once.
repeat() {
  local key=$1; shift
  T[$key.rep]=$(measure "$*" -- cat "$@")
  echo "   $key repeat ${T[$key.rep]}" >&2
}
echo "== seqread" >&2
run seq.plain "$W/big" -- cat "$W"/big/big1.bin "$W"/big/big2.bin
run seq.puce "$PR" -- cat "$PSNAP_BIG"big1.bin "$PSNAP_BIG"big2.bin
run seq.space "$PR" -- cat "$PM"/spaces/big/big1.bin "$PM"/spaces/big/big2.bin
run seq.restic "$RR" -- cat "$RSNAP_BIG"/big1.bin "$RSNAP_BIG"/big2.bin
repeat seq.plain "$W"/big/big1.bin "$W"/big/big2.bin
repeat seq.puce "$PSNAP_BIG"big1.bin "$PSNAP_BIG"big2.bin
repeat seq.space "$PM"/spaces/big/big1.bin "$PM"/spaces/big/big2.bin
repeat seq.restic "$RSNAP_BIG"/big1.bin "$RSNAP_BIG"/big2.bin
echo "== ls -lR" >&2
run ls.plain "$W/plain-version" -- ls -lR "$W/plain-version"
run ls.puce "$PR" -- ls -lR "$PSNAP"
run ls.restic "$RR" -- ls -lR "$RSNAP"
echo "== read all" >&2
run all.plain "$W/plain-version" -- readall "$W/plain-version"
run all.puce "$PR" -- readall "$PSNAP"
run all.restic "$RR" -- readall "$RSNAP"

# peak_kb PID: the peak resident memory of process PID so far, in KiB.
peak_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
mem_puce_read=$(peak_kb "$PUCE_PID") mem_restic_read=$(peak_kb "$RESTIC_PID")

echo "== cp -a" >&2
nsnaps() { "$PUCE" snapshots --space corpus --json | grep -c '"id"' || true; }
# timed_cp PREPARE TARGET RUN: time of `cp -a $V TARGET`, source warm, after `PREPARE RUN`.
timed_cp() {
  local s e
  $1 "$3"
  drop; warm "$V"
  s=$(date +%s.%N); cp -a "$V" "$2"; e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
prep_plain() { rm -rf "$W/cp-plain"; mkdir -p "$W/cp-plain"; }
# The commit of the previous copy must be over before the next copy is timed.
prep_puce() {
  local want=$(( $1 ))
  for _ in $(seq 600); do [ "$(nsnaps)" -ge "$want" ] && return 0; sleep 0.5; done
  echo "the mount did not commit copy $(( $1 - 1 ))" >&2; exit 1
}
# Plain and mount copies alternate, so that both meet the disk in the same state (creating
# files after many deletions is slow on ext4, and varies from run to run).
min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi; }
cpp="" cpu=""
for i in $(seq "$REPEAT"); do
  t=$(timed_cp prep_plain "$W/cp-plain/copy$i" "$i"); cpp=$(min "$cpp" "$t")
  u=$(timed_cp prep_puce "$PM/spaces/corpus/copy$i" "$i"); cpu=$(min "$cpu" "$u")
  printf '   cp -a run %s: plain %.3f, mount %.3f\n' "$i" "$t" "$u" >&2
done
T[cp.plain.warm]=$(printf '%.3f' "$cpp")
T[cp.puce.warm]=$(printf '%.3f' "$cpu")
prep_puce $((REPEAT + 1))
cp -a "$V" "$PM/spaces/corpus/copy-last"
mem_puce_cp=$(peak_kb "$PUCE_PID")
# Until committed: SIGTERM commits what is pending, then unmounts.
s=$(date +%s.%N); kill -TERM "$PUCE_PID"; wait "$PUCE_PID" || true; e=$(date +%s.%N)
commit_tail=$(printf '%.3f' "$(echo "$e - $s" | bc -l)")
PUCE_PID=""
snaps=$("$PUCE" snapshots --space corpus | tail -1)

files=$(find "$V" -type f | wc -l)
size=$(du -sh "$V" | cut -f1)
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
mbps() { printf '%.0f' "$(echo "$BIG_MB / $1" | bc -l)"; }
# row LABEL KEY-PREFIX KIND CACHE: one table row; KIND speed (seqread), time (others).
row() {
  local label=$1 k=$2 kind=$3 c=$4
  local p=${T[$k.plain.$c]} u=${T[$k.puce.$c]} r=${T[$k.restic.$c]:-}
  local vs_plain vs_restic=""
  if [ "$kind" = speed ]; then
    vs_plain="$(ratio "$p" "$u")x speed ($(mbps "$u") MiB/s)"
  else
    vs_plain="$(ratio "$u" "$p")x time"
  fi
  [ -z "$r" ] || vs_restic="$(ratio "$r" "$u")x faster"
  local cl=$c
  [ "$c" != rep ] || cl=repeat
  echo "| $label, $cl | $p | $u | $r | $vs_plain | $vs_restic |"
}
caches="warm"
[ "$COLD" = 1 ] && caches="warm cold"
out=${OUT:-$HERE/results/mount-latest.md}
mkdir -p "$HERE/results"
{
  echo "# benches/mount.sh, $(date -u +%Y-%m-%d) ($(nproc) cores, best of $REPEAT, one run)"
  echo
  echo "Version: $(basename "$V") ($files files, $size); large files: $BIG_MB MiB incompressible."
  echo "warm: page cache dropped, then the plain directory / the puce repository / the restic"
  echo "repository (and the cp -a source) read once before each timed run, so the figures measure"
  echo "the software; the mount's own page cache is empty at the start of each run. cold: page"
  echo "cache dropped, nothing read first (this VM's disk dominates). repeat: the same files read"
  echo "once through the same path first (a file opened again; each file system's page cache)."
  echo "All on one disk ($(df --output=source "$W" | tail -1)); cp -a runs alternate plain and mount."
  echo
  echo "Kernel: $(uname -r), fuse wake_here: $WH_NOW (see docs/guide.md, \"Mount speed\"); puce mount args: ${PUCE_MOUNT_ARGS:-none}."
  echo
  echo "| case | plain dir | puce mount | restic mount | puce vs plain | puce vs restic |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  row "seqread snapshots/ (s)" seq speed rep
  T[seqs.plain.rep]=${T[seq.plain.rep]}; T[seqs.puce.rep]=${T[seq.space.rep]}
  row "seqread spaces/ (s)" seqs speed rep
  for c in $caches; do
    row "seqread snapshots/ (s)" seq speed "$c"
    T[seqs.plain.$c]=${T[seq.plain.$c]}; T[seqs.puce.$c]=${T[seq.space.$c]}
    row "seqread spaces/ (s)" seqs speed "$c"
    row "ls -lR snapshot (s)" ls time "$c"
    row "read whole snapshot (s)" all time "$c"
  done
  row "cp -a into spaces/ (s)" cp time warm
  echo "| then commit + unmount (s) | | $commit_tail | | | |"
  mib() { printf '%.0f' "$(echo "$1 / 1024" | bc -l)"; }
  echo "| peak memory after the reads (MiB) | | $(mib "$mem_puce_read") | $(mib "$mem_restic_read") | | $(ratio "$mem_restic_read" "$mem_puce_read")x less |"
  echo "| peak memory after the copies (MiB) | | $(mib "$mem_puce_cp") | | | |"
  echo
  echo "Targets: seqread >= 0.5x plain speed; whole snapshot >= 3x faster than restic; cp -a <= 3x plain time."
  echo "After the copies: $snaps"
} | tee "$out"
