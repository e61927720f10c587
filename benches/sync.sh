#!/usr/bin/env bash
# sync.sh: replication between two nodes on loopback, beside rsync and a plain quinn transfer.
#
# On the corpus (twelve nightly versions), measured in one run:
#   initial: a node with the twelve versions -> an empty node (`puce sync A --pull`);
#            beside `rsync -a` of the twelve version folders from an rsync daemon on loopback,
#            and a plain quinn transfer (same TLS, same stream count) of the same byte count;
#   nightly: a node with versions 1-11 pulls version 12; beside `rsync -a --delete` of day12
#            over a copy of day11 (rsync's delta transfer), from the rsync daemon;
#   cap:     the initial sync again into another empty node capped at CAP (default 32 MiB/s).
# Reports wall time, bytes on the wire (UDP payload for puce and quinn; rsync's own totals of
# bytes sent and received), round trips, and checks the targets of the node issue:
#   nightly wire bytes <= 1.1 x (stored bytes the new version added + its trees), and < rsync;
#   initial sync speed >= 0.8 x the plain quinn transfer; the cap held within 10 %.
#
# Usage: benches/sync.sh [CORPUS_VERSIONS_DIR]
#   CORPUS_VERSIONS_DIR defaults to ~/.cache/puce-corpus/versions (benches/corpus/make_corpus.sh)
#   WORK=/path sets the scratch directory; KEEP=1 keeps it; CAP=16MiB changes the cap;
#   RUNS=3 sets how many times the initial sync and the quinn transfer run (best kept).
# Needs: rsync. Writes benches/results/sync-latest.md.
set -euo pipefail
export LC_ALL=C TZ=UTC
HERE=$(cd "$(dirname "$0")" && pwd)
C=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus/versions}
CAP=${CAP:-32MiB}
[ -d "$C/day01" ] || { echo "no corpus at $C: run benches/corpus/make_corpus.sh" >&2; exit 1; }
command -v rsync >/dev/null || { echo "sync.sh needs rsync" >&2; exit 1; }
(cd "$HERE/.." && cargo build --release -q -p puce-cli && cargo build --release -q -p puce-node --example quic_baseline)
PUCE=$HERE/../target/release/puce
QB=$HERE/../target/release/examples/quic_baseline
W=${WORK:-$(mktemp -d /tmp/puce-sync.XXXXXX)}
mkdir -p "$W"
export XDG_CACHE_HOME=$W/cache XDG_CONFIG_HOME=$W/config
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
DAYS=("$C"/day*)
N=${#DAYS[@]}
port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
jq_() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
now() { date +%s.%N; }

echo "== source repository: $N nightly versions" >&2
# One association: every repository has A's key (none if A is not encrypted).
KEY=$("$PUCE" --json init "$W/A" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("key_file") or "")')
FROM=()
[ -n "$KEY" ] && FROM=(--key-from "$KEY")
mkdir -p "$W/stage"
for ((i = 0; i < N; i++)); do
  rsync -a --delete "${DAYS[$i]}/" "$W/stage/"
  if ((i == N - 1)); then cp -a "$W/A" "$W/A11"; fi
  "$PUCE" --repo "$W/A" --json snapshot "$W/stage" --space corpus --host site-a > "$W/snap-$i.json"
done
NEW_STORED=$(jq_ "$W/snap-$((N - 1)).json" "d['summary']['data_added_stored']")
for r in B B11 Ccap; do "$PUCE" init -q "${FROM[@]}" "$W/$r"; done

# Nodes: A (12 versions) and A11 (11) serve; B, B11 and Ccap pull.
declare -A PORT ID
for n in A A11 B B11 Ccap; do
  PORT[$n]=$(port)
  "$PUCE" --repo "$W/$n" -q node init --name "$n" --listen "127.0.0.1:${PORT[$n]}"
  ID[$n]=$("$PUCE" --repo "$W/$n" node id)
done
conf() { # NODE EXTRA PEER...
  local n=$1 extra=$2; shift 2
  { printf '[node]\nname = "%s"\nlisten = "127.0.0.1:%s"\n[schedule]\ninterval = "1000d"\n%b\n' "$n" "${PORT[$n]}" "$extra"
    for p in "$@"; do
      printf '[[peer]]\nname = "%s"\nid = "%s"\naddress = "127.0.0.1:%s"\nspaces = { corpus = ["pull", "push"] }\n' "$p" "${ID[$p]}" "${PORT[$p]}"
    done; } > "$W/$n/node/node.toml"
}
conf A "" B B11 Ccap
conf A11 "" B11
conf B "" A
conf B11 "" A A11
conf Ccap "[limits]\nbandwidth = \"$CAP\"" A
for n in A A11; do
  "$PUCE" --repo "$W/$n" node run > "$W/$n.log" 2>&1 &
  PIDS+=($!)
done
for n in A A11; do
  for _ in $(seq 100); do grep -q "listening on" "$W/$n.log" && break; sleep 0.1; done
done

sync_json() { # NODE PEER OUT
  sync
  local t0 t1
  t0=$(now)
  "$PUCE" --repo "$W/$1" --json sync "$2" --pull > "$3"
  t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
APID=$(python3 -c "import json; print(json.load(open('$W/A/node/daemon.json'))['pid'])")
TICK=$(getconf CLK_TCK)
echo "== initial sync ($N versions, A -> empty B) and plain quinn, interleaved, best of ${RUNS:=3}" >&2
INIT_MS=; Q_MS=
for ((run = 1; run <= RUNS; run++)); do
  rm -rf "$W/B/packs" "$W/B/snapshots" "$W/B/index.redb" "$W/B/node/state.json"
  sync
  c0=$(cpu_ticks "$APID")
  /usr/bin/time -f "%U %S" -o "$W/time-$run.txt" "$PUCE" --repo "$W/B" --json sync A --pull > "$W/initial-$run.json"
  c1=$(cpu_ticks "$APID")
  ms=$(jq_ "$W/initial-$run.json" "d['duration_ms']")
  if [ -z "$INIT_MS" ] || [ "$ms" -lt "$INIT_MS" ]; then
    INIT_MS=$ms; cp "$W/initial-$run.json" "$W/initial.json"
    INIT_CPU_RECV=$(awk '{print $1 + $2}' "$W/time-$run.txt")
    INIT_CPU_SEND=$(python3 -c "print(($c1 - $c0) / $TICK)")
  fi
  # The same number of bytes over plain quinn, right after.
  "$QB" "$(jq_ "$W/initial-$run.json" "d['wire_received_bytes']")" 4 > "$W/quinn-$run.json"
  ms=$(jq_ "$W/quinn-$run.json" "int(d['ms'])")
  if [ -z "$Q_MS" ] || [ "$ms" -lt "$Q_MS" ]; then Q_MS=$ms; fi
done
/usr/bin/time -f "%U %S" -o "$W/time-quinn.txt" "$QB" "$(jq_ "$W/initial.json" "d['wire_received_bytes']")" 4 > /dev/null
Q_CPU=$(awk '{print $1 + $2}' "$W/time-quinn.txt")
INIT_WALL=-
INIT_WIRE=$(jq_ "$W/initial.json" "d['wire_received_bytes'] + d['wire_sent_bytes']")
INIT_RX=$(jq_ "$W/initial.json" "d['wire_received_bytes']")
INIT_STORED=$(jq_ "$W/initial.json" "d['received_bytes']")
INIT_RT=$(jq_ "$W/initial.json" "d['round_trips']")
INIT_REQ=$(jq_ "$W/initial.json" "d['requests']")
"$PUCE" --repo "$W/B" -q check

echo "== nightly sync: version $N into a node with versions 1-$((N - 1))" >&2
"$PUCE" --repo "$W/B11" -q sync A11 --pull
NIGHT_WALL=$(sync_json B11 A "$W/nightly.json")
NIGHT_MS=$(jq_ "$W/nightly.json" "d['duration_ms']")
NIGHT_WIRE=$(jq_ "$W/nightly.json" "d['wire_received_bytes'] + d['wire_sent_bytes']")
NIGHT_STORED=$(jq_ "$W/nightly.json" "d['received_bytes']")
NIGHT_RT=$(jq_ "$W/nightly.json" "d['round_trips']")
NIGHT_REQ=$(jq_ "$W/nightly.json" "d['requests']")
"$PUCE" --repo "$W/B11" -q check

echo "== bandwidth cap $CAP: A -> Ccap" >&2
CAP_WALL=$(sync_json Ccap A "$W/cap.json")
CAP_MS=$(jq_ "$W/cap.json" "d['duration_ms']")
CAP_RX=$(jq_ "$W/cap.json" "d['wire_received_bytes']")
CAP_BPS=$(python3 -c "import re; s='$CAP'; m=re.match(r'([0-9.]+)\s*([KMG]?)i?B', s); print(int(float(m.group(1)) * {'':1,'K':1024,'M':1048576,'G':1073741824}[m.group(2)]))")

echo "== rsync daemon on loopback" >&2
RP=$(tport)
# Run as the invoking user: started by root, the daemon would read the corpus as nobody.
cat > "$W/rsyncd.conf" <<EOF
use chroot = false
uid = $(id -u)
gid = $(id -g)
[corpus]
path = $C
read only = true
EOF
rsync --daemon --no-detach --config="$W/rsyncd.conf" --port="$RP" --address=127.0.0.1 &
PIDS+=($!)
for _ in $(seq 50); do rsync "rsync://127.0.0.1:$RP/" >/dev/null 2>&1 && break; sleep 0.1; done
rsync_stats() { # OUT SRC DEST [opts]
  local out=$1 src=$2 dest=$3; shift 3
  sync
  local t0 t1
  t0=$(now)
  rsync -a --stats "$@" "rsync://127.0.0.1:$RP/corpus/$src" "$dest" > "$out"
  t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}
rsync_bytes() { python3 - "$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
n = lambda k: int(re.search(k + r": ([\d,]+)", t).group(1).replace(",", ""))
print(n("Total bytes sent") + n("Total bytes received"))
PY
}
echo "   initial: rsync -a of the $N version folders" >&2
R_INIT_WALL=$(rsync_stats "$W/rsync-initial.txt" "" "$W/rsync-initial/")
R_INIT_BYTES=$(rsync_bytes "$W/rsync-initial.txt")
rm -rf "$W/rsync-initial"
echo "   nightly: rsync -a --delete of day$N over day$((N - 1))" >&2
cp -a "${DAYS[$((N - 2))]}" "$W/rsync-nightly"
R_NIGHT_WALL=$(rsync_stats "$W/rsync-nightly.txt" "$(basename "${DAYS[$((N - 1))]}")/" "$W/rsync-nightly/" --delete)
R_NIGHT_BYTES=$(rsync_bytes "$W/rsync-nightly.txt")

mkdir -p "$HERE/results"
OUT=$HERE/results/sync-latest.md
python3 - "$OUT" <<PY
import sys
mb = lambda b: f"{b / 1e6:.1f} MB"
init_ms, q_ms = $INIT_MS, $Q_MS
speed = q_ms / init_ms  # puce speed relative to quinn (same bytes)
night_target = 1.1 * $NEW_STORED
cap_rate = $CAP_RX / ($CAP_MS / 1000)
lines = [
  f"Corpus: {$N} nightly versions; loopback; 2 cores; $(date -u +%Y-%m-%d); one run.",
  "",
  "| run | puce time | puce bytes on the wire | round trips (requests) | rsync time | rsync bytes | plain quinn time |",
  "|---|---|---|---|---|---|---|",
  f"| initial ({$N} versions) | {init_ms/1000:.2f} s (best of $RUNS) | {mb($INIT_WIRE)} | {$INIT_RT} ({$INIT_REQ}) | {$R_INIT_WALL} s | {mb($R_INIT_BYTES)} | {q_ms/1000:.2f} s (best of $RUNS) |",
  f"| nightly (1 version) | {$NIGHT_MS/1000:.2f} s ({$NIGHT_WALL} s wall) | {$NIGHT_WIRE/1e6:.3f} MB | {$NIGHT_RT} ({$NIGHT_REQ}) | {$R_NIGHT_WALL} s | {$R_NIGHT_BYTES/1e6:.3f} MB | |",
  f"| capped at $CAP | {$CAP_MS/1000:.2f} s | {mb($CAP_RX)} received | | | | |",
  "",
  "Targets:",
  f"- nightly bytes on the wire {$NIGHT_WIRE/1e6:.3f} MB <= 1.1 x new stored bytes and trees ({$NEW_STORED/1e6:.2f} MB -> {night_target/1e6:.2f} MB): {'met' if $NIGHT_WIRE <= night_target else 'MISSED'}; fewer than rsync ({$R_NIGHT_BYTES/1e6:.3f} MB): {'met' if $NIGHT_WIRE < $R_NIGHT_BYTES else 'MISSED'}",
  f"- initial sync speed {speed:.2f} x the plain quinn transfer of the same bytes (target >= 0.8): {'met' if speed >= 0.8 else 'MISSED'}; CPU time: puce {$INIT_CPU_RECV:.2f} s receiving + {$INIT_CPU_SEND:.2f} s sending, quinn {$Q_CPU:.2f} s both ends (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))",
  f"- cap: {cap_rate/1048576:.1f} MiB/s received for a cap of $CAP ({cap_rate/$CAP_BPS:.2f} x; target within 10 %): {'met' if abs(cap_rate/$CAP_BPS - 1) <= 0.10 else 'MISSED'}",
  "",
  f"Initial sync stored {mb($INIT_STORED)} (data as stored in packs, compressed); the nightly one {mb($NIGHT_STORED)}.",
  "puce time: from connecting to done, as reported by \`puce sync --json\` (wall: the whole command).",
  "Bytes on the wire: UDP payload both ways for puce (QUIC, TLS included); rsync: its totals of bytes sent and received.",
]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
