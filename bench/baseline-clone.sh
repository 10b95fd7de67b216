#!/usr/bin/env bash
# Baseline for a first deployment: `git clone` (full, or with the options
# given, e.g. --depth 1), then ./run.sh in the new checkout.
#
#   baseline-clone.sh [GIT_CLONE_OPTIONS...] URL DIR
set -euo pipefail
dir=${*: -1}
git clone -q "$@"
cd "$dir"
exec ./run.sh
