#!/usr/bin/env bash
# What commit signature verification costs a pass (issue 12), measured with
# hyperfine on the release binary, with keys made by ssh-keygen and commits
# signed by git itself (gpg.format=ssh, ed25519):
#
# 1. a pass applying a tip N signed commits ahead of the deployed commit
#    (default N=1,000) with --verify all (every commit is verified), against the
#    same pass without verification: both times, the ratio, and the cost per
#    verified commit ((with - without) / N);
# 2. a no-op pass (the branch has not moved) with the same keys configured,
#    against one without: the cost of reading the keys (should be ~1.0x).
#
#   bash bench/verify.sh         prints a markdown table on stdout (progress on stderr)
#
# bench/run.sh runs it as its last part (BENCH_VERIFY=0 skips it) and puts its
# rows into docs/benchmarks.md. Network: none (file:// only). Knobs:
#   BENCH_WORK          work directory (default target/bench-verify; emptied first)
#   BENCH_COMMITS       signed commits between the deployed commit and the tip (default 1000)
#   BENCH_RUNS_APPLY    hyperfine runs of the applying pass (default 10)
#   BENCH_RUNS_NOOP     hyperfine runs of the no-op pass (default 50)
#   BENCH_WARMUP        warm-up runs (default 3)
#   BENCH_BIN           measure this binary instead of building target/release/gitops-run
#   BENCH_RESULTS       also write the results into this directory, in bench/run.sh's
#                       layout: verify-{apply,noop}-{none,all}.json (one hyperfine
#                       result each; none: without verification, all: --verify all),
#                       their command lines appended to commands.tsv, and verify.txt
#                       (KEY=VALUE: commits, runs_apply, runs_noop, warmup)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_WORK:-$ROOT/target/bench-verify}
COMMITS=${BENCH_COMMITS:-1000}
RUNS_APPLY=${BENCH_RUNS_APPLY:-10}
RUNS_NOOP=${BENCH_RUNS_NOOP:-50}
WARMUP=${BENCH_WARMUP:-3}
RESULTS_OUT=${BENCH_RESULTS:-}

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench/verify.sh: %s\n' "$*" >&2; exit 1; }

case "$WORK$ROOT" in
    *[[:space:]\"\'\$\\]*) die "paths must not contain spaces, quotes, \$ or backslashes: $WORK, $ROOT" ;;
esac
for tool in hyperfine git ssh-keygen python3; do
    command -v $tool >/dev/null || die "$tool is needed (apt-get install hyperfine git openssh-client python3)"
done

BIN=${BENCH_BIN:-}
if [ -z "$BIN" ]; then
    say "cargo build --release (reuses target/)"
    (cd "$ROOT" && cargo build --release --locked >&2)
    BIN=$ROOT/target/release/gitops-run
fi
case "$BIN" in
    *[[:space:]\"\'\$\\]*) die "BENCH_BIN must not contain spaces, quotes, \$ or backslashes: $BIN" ;;
esac
[ -x "$BIN" ] || die "no binary at $BIN"
REVISION=$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)

# Isolated from the user's and the system's configuration, and from any
# GITOPS_* setting; no metrics file written on this machine.
rm -rf "$WORK"
mkdir -p "$WORK"/{home,results}
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 HOME=$WORK/home LC_ALL=C TZ=UTC
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(GITOPS_|GIT_(DIR|WORK_TREE|INDEX_FILE|OBJECT_DIRECTORY|ALTERNATE|NAMESPACE|PROTOCOL|TRACE|AUTHOR|COMMITTER)|SSH_AUTH_SOCK$)' || true)
export GITOPS_METRICS_FILE=off
export GIT_AUTHOR_NAME=Bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=Bench GIT_COMMITTER_EMAIL=bench@example.invalid

say "an ed25519 key and its allowed-signers file"
KEY=$WORK/signer
ssh-keygen -q -t ed25519 -N '' -C bench@example.invalid -f "$KEY"
SIGNERS=$WORK/allowed_signers
printf 'bench@example.invalid %s\n' "$(cut -d' ' -f1,2 "$KEY.pub")" > "$SIGNERS"

say "origin: a signed first commit, deployed; then $COMMITS signed commits on top"
ORIGIN=$WORK/origin.git
git init -q --bare -b main "$ORIGIN"
git -C "$ORIGIN" config gpg.format ssh
git -C "$ORIGIN" config user.signingkey "$KEY"
export GIT_DIR=$ORIGIN
signed_commit() { # N [PARENT]: a signed commit of the tree $TREE, dated by N
    local when="$(( 1800000000 + $1 * 60 )) +0000"
    GIT_AUTHOR_DATE=$when GIT_COMMITTER_DATE=$when \
        git commit-tree -S "$TREE" ${2:+-p "$2"} -m "commit $1"
}
blob=$(printf '#!/bin/sh\nexit 0\n' | git hash-object -w --stdin)
TREE=$(printf '100755 blob %s\trun.sh\n' "$blob" | git mktree)
BASE=$(signed_commit 0)
git update-ref refs/heads/main "$BASE"
unset GIT_DIR

URL=file://$ORIGIN
KEYS=(--allowed-signers "$SIGNERS" --verify all)
pass() { # STATE_DIR [ARGS...]
    local state=$1
    shift
    "$BIN" --repo "$URL" --state-dir "$state" "$@"
}
DEPLOYED_BASE=$WORK/deployed-base
pass "$DEPLOYED_BASE" "${KEYS[@]}" 2>/dev/null || die "the first deployment failed"

export GIT_DIR=$ORIGIN
parent=$BASE
start=$(date +%s)
for n in $(seq 1 "$COMMITS"); do
    parent=$(signed_commit "$n" "$parent")
done
git update-ref refs/heads/main "$parent"
TIP=$parent
unset GIT_DIR
say "signed $COMMITS commits in $(( $(date +%s) - start )) s; tip $TIP"

# Sanity: each pass does what it is measured for.
check=$WORK/check
cp -a "$DEPLOYED_BASE" "$check"
out=$(pass "$check" "${KEYS[@]}" -v 2>&1) || die "the verifying pass failed: $out"
grep -q "verifying the signatures of $COMMITS commit(s)" <<<"$out" \
    || die "the pass did not verify $COMMITS commits: $out"
[ "$(readlink "$check/current")" = "trees/$TIP" ] || die "the tip was not deployed"
DEPLOYED_TIP=$check

# -------------------------------------------------------------- measure
RES=$WORK/results
STATE=$WORK/state
say "applying the tip, $COMMITS commits ahead: --verify all vs no verification"
# Each run starts from the state directory that has the first commit deployed.
printf '#!/bin/sh\nrm -rf %s && cp -a %s %s\n' "$STATE" "$DEPLOYED_BASE" "$STATE" > "$WORK/reset-state"
chmod +x "$WORK/reset-state"
hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS_APPLY" \
    --prepare "$WORK/reset-state" \
    --export-json "$RES/apply.json" \
    -n "without verification" "$BIN --repo $URL --state-dir $STATE" \
    -n "with --verify all" "$BIN --repo $URL --state-dir $STATE ${KEYS[*]}" >&2

say "no-op pass (nothing new): keys configured vs none"
hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS_NOOP" \
    --export-json "$RES/noop.json" \
    -n "without verification" "$BIN --repo $URL --state-dir $DEPLOYED_TIP" \
    -n "with --verify all" "$BIN --repo $URL --state-dir $DEPLOYED_TIP ${KEYS[*]}" >&2

# --------------------------------------------------------------- report
if [ -n "$RESULTS_OUT" ]; then
    # Each hyperfine run above holds two results, the one without verification first.
    python3 - "$RES" "$RESULTS_OUT" <<'EOF'
import json, os, sys
res, out = sys.argv[1], sys.argv[2]
for name in ("apply", "noop"):
    with open(os.path.join(res, name + ".json"), encoding="utf-8") as f:
        without, with_all = json.load(f)["results"]
    for suffix, result in (("none", without), ("all", with_all)):
        with open(os.path.join(out, f"verify-{name}-{suffix}.json"), "w", encoding="utf-8") as f:
            json.dump({"results": [result]}, f)
EOF
    {
        printf 'verify-apply-none\t%s\n' "$BIN --repo $URL --state-dir $STATE"
        printf 'verify-apply-all\t%s\n' "$BIN --repo $URL --state-dir $STATE ${KEYS[*]}"
        printf 'verify-noop-none\t%s\n' "$BIN --repo $URL --state-dir $DEPLOYED_TIP"
        printf 'verify-noop-all\t%s\n' "$BIN --repo $URL --state-dir $DEPLOYED_TIP ${KEYS[*]}"
    } >> "$RESULTS_OUT/commands.tsv"
    printf 'commits=%s\nruns_apply=%s\nruns_noop=%s\nwarmup=%s\n' \
        "$COMMITS" "$RUNS_APPLY" "$RUNS_NOOP" "$WARMUP" > "$RESULTS_OUT/verify.txt"
fi
python3 - "$RES" "$COMMITS" "$REVISION" "$(nproc)" <<'EOF'
import json, sys
res, commits, revision, cpus = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def load(name):
    with open(f"{res}/{name}.json") as f:
        r = json.load(f)["results"]
    return r[0], r[1]  # without, with

def ms(r):
    return f"{r['mean'] * 1000:.1f} ± {r['stddev'] * 1000:.1f} ms"

apply_off, apply_on = load("apply")
noop_off, noop_on = load("noop")
per_commit_us = (apply_on["mean"] - apply_off["mean"]) / commits * 1e6
print(f"Signature verification (bench/verify.sh, release build {revision}, {cpus} CPUs; "
      f"SSH ed25519 signatures made by `git commit-tree -S`, file:// origin):\n")
print("| pass | without verification | with `--verify all` | ratio |")
print("|---|---|---|---|")
print(f"| applies a tip {commits:,} signed commits ahead | {ms(apply_off)} | {ms(apply_on)} "
      f"| {apply_on['mean'] / apply_off['mean']:.2f}x |")
print(f"| no-op (nothing new), keys read | {ms(noop_off)} | {ms(noop_on)} "
      f"| {noop_on['mean'] / noop_off['mean']:.2f}x |")
print(f"\nVerifying costs about {per_commit_us:.0f} µs per commit in a pass "
      f"((with - without) / {commits:,}); a pass that finds nothing new verifies nothing.")
EOF
