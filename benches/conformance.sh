#!/usr/bin/env bash
# conformance.sh: a POSIX file-system conformance suite (pjdfstest, its Rust rewrite, pinned
# below) run inside a space of `puce mount` (as root, --allow-other) and beside it in a plain
# directory (ext4 or tmpfs, whatever holds PLAIN), compared test by test. Every test that
# passes on the plain directory but not in the mount must be named in docs/fuse-semantics.md,
# section "Conformance", which says why (the script reads its patterns from there): the
# script exits 1 on any other difference, and prints a Markdown report (keep it in
# benches/results/conformance-latest.md).
# Usage (root): benches/conformance.sh [PUCE_BINARY]   (default: target/release/puce, else
#   target/debug/puce)
# Environment: PJDFSTEST=path of a pjdfstest binary (default: the pinned version installed
#   with `cargo install --locked` into ~/.cache/puce-pjdfstest); PLAIN=directory for the plain
#   run (default: a new one under /tmp); MOUNT_ARGS=extra `puce mount` arguments.
# Needs: root, fusermount3, python3, cargo (to install the suite), users nobody (group
# nogroup) and daemon (group daemon) for the suite's user switches. Not a test: not run by CI.
set -euo pipefail
export LC_ALL=C TZ=UTC
PJD_VERSION=0.2.2 # crates.io `pjdfstest` (github.com/saidsay-so/pjdfstest), 398 test cases
HERE=$(cd "$(dirname "$0")/.." && pwd)
PUCE=${1:-}
if [ -z "$PUCE" ]; then
  for p in "$HERE/target/release/puce" "$HERE/target/debug/puce"; do
    [ -x "$p" ] && { PUCE=$p; break; }
  done
fi
[ -n "$PUCE" ] && [ -x "$PUCE" ] || { echo "no puce binary: build one or pass its path" >&2; exit 1; }
PUCE=$(realpath "$PUCE")
[ "$(id -u)" = 0 ] || { echo "conformance.sh runs as root (the suite switches users)" >&2; exit 1; }
for u in nobody:nogroup daemon:daemon; do
  id "${u%%:*}" >/dev/null 2>&1 && getent group "${u##*:}" >/dev/null \
    || { echo "the suite needs user ${u%%:*} and group ${u##*:}" >&2; exit 1; }
done
command -v fusermount3 >/dev/null || { echo "conformance.sh needs fusermount3 (fuse3)" >&2; exit 1; }
if [ -z "${PJDFSTEST:-}" ]; then
  root=${XDG_CACHE_HOME:-$HOME/.cache}/puce-pjdfstest/$PJD_VERSION
  if [ ! -x "$root/bin/pjdfstest" ]; then
    echo "installing pjdfstest $PJD_VERSION into $root" >&2
    cargo install --quiet --locked --root "$root" pjdfstest --version "$PJD_VERSION"
  fi
  PJDFSTEST=$root/bin/pjdfstest
fi
# Short paths: a Unix socket's path must fit in 108 bytes, and the suite binds sockets.
W=$(mktemp -d /tmp/pcf.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  fusermount3 -u -z "$W/m" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
chmod 755 "$W"
cat > "$W/pjdfstest.toml" <<'EOF'
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
EOF
PLAIN=${PLAIN:-$W/plain}
mkdir -p "$PLAIN" "$W/m"
chmod 755 "$PLAIN"
"$PJDFSTEST" -c "$W/pjdfstest.toml" -p "$PLAIN" > "$W/plain.out" 2>&1 || true

export PUCE_REPO=$W/repo XDG_CACHE_HOME=$W/cache XDG_DATA_HOME=$W/data XDG_CONFIG_HOME=$W/config
"$PUCE" init -q
# shellcheck disable=SC2086
"$PUCE" mount "$W/m" --allow-other --space c ${MOUNT_ARGS:-} 2> "$W/mount.log" &
PID=$!
for _ in $(seq 200); do mountpoint -q "$W/m" && break; sleep 0.05; done
mountpoint -q "$W/m" || { echo "the mount did not come up: $(cat "$W/mount.log")" >&2; exit 1; }
mkdir -p "$W/m/spaces/c/r"
"$PJDFSTEST" -c "$W/pjdfstest.toml" -p "$W/m/spaces/c/r" > "$W/mount.out" 2>&1 || true
kill -TERM "$PID"
wait "$PID" || { echo "puce mount failed: $(cat "$W/mount.log")" >&2; exit 1; }
PID=
"$PUCE" check -q > "$W/check.out" 2>&1 || { echo "the repository does not check clean:" >&2; cat "$W/check.out" >&2; exit 1; }

python3 - "$W/plain.out" "$W/mount.out" "$HERE/docs/fuse-semantics.md" "$PUCE" "$PLAIN" "$PJD_VERSION" <<'PY'
import fnmatch, re, subprocess, sys, datetime, os
plain_out, mount_out, doc, puce, plain_dir, version = sys.argv[1:7]

def parse(path):
    """Each test's status and, unless it passed, the first line of its message."""
    res, cur = {}, None
    for line in open(path, errors="replace").read().split("\n"):
        m = re.match(r"^([a-z0-9_:]+)\s+(ok|FAILED|skipped)$", line)
        if m:
            cur = m.group(1)
            res[cur] = [m.group(2), ""]
        elif cur and res[cur][0] != "ok" and not res[cur][1] and line.strip() \
                and not line.startswith("Backtrace"):
            res[cur][1] = line.strip()[:100]
    return res

plain, mount = parse(plain_out), parse(mount_out)
if len(plain) < 300 or len(mount) < 300:
    sys.exit(f"the suite did not run: {len(plain)} results on the plain directory, {len(mount)} in the mount")
# The patterns of docs/fuse-semantics.md, section "Conformance": first backquoted word of
# each table row.
text = open(doc).read()
section = text.split("## Conformance", 1)[1].split("\n## ", 1)[0]
allowed = []
for line in section.split("\n"):
    if line.startswith("| `"):
        allowed += [(p, line.split("|")[2].strip()) for p in re.findall(r"`([a-z0-9_:*]+)`", line.split("|")[1])]
def why(name):
    return next((w for p, w in allowed if fnmatch.fnmatchcase(name, p)), None)

def fstype(p):
    return subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", p], capture_output=True, text=True).stdout.strip()
def count(r, s):
    return sum(1 for v in r.values() if v[0] == s)
kernel = os.uname().release
cpus = os.cpu_count()
print(f"# benches/conformance.sh, {datetime.date.today()} ({cpus} cores, kernel {kernel})\n")
print(f"pjdfstest {version} (Rust rewrite, crates.io), as root; plain directory on {fstype(plain_dir)}; "
      f"`puce mount --allow-other` ({subprocess.run([puce, '--version'], capture_output=True, text=True).stdout.strip()}), "
      f"the suite run in `spaces/c/r`; the repository checked clean afterwards.\n")
print("| | plain | mount |\n| --- | ---: | ---: |")
for s in ("ok", "FAILED", "skipped"):
    print(f"| {s} | {count(plain, s)} | {count(mount, s)} |")
diffs = sorted(n for n in set(plain) | set(mount) if plain.get(n, ["-"])[0] != mount.get(n, ["-"])[0])
print(f"\nTests whose result differs ({len(diffs)}), each with the reason docs/fuse-semantics.md "
      "gives (section \"Conformance\"):\n")
print("| test | plain | mount | message in the mount | why |\n| --- | --- | --- | --- | --- |")
unexplained = []
for n in diffs:
    p, m = plain.get(n, ["-", ""]), mount.get(n, ["-", ""])
    w = why(n) if m[0] == "FAILED" else f"not a failure: {m[0]} in the mount"
    if w is None:
        unexplained.append(n)
        w = "**NOT DOCUMENTED**"
    print(f"| `{n}` | {p[0]} | {m[0]} | {m[1].replace('|', '/')} | {w} |")
if unexplained:
    print(f"\n{len(unexplained)} difference(s) not in docs/fuse-semantics.md: " + ", ".join(unexplained))
    sys.exit(1)
print("\nEvery difference is one docs/fuse-semantics.md names.")
PY
