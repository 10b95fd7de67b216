#!/usr/bin/env bash
# Build the Debian package from this checkout: target/debian/gitops-run_*.deb
# (binary, units, man page, completions, examples). What `just deb` runs.
#
#   bash docs/debian/build-deb.sh [CARGO_PROFILE]
#
# CARGO_PROFILE defaults to `release` (LTO, stripped); the end-to-end test uses
# the lighter `e2e` profile (any profile but `dev`). Installs cargo-deb when it
# is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
profile=${1:-release}

say() { printf 'build-deb: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v cargo >/dev/null || die "cargo is missing: install Rust 1.88 or later with rustup (https://rustup.rs); Debian's rustc is too old"
need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
    die "rustc $have is older than the $need this project needs: rustup update stable"
fi
command -v cc >/dev/null || die "a C compiler is missing (libcurl and aws-lc are built from source): apt install build-essential"
if ! cargo deb --version >/dev/null 2>&1; then
    say "cargo-deb is missing; installing it (cargo install --locked cargo-deb, a few minutes, once)"
    cargo install --locked cargo-deb
fi

say "building the binary (cargo profile $profile; the first build takes minutes)"
cargo build --locked --profile "$profile"
bin=target/$profile/gitops-run
mkdir -p target/assets
"$bin" generate man target/assets
"$bin" generate completions target/assets
# cargo-deb maps the assets' target/release/ to the profile's directory.
cargo deb --no-build --locked --profile "$profile" >&2
deb=$(ls -t target/debian/gitops-run_*.deb | head -n 1)
say "built $deb"
echo "$deb"
