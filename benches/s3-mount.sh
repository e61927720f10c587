#!/usr/bin/env bash
# s3-mount.sh: sequential read through `puce mount` of a repository whose packs are on Garage
# (one node on loopback), beside `puce restore` of the same files from the same Garage, in one
# run. Two files of BIG_MB/2 MiB of random data are snapshotted together (so they share packs,
# as files of one folder do), then each case is run $REPEAT times and the best time kept.
#
# Usage: benches/s3-mount.sh      (needs garage, fusermount3, bc)
#   BIG_MB (default 512); REPEAT (default 3); PUCE_BIN a puce binary instead of this tree's;
#   OUT where the table goes (default benches/results/s3-mount-latest.md).
set -euo pipefail
export LC_ALL=C TZ=UTC
HERE=$(cd "$(dirname "$0")" && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
BIG_MB=${BIG_MB:-512}
REPEAT=${REPEAT:-3}
for t in garage fusermount3 bc; do
  command -v "$t" >/dev/null || { echo "s3-mount.sh needs $t" >&2; exit 1; }
done
if [ -n "${PUCE_BIN:-}" ]; then
  PUCE=$PUCE_BIN
else
  (cd "$HERE/.." && cargo build --release -q -p puce-cli)
  PUCE=$HERE/../target/release/puce
fi
W=$(mktemp -d /tmp/puce-s3mount.XXXXXX)
GPID="" MPID=""
cleanup() {
  fusermount3 -u -z "$W/mnt" 2>/dev/null || true
  [ -z "$MPID" ] || kill "$MPID" 2>/dev/null || true
  [ -z "$GPID" ] || kill "$GPID" 2>/dev/null || true
  sleep 0.5
  rm -rf "$W"
}
trap cleanup EXIT

# ---- Garage, one node
# shellcheck source=benches/garage.sh
. "$HERE/garage.sh"
start_garage "$W/garage"
export XDG_CACHE_HOME=$W/cache XDG_DATA_HOME=$W/data XDG_CONFIG_HOME=$W/config

echo "== data" >&2
R=$W/repo
mkdir -p "$W/big" "$W/mnt"
head -c $((BIG_MB / 2))M /dev/urandom >"$W/big/b1"
head -c $((BIG_MB / 2))M /dev/urandom >"$W/big/b2"
"$PUCE" init -q "$R" --backend s3://bench/puce --endpoint "$ENDPOINT"
"$PUCE" --repo "$R" -q snapshot "$W/big" --space big

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
best() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

echo "== mount" >&2
mount_best="" garage_mount=""
for i in $(seq "$REPEAT"); do
  # A fresh mount each time: its caches start empty.
  "$PUCE" --repo "$R" mount "$W/mnt" --read-only 2>"$W/mount.log" &
  MPID=$!
  for _ in $(seq 300); do [ -d "$W/mnt/snapshots/big" ] && break; sleep 0.1; done
  S=$(ls -d "$W"/mnt/snapshots/big/*/ | tail -1)
  g0=$(ticks "$GPID")
  t=$(secs cat "${S}b1" "${S}b2")
  g1=$(ticks "$GPID")
  kill -TERM "$MPID"; wait "$MPID"; MPID=""
  echo "   mount read $i: $t s" >&2
  mount_best=$(best "$mount_best" "$t")
  garage_mount=$((g1 - g0))
done

echo "== restore" >&2
restore_best="" garage_restore=""
for i in $(seq "$REPEAT"); do
  rm -rf "$W/restored"
  g0=$(ticks "$GPID")
  t=$(secs "$PUCE" --repo "$R" -q restore big@latest "$W/restored")
  g1=$(ticks "$GPID")
  echo "   restore $i: $t s" >&2
  restore_best=$(best "$restore_best" "$t")
  garage_restore=$((g1 - g0))
done
cmp "$W/big/b1" "$W/restored/b1" && cmp "$W/big/b2" "$W/restored/b2"

out=${OUT:-$HERE/results/s3-mount-latest.md}
mkdir -p "$(dirname "$out")"
hz=$(getconf CLK_TCK)
{
  echo "# benches/s3-mount.sh, $(date -u +%Y-%m-%d) ($(nproc) cores, best of $REPEAT, one run)"
  echo
  echo "$BIG_MB MiB of random data in two files snapshotted together, packs on one Garage node on"
  echo "loopback; each mount read in a fresh \`puce mount --read-only\` (empty caches)."
  echo
  echo "| case | time (s) | MiB/s | Garage CPU, last run (s) |"
  echo "| --- | ---: | ---: | ---: |"
  printf '| read through the mount | %.3f | %.0f | %.2f |\n' "$mount_best" \
    "$(echo "$BIG_MB / $mount_best" | bc -l)" "$(echo "$garage_mount / $hz" | bc -l)"
  printf '| puce restore | %.3f | %.0f | %.2f |\n' "$restore_best" \
    "$(echo "$BIG_MB / $restore_best" | bc -l)" "$(echo "$garage_restore / $hz" | bc -l)"
} | tee "$out"
