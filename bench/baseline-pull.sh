#!/usr/bin/env bash
# Baseline for applying a new commit: `git pull` in a clone, then ./run.sh.
#
#   baseline-pull.sh CLONE_DIR
set -euo pipefail
cd "$1"
git pull -q --ff-only
exec ./run.sh
