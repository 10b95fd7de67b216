#!/usr/bin/env bash
# Runs real gitops-run passes on the shipped example repository: no root, no
# network, state in a temporary directory. Usage: bash docs/example/demo.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "# Building gitops-run (the first build of a fresh clone takes a few minutes;"
echo "# later runs reuse target/ and start at once)."
cargo build --manifest-path "$top/Cargo.toml"
bin="$top/target/debug/gitops-run"

# The example content becomes a real Git repository, as it would be on a Git server.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
git_c() { git -C "$work/origin" -c user.name=demo -c user.email=demo@example.invalid "$@"; }
cp -R "$here/repo" "$work/origin"
git init --quiet -b main "$work/origin"
git_c add -A
git_c commit --quiet -m "Example host configuration"

export MOTD_DIR="$work/motd.d"
# Keep the demo out of node_exporter's textfile directory, should it run as root.
export GITOPS_METRICS_FILE=off
run() { echo; echo "\$ gitops-run $*"; "$bin" "$@" 2>&1; }

run --once --repo "$work/origin" --state-dir "$work/state"
echo; echo "--- $MOTD_DIR/gitops-run"; cat "$MOTD_DIR/gitops-run"

echo; echo "# A second pass finds nothing new and does nothing:"
run --once --repo "$work/origin" --state-dir "$work/state"

echo; echo "# A new commit upstream is applied by the next pass:"
echo "Maintenance window: Sundays 02:00 UTC." >> "$work/origin/banner.txt"
git_c commit --quiet -am "Announce the maintenance window"
run --once --repo "$work/origin" --state-dir "$work/state"

run status --state-dir "$work/state"
