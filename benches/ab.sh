#!/usr/bin/env bash
# ab.sh: two puce binaries (say, before and after a change) alternated on the corpus in one
# run, medians of RUNS (default 5). What each run measures, per binary:
#   nightly:   the versions snapshotted in turn from a staging folder updated with
#              `rsync -a --delete` (as compare.sh), total wall time;
#   nochange:  one more snapshot with nothing changed;
#   restore:   restore of the last version into tmpfs (/dev/shm);
#   initial:   `puce sync A --pull` of all versions but the last into an empty node (A's daemon
#              on loopback);
#   nightly-sync: the last version snapshotted on A, then pulled by the same node.
#   repo-mib:  the size of the repository after `nightly` (packs and records, MiB);
#   nightly-peak-mib, restore-peak-mib: the largest peak memory (RSS) of the nightly snapshots,
#              and of the restore;
#   nightly-sync-mib: the bytes the nightly sync received on the wire (MiB).
# Usage: benches/ab.sh OLD_PUCE NEW_PUCE [CORPUS_VERSIONS_DIR]
# Repositories are made with each binary's default (encrypted by default since 2026-12-07; the
# two nodes of the sync runs then share one key). OLD_INIT / NEW_INIT add `puce init`
# arguments: NEW_INIT=--no-encrypt compares plain with plain, OLD_INIT=--no-encrypt with the
# same binary as OLD and NEW measures what encryption costs (ENCRYPT_NEW=1, for binaries from
# before the default changed, sets NEW_INIT=--encrypt). QUOTA_NEW="500 GiB" gives the two nodes
# of the "new" runs that quota for each other (with the same binary as OLD and NEW: what quota
# accounting costs a sync).
# Needs: rsync, python3. Prints a table (Markdown) with medians and new/old ratios.
set -euo pipefail
export LC_ALL=C TZ=UTC
OLD=$(realpath "$1")
NEW=$(realpath "$2")
C=${3:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus/versions}
RUNS=${RUNS:-5}
[ -d "$C/day01" ] || { echo "no corpus at $C: run benches/corpus/make_corpus.sh" >&2; exit 1; }
DAYS=("$C"/day*)
N=${#DAYS[@]}
W=$(mktemp -d /tmp/puce-ab.XXXXXX)
RD=$(mktemp -d /dev/shm/puce-ab.XXXXXX)
DAEMON=
cleanup() {
  [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$W" "$RD"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[ "${ENCRYPT_NEW:-0}" = 1 ] && NEW_INIT=--encrypt
# `puce init` of repository $3 with binary $1 for label $2 (with OLD_INIT or NEW_INIT, and
# the key of repository $4 when it has one); prints its key file, or nothing.
init() {
  local args
  if [ "$2" = new ]; then read -ra args <<< "${NEW_INIT:-}"; else read -ra args <<< "${OLD_INIT:-}"; fi
  [ -n "${4:-}" ] && args+=(--key-from "$4")
  "$1" --json init "${args[@]}" "$3" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("key_file") or "")'
}

# One run of binary $1 (label $2); appends "label metric seconds" lines to $W/times.
run() {
  local P=$1 L=$2 R=$W/run
  rm -rf "$R" "$RD"/*
  mkdir -p "$R/stage"
  export XDG_CACHE_HOME=$R/cache XDG_DATA_HOME=$R/data XDG_CONFIG_HOME=$R/config
  init "$P" "$L" "$R/A" > /dev/null
  local t total=0 peak=0
  for ((i = 0; i < N; i++)); do
    rsync -a --delete "${DAYS[$i]}/" "$R/stage/"
    t=$(now)
    /usr/bin/time -f %M -o "$W/rss" "$P" --repo "$R/A" -q snapshot "$R/stage" --space corpus
    total=$(python3 -c "print($total + $(since "$t"))")
    peak=$(python3 -c "print(max($peak, $(cat "$W/rss")))")
  done
  echo "$L nightly $total" >> "$W/times"
  echo "$L nightly-peak-mib $(python3 -c "print($peak / 1024)")" >> "$W/times"
  echo "$L repo-mib $(du -sm --exclude index.redb --exclude cache "$R/A" | cut -f1)" >> "$W/times"
  t=$(now); "$P" --repo "$R/A" -q snapshot "$R/stage" --space corpus
  echo "$L nochange $(since "$t")" >> "$W/times"
  t=$(now); /usr/bin/time -f %M -o "$W/rss" "$P" --repo "$R/A" -q restore corpus@latest "$RD/r"
  echo "$L restore $(since "$t")" >> "$W/times"
  echo "$L restore-peak-mib $(python3 -c "print($(cat "$W/rss") / 1024)")" >> "$W/times"
  # Sync: a source node with all versions but the last, an empty receiver.
  local key
  key=$(init "$P" "$L" "$R/B")
  init "$P" "$L" "$R/D" "$key" > /dev/null
  local pd pb
  pd=$(port); pb=$(port)
  "$P" --repo "$R/D" node init --name D --listen "127.0.0.1:$pd" > /dev/null
  "$P" --repo "$R/B" node init --name B --listen "127.0.0.1:$pb" > /dev/null
  local idd idb
  idd=$("$P" --repo "$R/D" node id); idb=$("$P" --repo "$R/B" node id)
  local quota=
  [ "$L" = new ] && [ -n "${QUOTA_NEW:-}" ] && quota="quota = \"$QUOTA_NEW\"\n"
  printf '[node]\nname = "D"\nlisten = "127.0.0.1:%s"\n[schedule]\ninterval = "1000d"\n[[peer]]\nname = "B"\nid = "%s"\nspaces = { corpus = ["pull", "push"] }\n'"$quota" "$pd" "$idb" > "$R/D/node/node.toml"
  printf '[node]\nname = "B"\nlisten = "127.0.0.1:%s"\n[schedule]\ninterval = "1000d"\n[[peer]]\nname = "D"\nid = "%s"\naddress = "127.0.0.1:%s"\nspaces = { corpus = ["pull", "push"] }\n'"$quota" "$pb" "$idd" "$pd" > "$R/B/node/node.toml"
  for ((i = 0; i < N - 1; i++)); do
    "$P" --repo "$R/D" -q snapshot "${DAYS[$i]}" --space corpus
  done
  "$P" --repo "$R/D" node run > "$R/D.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 100); do grep -q "listening" "$R/D.log" 2>/dev/null && break; sleep 0.1; done
  t=$(now); "$P" --repo "$R/B" -q sync D --pull
  echo "$L initial-sync $(since "$t")" >> "$W/times"
  "$P" --repo "$R/D" -q snapshot "${DAYS[$((N - 1))]}" --space corpus
  t=$(now); "$P" --repo "$R/B" --json sync D --pull > "$W/sync.json"
  echo "$L nightly-sync $(since "$t")" >> "$W/times"
  echo "$L nightly-sync-mib $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["wire_received_bytes"] / 2**20)' "$W/sync.json")" >> "$W/times"
  kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true
  DAEMON=
  rm -rf "$R" "$RD"/*
}

for ((r = 1; r <= RUNS; r++)); do
  echo "== run $r of $RUNS" >&2
  if ((r % 2)); then run "$OLD" old; run "$NEW" new; else run "$NEW" new; run "$OLD" old; fi
done
python3 - "$W/times" "$OLD" "$NEW" "$RUNS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
metrics = []
for _, m, _ in rows:
    if m not in metrics:
        metrics.append(m)
med = {(l, m): statistics.median(float(v) for ll, mm, v in rows if ll == l and mm == m)
       for l in ("old", "new") for m in metrics}
print(f"old: {sys.argv[2]}\nnew: {sys.argv[3]}\nmedians of {sys.argv[4]} alternated runs\n")
print("| metric | old (s) | new (s) | new/old |\n|---|---|---|---|")
for m in metrics:
    o, n = med[("old", m)], med[("new", m)]
    print(f"| {m} | {o:.3f} | {n:.3f} | {n / o:.3f} |")
EOF
