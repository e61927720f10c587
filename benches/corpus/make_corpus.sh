#!/usr/bin/env bash
# Copied into the repository (benches/corpus/) on 2026-12-07 from ../shared/corpus/make_corpus.sh,
# the team's shared copy outside the repository; unchanged apart from these two lines.
# make_corpus.sh -- rebuild the "association shared folder, 12 nightly versions" corpus
# deterministically from PyPI (pip) and Debian bookworm (apt-get download), pinned versions.
#
# Result: $ROOT/versions/day01 .. day12, each a full copy of the shared folder as it was
# on that night.  Layout of one day:
#   projects/django/            Django-4.2.<day> sdist, unpacked       (source tree, ~9.9k files)
#   downloads/                  Django-4.2.<day>.tar.gz                (compressed, changes daily)
#   software/numpy/             numpy 1.26.x cp311 manylinux wheel, unzipped (+ the .whl itself)
#   software/pandas/            pandas 2.2.x cp311 manylinux wheel, unzipped
#   documents/fonts|graphics|manuals|photos   contents of Debian .debs (TTF/OTF, PNG/SVG/JPG, PDF, HTML)
# Versions change on a schedule (below); documents grow (new packages on days 4,9,10) and one
# folder is deleted on day 11.
#
# Metadata is normalised so the corpus models a real folder: everything is owned by uid/gid 1000;
# a file whose content is unchanged since the previous day keeps the previous day's mtime and
# mode; a new/changed file gets that night's timestamp (day 1 keeps the archive mtimes/modes);
# a directory whose entry names are unchanged keeps yesterday's mtime/mode, else gets that
# night's timestamp.  (Without this, Django release tarballs differ in owner/mode, so ~6.7k
# content-identical files would look "changed" (ctime) on release nights.)  So `rsync -a --delete dayNN/ share/` touches
# only what really changed, as a real nightly folder would.
#
# Usage: [ROOT=DIR] ./make_corpus.sh   (default DIR: ~/.cache/puce-corpus; idempotent; re-downloads only missing files)
set -euo pipefail
export TZ=UTC LC_ALL=C
ROOT=${ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/puce-corpus}
DL=$ROOT/dl
OUT=$ROOT/versions
NDAYS=12
mkdir -p "$DL/pypi" "$DL/wheels" "$DL/debs" "$OUT"
for tool in pip unzip dpkg apt-get python3 b3sum; do
  command -v "$tool" >/dev/null || { echo "make_corpus.sh needs $tool (Debian: apt-get install -y unzip b3sum)" >&2; exit 1; }
done

# 4.2 (=4.2.0) .. 4.2.11: twelve consecutive releases.  (4.2.12 is deliberately not used: its sdist
# was built with CRLF line endings, so ~4.2k of ~9.9k files change bytewise -- a mass-rewrite event.)
DJANGO_VERSIONS=(4.2 4.2.1 4.2.2 4.2.3 4.2.4 4.2.5 4.2.6 4.2.7 4.2.8 4.2.9 4.2.10 4.2.11)
# day -> numpy / pandas version (index = day-1)
NUMPY_BY_DAY=(1.26.0 1.26.0 1.26.0 1.26.1 1.26.1 1.26.2 1.26.2 1.26.3 1.26.3 1.26.3 1.26.4 1.26.4)
PANDAS_BY_DAY=(2.2.0 2.2.0 2.2.0 2.2.0 2.2.1 2.2.1 2.2.1 2.2.1 2.2.2 2.2.2 2.2.2 2.2.2)
# Debian bookworm packages, pinned.  "first day present:last day present:target dir"
declare -A DEBS=(
  [fonts-crosextra-carlito=20220224-1]="1:12:documents/fonts/carlito"
  [fonts-crosextra-caladea=20200211-1]="1:12:documents/fonts/caladea"
  [fonts-liberation2=2.1.5-1]="1:12:documents/fonts/liberation2"
  [fonts-dejavu-core=2.37-6]="1:10:documents/fonts/dejavu"
  [desktop-base=12.0.6+nmu1~deb12u1]="1:12:documents/graphics/desktop-base"
  [postgresql-doc-15=15.20-0+deb12u1]="1:12:documents/manuals/postgresql"
  [texlive-fonts-recommended-doc=2022.20230122-3]="1:12:documents/manuals/tex-fonts"
  [gnome-backgrounds=43.1-1]="4:12:documents/photos/gnome-backgrounds"
  [texlive-latex-recommended-doc=2022.20230122-3]="9:12:documents/manuals/latex"
  [debian-reference-en=2.100]="10:12:documents/manuals/debian-reference"
)

# ---------------------------------------------------------------- 1. download (pinned)
for v in "${DJANGO_VERSIONS[@]}"; do
  [ -f "$DL/pypi/Django-$v.tar.gz" ] || pip download -q --no-deps --no-binary :all: -d "$DL/pypi" "django==$v"
done
WHEEL_ARGS=(--no-deps --only-binary :all: --platform manylinux_2_17_x86_64 --python-version 3.11 --implementation cp --abi cp311)
for v in $(printf '%s\n' "${NUMPY_BY_DAY[@]}" | sort -u); do
  ls "$DL/wheels"/numpy-$v-cp311-*.whl >/dev/null 2>&1 || pip download -q "${WHEEL_ARGS[@]}" -d "$DL/wheels" "numpy==$v"
done
for v in $(printf '%s\n' "${PANDAS_BY_DAY[@]}" | sort -u); do
  ls "$DL/wheels"/pandas-$v-cp311-*.whl >/dev/null 2>&1 || pip download -q "${WHEEL_ARGS[@]}" -d "$DL/wheels" "pandas==$v"
done
for spec in "${!DEBS[@]}"; do
  p=${spec%%=*}; v=${spec#*=}
  ls "$DL/debs/${p}_"*.deb >/dev/null 2>&1 || (cd "$DL/debs" && apt-get download -q "$p=$v")
done
# Record what was used (sha256) so a rebuild can be checked byte-for-byte.
(cd "$DL" && find . -type f \( -name '*.tar.gz' -o -name '*.whl' -o -name '*.deb' \) -print0 | sort -z | xargs -0 sha256sum) > "$ROOT/SOURCES.sha256"

# ---------------------------------------------------------------- 2. build each day
TMP=$ROOT/.tmp_unpack
rm -rf "$OUT" "$TMP"; mkdir -p "$OUT" "$TMP"
# unpack every distinct wheel / deb once, then copy into the days
for w in "$DL"/wheels/*.whl; do
  n=$(basename "$w" .whl); mkdir -p "$TMP/whl/$n"; unzip -q -o "$w" -d "$TMP/whl/$n"
done
for spec in "${!DEBS[@]}"; do
  p=${spec%%=*}; d="$TMP/deb/$p"; mkdir -p "$d"
  dpkg -x "$DL/debs/${p}_"*.deb "$d"
  # keep only the payload under usr/share (what a person would have copied to the share)
  if [ -d "$d/usr/share" ]; then mv "$d/usr/share" "$TMP/deb/$p.share"; rm -rf "$d"; mv "$TMP/deb/$p.share" "$d"; fi
done

for ((day=1; day<=NDAYS; day++)); do
  D=$(printf '%s/day%02d' "$OUT" "$day"); i=$((day-1))
  mkdir -p "$D/projects" "$D/downloads" "$D/software/numpy" "$D/software/pandas" "$D/documents"
  dv=${DJANGO_VERSIONS[$i]}
  tar -xzf "$DL/pypi/Django-$dv.tar.gz" -C "$D/projects"
  mv "$D/projects/"[Dd]jango-"$dv" "$D/projects/django"   # top dir is Django-4.2.N (<=4.2.11) or django-4.2.N
  cp -p "$DL/pypi/Django-$dv.tar.gz" "$D/downloads/"
  for pkg in numpy pandas; do
    if [ $pkg = numpy ]; then pv=${NUMPY_BY_DAY[$i]}; else pv=${PANDAS_BY_DAY[$i]}; fi
    w=$(ls "$DL"/wheels/$pkg-$pv-cp311-*.whl)
    cp -a "$TMP/whl/$(basename "$w" .whl)/." "$D/software/$pkg/"
    if [ $pkg = numpy ]; then cp -p "$w" "$D/software/"; fi   # keep the (zip-compressed) numpy .whl too
  done
  for spec in "${!DEBS[@]}"; do
    IFS=: read -r first last target <<<"${DEBS[$spec]}"
    p=${spec%%=*}
    if (( day >= first && day <= last )); then mkdir -p "$D/$target"; cp -a "$TMP/deb/$p/." "$D/$target/"; fi
  done
done
rm -rf "$TMP"

# ---------------------------------------------------------------- 3. normalise metadata
python3 - "$OUT" "$NDAYS" <<'EOF'
import os, sys, stat, filecmp, calendar
out, ndays = sys.argv[1], int(sys.argv[2])
UID = GID = 1000                                        # the share belongs to one user
base = calendar.timegm((2024, 3, 1, 2, 0, 0))          # night of day 1 = 2024-03-01 02:00 UTC
for day in range(1, ndays + 1):
    cur = os.path.join(out, f"day{day:02d}")
    prev = os.path.join(out, f"day{day-1:02d}") if day > 1 else None
    stamp = base + (day - 1) * 86400
    kept = changed = dkept = cbytes = 0
    for dp, dns, fns in os.walk(cur, topdown=False):   # deepest first: files, then their dir
        rel = os.path.relpath(dp, cur)
        for fn in fns + [d for d in dns if os.path.islink(os.path.join(dp, d))]:
            p = os.path.join(dp, fn)
            os.lchown(p, UID, GID)
            if os.path.islink(p):
                os.utime(p, (base, base), follow_symlinks=False); continue
            if prev is None:
                continue                                # day 1: keep archive mtimes/modes
            q = os.path.join(prev, rel, fn)
            if os.path.isfile(q) and not os.path.islink(q) and filecmp.cmp(p, q, shallow=False):
                st = os.stat(q)                         # untouched since yesterday: same mtime+mode
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns)); os.chmod(p, stat.S_IMODE(st.st_mode))
                kept += 1
            else:
                os.utime(p, (stamp, stamp)); changed += 1; cbytes += os.path.getsize(p)
        os.lchown(dp, UID, GID)
        q = os.path.join(prev, rel) if prev else None
        if q and os.path.isdir(q) and sorted(os.listdir(q)) == sorted(os.listdir(dp)):
            st = os.stat(q)                             # same entries as yesterday: dir untouched
            os.utime(dp, ns=(st.st_atime_ns, st.st_mtime_ns)); os.chmod(dp, stat.S_IMODE(st.st_mode)); dkept += 1
        else:
            os.utime(dp, (stamp, stamp))
    if prev:
        print(f"day{day:02d}: {kept} files unchanged since previous day, {changed} new/changed ({cbytes} bytes); {dkept} dirs untouched")
EOF

# ---------------------------------------------------------------- 4. stats
{
  printf 'day\tfiles\tsymlinks\tdirs\tbytes\n'
  for D in "$OUT"/day*; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$(basename "$D")" \
      "$(find "$D" -type f | wc -l)" "$(find "$D" -type l | wc -l)" "$(find "$D" -type d | wc -l)" \
      "$(find "$D" -type f -printf '%s\n' | awk '{s+=$1} END{print s}')"
  done
} | tee "$ROOT/corpus_stats.tsv"
awk -F'\t' 'NR>1{f+=$2; b+=$5} END{printf "TOTAL: %d versions, %d files, %.0f bytes (%.2f GiB, %.2f GB) logical\n", NR-1, f, b, b/2^30, b/1e9}' "$ROOT/corpus_stats.tsv" | tee -a "$ROOT/corpus_stats.tsv"

# ---------------------------------------------------------------- 5. manifest (determinism check)
# one line per entry: type, mode, uid, gid, mtime, size, BLAKE3 of content / link target, path
python3 - "$OUT" > "$ROOT/corpus_manifest.txt" <<'EOF'
import os, sys, subprocess
out = sys.argv[1]; rows = []; files = []
for dp, dns, fns in os.walk(out):
    for n in sorted(dns + fns):
        p = os.path.join(dp, n); st = os.lstat(p); rel = os.path.relpath(p, out)
        if os.path.islink(p):   rows.append(("l", st, os.readlink(p), rel))
        elif os.path.isdir(p):  rows.append(("d", st, "-", rel))
        else:                   rows.append(("f", st, None, rel)); files.append(p)
h = {}
for i in range(0, len(files), 2000):
    r = subprocess.run(["b3sum", "--num-threads", "1", "--"] + files[i:i+2000], capture_output=True, check=True, text=True, errors="surrogateescape")
    for line in r.stdout.splitlines():
        d, p = line.split("  ", 1); h[p] = d
for t, st, x, rel in sorted(rows, key=lambda r: r[3]):
    x = h[os.path.join(out, rel)] if t == "f" else x
    print(f"{t} {st.st_mode:o} {st.st_uid} {st.st_gid} {st.st_mtime_ns} {st.st_size if t == 'f' else 0} {x} {rel}")
EOF
echo "corpus manifest sha256: $(sha256sum < "$ROOT/corpus_manifest.txt" | cut -d' ' -f1)  ($(wc -l < "$ROOT/corpus_manifest.txt") entries)" | tee -a "$ROOT/corpus_stats.tsv"
