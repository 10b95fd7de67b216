#!/usr/bin/env bash
# Push-like helper for the benchmarks: add one commit on top of `main` of a
# bare repository, with plumbing only (loose objects, as a small push leaves
# them). Deterministic: the N-th call on a repository always makes the same
# commit (file `counter` = N, fixed author and dates).
#
#   add-commit.sh BARE_REPO
set -euo pipefail
repo=$1
counter_file=$repo/bench-counter
n=$(( $(cat "$counter_file" 2>/dev/null || echo 0) + 1 ))
export GIT_DIR=$repo
blob=$(printf '%d\n' "$n" | git hash-object -w --stdin)
tree=$( { git ls-tree main | grep -v $'\tcounter$' || true; printf '100644 blob %s\tcounter\n' "$blob"; } | git mktree)
when="$(( 1800000000 + n * 60 )) +0000"
commit=$(GIT_AUTHOR_NAME=Bench GIT_AUTHOR_EMAIL=bench@example.invalid GIT_AUTHOR_DATE=$when \
         GIT_COMMITTER_NAME=Bench GIT_COMMITTER_EMAIL=bench@example.invalid GIT_COMMITTER_DATE=$when \
         git commit-tree "$tree" -p main -m "Counter $n")
git update-ref refs/heads/main "$commit"
echo "$n" > "$counter_file"
