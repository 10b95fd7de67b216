#!/usr/bin/env bash
# Baseline for a no-op pass: the classic pull-based GitOps loop body, written
# the way people write it with the git CLI (one pass of a cron/timer script).
#
#   baseline-pass.sh CLONE_DIR [BRANCH]
#
# Fetch the branch, compare local HEAD with the upstream tip through their
# merge base, and apply (fast-forward + ./run.sh) only when behind.
set -euo pipefail
cd "$1"
branch=${2:-main}
git fetch -q origin "$branch"
local_head=$(git rev-parse HEAD)
remote=$(git rev-parse "refs/remotes/origin/$branch")
base=$(git merge-base "$local_head" "$remote" || true)
if [ "$local_head" = "$remote" ]; then
    exit 0                                      # up to date: nothing to do
elif [ "$base" = "$local_head" ]; then
    git merge -q --ff-only "$remote"            # behind: apply
    exec ./run.sh
elif [ "$base" = "$remote" ]; then
    echo "remote is behind the deployed commit; refusing" >&2
    exit 4
else
    echo "history diverged; refusing" >&2
    exit 4
fi
