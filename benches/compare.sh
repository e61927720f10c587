#!/usr/bin/env bash
# compare.sh: puce beside restic and borg on the real corpus, in one run.
#
# Backs up the twelve nightly versions in order into one repository per tool, in two modes:
#   nightly:    one staging folder updated with `rsync -a --delete` before each snapshot
#               (what a nightly backup sees), then a no-change re-snapshot;
#   every-byte: each version from its own path, so every byte is read.
# Then restores the last version (best of three). Prints a table (and writes it to benches/results/):
# total snapshot time, no-change re-snapshot time, restore time, repository size and peak
# memory, each with its ratio to restic.
#
# Usage: benches/compare.sh [CORPUS_VERSIONS_DIR]
#   CORPUS_VERSIONS_DIR defaults to ~/.cache/puce-corpus/versions (benches/corpus/make_corpus.sh)
#   TOOLS="puce restic borg" selects tools; WORK=/path sets the scratch directory;
#   RESTORE_DIR=/path sets where restores are written (default /dev/shm: on this VM's disk,
#   creating 15k files costs 1 to 10 s of kernel time from run to run, for every tool alike,
#   which drowns what the tools themselves do).
# Needs: restic, borg, rsync, GNU time (Debian: apt-get install restic borgbackup rsync time).
set -euo pipefail
export LC_ALL=C TZ=UTC
HERE=$(cd "$(dirname "$0")" && pwd)
C=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus/versions}
TOOLS=${TOOLS:-"puce restic borg"}
[ -d "$C/day01" ] || { echo "no corpus at $C: run benches/corpus/make_corpus.sh" >&2; exit 1; }
for t in $TOOLS rsync /usr/bin/time; do
  [ "$t" = puce ] && continue
  command -v "$t" >/dev/null || { echo "compare.sh needs $t" >&2; exit 1; }
done
(cd "$HERE/.." && cargo build --release -q -p puce-cli)
PUCE=$HERE/../target/release/puce
W=${WORK:-$(mktemp -d /tmp/puce-compare.XXXXXX)}
mkdir -p "$W"
RD=${RESTORE_DIR:-/dev/shm}
[ -w "$RD" ] || RD=$W
RD=$(mktemp -d "$RD/puce-restore.XXXXXX")
trap 'rm -rf "$W"/repo-* "$W"/stage "$RD" "$W"/cache' EXIT
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/cache/restic
export BORG_PASSPHRASE="" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes \
  BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=$W/cache/borg
export XDG_CACHE_HOME=$W/cache/xdg XDG_CONFIG_HOME=$W/config
RES=$W/results.tsv
: > "$RES"
DAYS=("$C"/day*)

warm() { find "$1" -type f -print0 | xargs -0 cat > /dev/null; }

# timed NAME CMD...: run, append "NAME seconds maxrss_kb" to $W/times
timed() {
  local name=$1; shift
  sync  # no writeback of an earlier step competes with the measured one
  /usr/bin/time -f "%e %M" -o "$W/t.one" bash -c '"$@"' _ "$@" > "$W/out.log" 2>&1 || {
    echo "FAILED: $*" >&2; cat "$W/out.log" >&2; exit 1; }
  echo "$name $(cat "$W/t.one")" >> "$W/times"
}

snap() { # TOOL REPO PATH NAME
  case $1 in
    puce) "$PUCE" --repo "$2" -q snapshot "$3" --space corpus ;;
    restic) restic -r "$2" -q backup --host bench "$3" ;;
    borg) (cd "$3" && borg create --compression zstd,3 "$2::$4" .) ;;
  esac
}

init() { # TOOL REPO
  case $1 in
    puce) "$PUCE" init -q "$2" ;;
    restic) restic -r "$2" -q init ;;
    borg) borg init -e none "$2" ;;
  esac
}

restore() { # TOOL REPO TARGET
  rm -rf "$3"; mkdir -p "$3"
  case $1 in
    puce) "$PUCE" --repo "$2" -q restore corpus@latest "$3" ;;
    restic) restic -r "$2" -q restore latest --target "$3" ;;
    borg) (cd "$3" && borg extract "$2::$(borg list --short --last 1 "$2")") ;;
  esac
}

export -f snap init restore
export PUCE

sum_col() { awk -v p="$1" '$1 ~ p { s += $2 } END { printf "%.2f", s }' "$W/times"; }
min_col() { awk -v p="$1" '$1 ~ p && (m == "" || $2 < m) { m = $2 } END { printf "%.2f", m }' "$W/times"; }
max_rss() { awk -v p="$1" '$1 ~ p && $3 > m { m = $3 } END { print m + 0 }' "$W/times"; }

for tool in $TOOLS; do
  : > "$W/times"
  # ---- nightly mode
  R=$W/repo-$tool-nightly
  rm -rf "$R" "$W/stage" "$W/cache"; mkdir -p "$W/stage" "$W/cache"
  init "$tool" "$R" > /dev/null
  for d in "${DAYS[@]}"; do
    rsync -a --delete "$d/" "$W/stage/"
    warm "$W/stage"
    timed "nightly-$(basename "$d")" snap "$tool" "$R" "$W/stage" "$(basename "$d")"
  done
  timed nochange snap "$tool" "$R" "$W/stage" nochange
  warm "$R"
  # restore three times, keep the best (the disk's writeback makes single runs noisy)
  for i in 1 2 3; do timed "restore$i" restore "$tool" "$R" "$RD/restore"; done
  # the restored tree must equal the last version (restic restores under the full source path)
  got=$RD/restore; [ "$tool" = restic ] && got=$RD/restore$W/stage
  if ! diff -r -q --no-dereference "${DAYS[-1]}" "$got" > "$W/diff.log" 2>&1; then
    echo "$tool: restore differs from the last version:" >&2; head "$W/diff.log" >&2; exit 1
  fi
  size=$(du -sb "$R" | cut -f1)
  # ---- every-byte mode
  R2=$W/repo-$tool-everybyte
  rm -rf "$R2" "$W/cache"; mkdir -p "$W/cache"
  init "$tool" "$R2" > /dev/null
  for d in "${DAYS[@]}"; do
    warm "$d"
    timed "everybyte-$(basename "$d")" snap "$tool" "$R2" "$d" "$(basename "$d")"
  done
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$(sum_col '^nightly-')" "$(sum_col '^everybyte-')" \
    "$(sum_col '^nochange')" "$(min_col '^restore')" "$size" "$(max_rss .)" >> "$RES"
  rm -rf "$R" "$R2" "$RD/restore" "$W/stage"
  echo "done: $tool" >&2
done

python3 - "$RES" "$(nproc)" "$(date -u +%Y-%m-%d)" <<'EOF' | tee "$HERE/results/compare-latest.md"
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
data = {r[0]: dict(nightly=float(r[1]), everybyte=float(r[2]), nochange=float(r[3]),
                   restore=float(r[4]), size=int(r[5]), rss=int(r[6])) for r in rows}
base = data.get("restic")
def cell(tool, k, fmt):
    v = data[tool][k]
    s = fmt(v)
    if base and base[k] > 0 and tool != "restic":
        s += f" ({v / base[k]:.2f}x)"
    return s
secs = lambda v: f"{v:.2f} s"
mb = lambda v: f"{v / 1e6:.1f} MB"
kb = lambda v: f"{v / 1024:.0f} MiB"
print(f"Corpus: 12 nightly versions, 3.29 GB logical; {sys.argv[2]} cores; {sys.argv[3]}; one run "
      f"(restore: best of 3, into tmpfs).\n")
print("| tool | nightly total | every-byte total | no-change | restore last | repository | peak memory |")
print("|---|---|---|---|---|---|---|")
for t in data:
    print(f"| {t} | {cell(t,'nightly',secs)} | {cell(t,'everybyte',secs)} | {cell(t,'nochange',secs)} "
          f"| {cell(t,'restore',secs)} | {cell(t,'size',mb)} | {cell(t,'rss',kb)} |")
EOF
