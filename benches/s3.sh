#!/usr/bin/env bash
# s3.sh: the twelve nightly corpus snapshots and a restore of the last version, with puce on a
# local directory, puce on Garage, and restic on the same Garage (S3 backend), in one run.
# Garage runs as a single node on loopback with its own data in a temporary directory.
#
# Usage: benches/s3.sh [CORPUS_VERSIONS_DIR]     (needs garage, restic, rsync, GNU time)
set -euo pipefail
export LC_ALL=C TZ=UTC
HERE=$(cd "$(dirname "$0")" && pwd)
C=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus/versions}
export PATH="$HOME/.cargo/bin:$PATH"
for t in garage restic rsync /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "s3.sh needs $t" >&2; exit 1; }
done
[ -d "$C/day01" ] || { echo "no corpus at $C" >&2; exit 1; }
(cd "$HERE/.." && cargo build --release -q -p puce-cli)
PUCE=$HERE/../target/release/puce
W=$(mktemp -d /tmp/puce-s3bench.XXXXXX)
RD=$(mktemp -d /dev/shm/puce-s3restore.XXXXXX 2>/dev/null || mktemp -d "$W/restore.XXXXXX")
GPID=
cleanup() { [ -n "$GPID" ] && kill "$GPID" 2>/dev/null; rm -rf "$W" "$RD"; }
trap cleanup EXIT

# ---- Garage, one node
# shellcheck source=benches/garage.sh
. "$HERE/garage.sh"
start_garage "$W/garage"
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/cache/restic XDG_CACHE_HOME=$W/cache/xdg XDG_CONFIG_HOME=$W/config

warm() { find "$1" -type f -print0 | xargs -0 cat > /dev/null; }
timed() { # NAME CMD...
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$W/t.one" "$@" > "$W/out.log" 2>&1 || {
    echo "FAILED: $*" >&2; cat "$W/out.log" >&2; exit 1; }
  echo "$TOOL $name $(cat "$W/t.one")" >> "$W/times"
}
: > "$W/times"
DAYS=("$C"/day*)

run_tool() { # TOOL
  TOOL=$1
  rm -rf "$W/stage"; mkdir -p "$W/stage"
  case $TOOL in
    puce-local) R=$W/repo-local; "$PUCE" init -q "$R" ;;
    puce-garage) R=$W/repo-garage; "$PUCE" init -q "$R" --backend s3://bench/puce --endpoint "$ENDPOINT" ;;
    restic-garage) R=s3:$ENDPOINT/bench/restic; restic -r "$R" -q init ;;
  esac
  for d in "${DAYS[@]}"; do
    rsync -a --delete "$d/" "$W/stage/"
    warm "$W/stage"
    case $TOOL in
      puce-*) timed "nightly" "$PUCE" --repo "$R" -q snapshot "$W/stage" --space corpus ;;
      restic-*) timed "nightly" restic -r "$R" -q backup --host bench "$W/stage" ;;
    esac
  done
  for i in 1 2 3; do
    rm -rf "$RD/r"; mkdir -p "$RD/r"
    case $TOOL in
      puce-*) timed "restore$i" "$PUCE" --repo "$R" -q restore corpus@latest "$RD/r" ;;
      restic-*) timed "restore$i" restic -r "$R" -q restore latest --target "$RD/r" ;;
    esac
  done
  got=$RD/r; [ "$TOOL" = restic-garage ] && got=$RD/r$W/stage
  diff -r -q --no-dereference "${DAYS[-1]}" "$got" > /dev/null || { echo "$TOOL: restore differs" >&2; exit 1; }
  echo "done: $TOOL" >&2
}

for t in puce-local puce-garage restic-garage; do run_tool "$t"; done

python3 - "$W/times" "$(date -u +%Y-%m-%d)" <<'EOF' | tee "$HERE/results/s3-latest.md"
import sys, collections
nightly = collections.defaultdict(float); restore = {}; rss = collections.defaultdict(int)
for line in open(sys.argv[1]):
    tool, what, secs, kb = line.split()
    if what == "nightly": nightly[tool] += float(secs)
    else: restore[tool] = min(restore.get(tool, 1e9), float(secs))
    rss[tool] = max(rss[tool], int(kb))
base = "restic-garage"
print(f"Twelve nightly corpus snapshots (3.29 GB logical) and a restore of the last version; "
      f"Garage 2.5.0, one node on loopback; 2 cores; {sys.argv[2]}; one run (restore: best of 3, into tmpfs).\n")
print("| tool | nightly total | restore last | peak memory |")
print("|---|---|---|---|")
for t in ["puce-local", "puce-garage", "restic-garage"]:
    r = lambda v, b: f" ({v / b:.2f}x)" if t != base and b else ""
    print(f"| {t} | {nightly[t]:.2f} s{r(nightly[t], nightly[base])} | {restore[t]:.2f} s{r(restore[t], restore[base])} | {rss[t] // 1024} MiB |")
EOF
