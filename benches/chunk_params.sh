#!/usr/bin/env bash
# chunk_params.sh: measure chunking parameters on the corpus (12 nightly versions, each read from
# its own path, so every byte is chunked). For each setting: stored size, dedup ratio (logical
# bytes / unique plaintext bytes), chunk count, ingest speed. Used to pick the defaults recorded
# in docs/decisions.md (table: benches/results/notes-chunking.md).
#
# Usage: benches/chunk_params.sh [CORPUS_VERSIONS_DIR]   (default ~/.cache/puce-corpus/versions)
set -euo pipefail
C=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus/versions}
PUCE=${PUCE:-$(dirname "$0")/../target/release/puce}
W=$(mktemp -d /tmp/puce-chunk-params.XXXXXX)
trap 'rm -rf "$W"' EXIT
# warm the page cache so every setting reads from memory
cat "$C"/day*/**/* >/dev/null 2>&1 || find "$C" -type f -exec cat {} + >/dev/null
printf '%-22s %12s %10s %10s %9s %10s\n' "min/avg/max" "stored" "dedup" "objects" "time s" "MB/s"
for p in "16384 65536 262144" "32768 131072 524288" "65536 262144 1048576" "262144 1048576 4194304" "524288 2097152 8388608"; do
  set -- $p
  R=$W/repo-$2
  "$PUCE" init -q "$R" --chunk-min "$1" --chunk-avg "$2" --chunk-max "$3"
  logical=0; unique=0
  start=$(date +%s.%N)
  for d in "$C"/day*; do
    out=$("$PUCE" --repo "$R" --json snapshot "$d" --space corpus)
    logical=$((logical + $(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["bytes"])')))
    unique=$((unique + $(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["data_added"])')))
  done
  end=$(date +%s.%N)
  stored=$(du -sb "$R/packs" | cut -f1)
  objects=$("$PUCE" --repo "$R" --json check | python3 -c 'import json,sys; print(json.load(sys.stdin)["objects"])')
  secs=$(echo "$end - $start" | bc -l)
  printf '%-22s %12d %9.2fx %10d %9.2f %10.0f\n' "$(($1/1024))K/$(($2/1024))K/$(($3/1024))K" \
    "$stored" "$(echo "$logical / $unique" | bc -l)" "$objects" "$secs" "$(echo "$logical / $secs / 1000000" | bc -l)"
  rm -rf "$R"
done
