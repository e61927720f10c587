#!/usr/bin/env bash
# Build the Debian package of puce (docs/guide.md, "The Debian package") and print its path.
#
#   packaging/build-deb.sh          release build, then target/debian/puce_<version>-1_<arch>.deb
#                                   (the binary stripped of its debug line tables)
#
# Settings (environment):
#   PROFILE=dev    package the debug binary already built (`cargo test --workspace` builds it),
#                  stripped, with fast compression: for the package test (tests/tests/package.rs),
#                  which must not add a release build to CI.
#   REVISION=N     the Debian revision (default 1): a rebuilt package that upgrades the last one.
#   OUT=DIR        where to write the .deb (default target/debian).
# Needs cargo-deb: cargo install cargo-deb --version 3.8.0 --locked
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
profile=${PROFILE:-release}
revision=${REVISION:-1}
out=${OUT:-target/debian}
target=${CARGO_TARGET_DIR:-target}
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "build-deb.sh: needs cargo-deb: cargo install cargo-deb --version 3.8.0 --locked" >&2
  exit 1
fi
case "$profile" in
  release)
    cargo build --release --locked -p puce-cli
    dir=$target/release
    # Stripped: the release profile keeps line tables (for profiling), five times the size.
    extra=(--strip)
    ;;
  dev)
    dir=$target/debug
    extra=(--strip --fast)
    ;;
  *)
    echo "build-deb.sh: PROFILE must be release or dev, not '$profile'" >&2
    exit 2
    ;;
esac
if [ ! -x "$dir/puce" ]; then
  echo "build-deb.sh: no $dir/puce: build it first (cargo test --workspace --no-run)" >&2
  exit 1
fi
# Man pages and completions, generated from the binary's own clap definition.
gen=$dir/puce-generated
rm -rf "$gen"
"$dir/puce" generate man "$gen/man"
gzip -9n "$gen"/man/*.1
"$dir/puce" generate completions "$gen/completions"
mkdir -p "$out"
# cargo-deb warns that the dev profile is not meant for releases: with PROFILE=dev, that is
# the point. It prints the path of the .deb on stdout.
cargo deb -p puce-cli --no-build --profile "$profile" --deb-revision "$revision" \
  --output "$out" "${extra[@]}"
