#!/usr/bin/env bash
# scale.sh: how puce behaves as repositories grow, on synthetic data built from a seed.
#
# For each size in OBJECTS (default "1000000 10000000"): a repository with tiny chunks (64 B /
# 256 B / 1 KiB, so that N objects take about N x 256 B of disk) holding one folder of random
# files, then 1 % of new data in a second snapshot. For FILES (default 1000000): one snapshot of
# that many tiny files (20-200 bytes, 100 per folder). Each command is timed with its peak memory
# (GNU time's maximum resident set size); the index size is recorded after the first snapshot.
#
# Measured per case: snapshot (first, no change, second with 1 % new data), `ls` of the
# snapshot, restore of one file and of one folder, `diff` of the two snapshots, `check`,
# `check --read-data`, `report dedup`, `forget` of the first snapshot then `gc`, a nightly sync
# of the second snapshot between two nodes (after an initial sync of the first; bytes received
# as the node reports them), and `ls -lR` of the snapshot through `puce mount` (peak memory of
# the mount process).
#
# Usage: benches/scale.sh [PUCE]   (default: target/release/puce)
# Env: OBJECTS, FILES (0 to skip a part), SEED (default 1), WORK (default /tmp: needs about
# 2 x N x 300 B + 1.5 GiB per million files), SKIP="mount sync ..." to leave out commands.
# Needs: GNU time (/usr/bin/time), python3, fusermount3 (for the mount line).
# Prints a Markdown table: case, command, seconds, peak MiB (and the index size, bytes synced).
set -euo pipefail
export LC_ALL=C TZ=UTC
PUCE=$(realpath "${1:-target/release/puce}")
OBJECTS=${OBJECTS:-1000000 10000000}
FILES=${FILES:-1000000}
SEED=${SEED:-1}
SKIP=${SKIP:-}
W=$(mktemp -d "${WORK:-/tmp}/puce-scale.XXXXXX")
DAEMON=
MNTPID=
cleanup() {
  table
  [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null
  [ -n "$MNTPID" ] && kill "$MNTPID" 2>/dev/null
  fusermount3 -u -z "$W/mnt" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
# The table of what was measured (also after a failure).
table() {
  [ -s "${ROWS:-}" ] || return 0
  echo "puce: $PUCE ($("$PUCE" --version)); $(nproc) cores; $(date -u +%F)"
  echo
  echo "| case | command | seconds | peak MiB |"
  echo "|---|---|---|---|"
  sed 's/|/ | /g; s/^/| /; s/$/ |/' "$ROWS"
}
trap cleanup EXIT
export XDG_CACHE_HOME=$W/cache XDG_DATA_HOME=$W/data XDG_CONFIG_HOME=$W/config
ROWS=$W/rows
: > "$ROWS"
skip() { [[ " $SKIP " == *" $1 "* ]]; }
port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# measure CASE NAME CMD...: run CMD, record wall seconds and peak RSS.
measure() {
  local case=$1 name=$2
  shift 2
  echo "== $case: $name" >&2
  if ! /usr/bin/time -f "%e %M" -o "$W/time" "$@" > "$W/out" 2> "$W/err"; then
    echo "$case: $name failed:" >&2
    tail -5 "$W/err" >&2
    exit 1
  fi
  read -r secs kib < "$W/time"
  echo "$case|$name|$secs|$((kib / 1024))" >> "$ROWS"
}

# random_tree DIR BYTES SEED: files of 1 MiB of seeded random bytes, 100 per folder.
random_tree() {
  python3 - "$1" "$2" "$3" <<'EOF'
import os, random, sys
root, total, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
i = 0
while total > 0:
    n = min(total, 1 << 20)
    d = os.path.join(root, f"d{i // 100:05}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07}.bin"), "wb") as f:
        f.write(r.randbytes(n))
    total -= n
    i += 1
EOF
}

# tiny_tree DIR COUNT SEED: COUNT files of 20-200 bytes, 100 per folder, 100 folders per folder.
tiny_tree() {
  python3 - "$1" "$2" "$3" <<'EOF'
import os, random, sys
root, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
for i in range(count):
    d = os.path.join(root, f"a{i // 10000:04}", f"b{i // 100 % 100:02}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100:02}.txt"), "wb") as f:
        f.write(r.randbytes(r.randint(10, 100)).hex().encode()[: r.randint(20, 200)])
EOF
}

# sync_pair CASE REPO: a second repository with the same key pulls REPO's space over QUIC:
# first the first snapshot (initial sync), then the second (nightly sync).
sync_pair() {
  local case=$1 A=$2 B=$W/$1-B pa pb ida idb
  local from=()
  [ -n "$KEY" ] && from=(--key-from "$KEY")
  "$PUCE" init -q "${from[@]}" --chunk-min 64 --chunk-avg 256 --chunk-max 1024 "$B"
  pa=$(port); pb=$(port)
  "$PUCE" --repo "$A" node init --name A --listen "127.0.0.1:$pa" > /dev/null
  "$PUCE" --repo "$B" node init --name B --listen "127.0.0.1:$pb" > /dev/null
  ida=$("$PUCE" --repo "$A" node id); idb=$("$PUCE" --repo "$B" node id)
  printf '[node]\nname = "A"\nlisten = "127.0.0.1:%s"\n[schedule]\ninterval = "1000d"\n[[peer]]\nname = "B"\nid = "%s"\nspaces = { s = ["pull", "push"] }\n' "$pa" "$idb" > "$A/node/node.toml"
  printf '[node]\nname = "B"\nlisten = "127.0.0.1:%s"\n[schedule]\ninterval = "1000d"\n[[peer]]\nname = "A"\nid = "%s"\naddress = "127.0.0.1:%s"\nspaces = { s = ["pull", "push"] }\n' "$pb" "$ida" "$pa" > "$B/node/node.toml"
  # The first snapshot alone on A: a copy of A before the second snapshot is what B pulls first.
  "$PUCE" --repo "$A" node run > "$W/daemon.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 300); do grep -q "listening" "$W/daemon.log" 2> /dev/null && break; sleep 0.1; done
  measure "$case" "sync (all snapshots, into an empty node)" "$PUCE" --repo "$B" -q sync A --pull
  echo "$case|daemon serving the sync (peak)|-|$(($(awk '/VmHWM/ {print $2}' "/proc/$DAEMON/status") / 1024))" >> "$ROWS"
  kill "$DAEMON"; wait "$DAEMON" 2> /dev/null || true
  DAEMON=
}

# mount_ls CASE REPO: `ls -lR` of the newest snapshot through the mount.
mount_ls() {
  local case=$1 snap t
  mkdir -p "$W/mnt"
  PUCE_REPO=$2 "$PUCE" mount "$W/mnt" 2> "$W/mount.log" &
  MNTPID=$!
  for _ in $(seq 600); do mountpoint -q "$W/mnt" && break; sleep 0.05; done
  snap=$(ls -d "$W"/mnt/snapshots/s/*/ | tail -1)
  t=$(date +%s.%N)
  ls -lR "$snap" > /dev/null
  local secs
  secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t" "$(date +%s.%N)")
  echo "$case|mount ls -lR (mount's peak)|$secs|$(($(awk '/VmHWM/ {print $2}' "/proc/$MNTPID/status") / 1024))" >> "$ROWS"
  kill -TERM "$MNTPID"; wait "$MNTPID" 2> /dev/null || true
  MNTPID=
}

# one_case CASE SRC: every command on a repository of SRC (+ 1 % more as a second snapshot).
one_case() {
  local case=$1 src=$2 R=$W/$1-repo
  KEY=$("$PUCE" --json init --chunk-min 64 --chunk-avg 256 --chunk-max 1024 "$R" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("key_file") or "")')
  measure "$case" "snapshot (first)" "$PUCE" --repo "$R" --json snapshot "$src" --space s
  local first
  first=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$W/out")
  echo "$case|index.redb after the first snapshot (MiB)|-|$(($(stat -c %s "$R/index.redb") >> 20))" >> "$ROWS"
  measure "$case" "snapshot (no change)" "$PUCE" --repo "$R" -q snapshot "$src" --space s
  skip sync || cp -a "$R" "$W/$case-first"
  local bytes
  bytes=$(du -sb "$src" | cut -f1)
  random_tree "$src/new" $((bytes / 100)) $((SEED + 1))
  measure "$case" "snapshot (1 % new data)" "$PUCE" --repo "$R" -q snapshot "$src" --space s
  local one folder
  one=$(cd "$src" && find . -type f -name '*0.*' -print -quit)
  folder=$(cd "$src" && find . -mindepth 1 -maxdepth 1 -type d | sort | sed -n 1p)
  measure "$case" "ls -l of the snapshot's top" "$PUCE" --repo "$R" -q ls -l s@latest
  measure "$case" "restore one file" "$PUCE" --repo "$R" -q restore "s@latest:${one#./}" "$W/r1"
  measure "$case" "restore one folder" "$PUCE" --repo "$R" -q restore "s@latest:${folder#./}" "$W/r2"
  rm -rf "$W/r1" "$W/r2"
  measure "$case" "diff of the two snapshots" "$PUCE" --repo "$R" -q diff s@latest~1 s@latest
  measure "$case" "check" "$PUCE" --repo "$R" -q check
  measure "$case" "check --read-data" "$PUCE" --repo "$R" -q check --read-data
  measure "$case" "report dedup" "$PUCE" --repo "$R" -q report dedup
  skip mount || mount_ls "$case" "$R"
  if ! skip sync; then
    sync_pair "$case" "$W/$case-first"
    local A=$W/$case-first
    rm -rf "$A/node/lock"
    "$PUCE" --repo "$A" -q snapshot "$src" --space s
    "$PUCE" --repo "$A" node run > "$W/daemon.log" 2>&1 &
    DAEMON=$!
    for _ in $(seq 300); do grep -q "listening" "$W/daemon.log" 2> /dev/null && break; sleep 0.1; done
    measure "$case" "nightly sync (1 % new)" "$PUCE" --repo "$W/$case-B" --json sync A --pull
    python3 - "$W/out" "$case" >> "$ROWS" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
def find(o, k):
    if isinstance(o, dict):
        for kk, v in o.items():
            if kk == k:
                return v
            r = find(v, k)
            if r is not None:
                return r
    if isinstance(o, list):
        for v in o:
            r = find(v, k)
            if r is not None:
                return r
for k in ("received_bytes", "wire_received_bytes"):
    print(f"{sys.argv[2]}|nightly sync: {k} (MiB)|-|{(find(d, k) or 0) / 2**20:.2f}")
EOF
    kill "$DAEMON"; wait "$DAEMON" 2> /dev/null || true
    DAEMON=
    rm -rf "$A" "$W/$case-B"
  fi
  measure "$case" "forget the first snapshot" "$PUCE" --repo "$R" -q forget "$first"
  measure "$case" "gc" "$PUCE" --repo "$R" -q gc
  rm -rf "$R"
}

for n in $OBJECTS; do
  [ "$n" -gt 0 ] || continue
  echo "== data for $n objects" >&2
  mkdir -p "$W/src-$n"
  random_tree "$W/src-$n" $((n * 256)) "$SEED"
  one_case "$n objects" "$W/src-$n"
  rm -rf "$W/src-$n"
done
if [ "$FILES" -gt 0 ]; then
  echo "== $FILES tiny files" >&2
  mkdir -p "$W/tiny"
  tiny_tree "$W/tiny" "$FILES" "$SEED"
  one_case "$FILES files" "$W/tiny"
fi
